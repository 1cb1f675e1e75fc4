"""datasketch MinHash signatures of many keys at once with numpy, guarded (see the package docstring).

`batch_signatures(hashes, starts, num_perm)` gives, for each key (a run of `hashes` starting at `starts[i]`:
the key's 5-gram hashes, datasketch's `sha1_hash32`), the signature that `MinHash(num_perm, seed=1)` with
`update_batch` of those 5-grams would hold: its default `affine32` scheme is the MurmurHash3 finaliser
(`datasketch.minhash._fmix`, private), then `a * h + b` modulo 2**32 per permutation, minimum over the
5-grams. Here each distinct hash of the batch is mixed and permuted once and each key takes the minimum of its
rows: the same uint32 arithmetic with datasketch's own finaliser and permutations, bit-identical, without a
MinHash object per key.

Pinned (datasketch 2.0.0): `_fmix`, `MinHash.update_batch` (the arithmetic reproduced), `MinHash.__init__` and
`_init_permutations` (the seed-1 permutations, the default scheme), `_hash_input_array` (the uint32 input). If
one differs, or `_fmix` is gone, each key is hashed by a MinHash object's own `update_batch` (warning once).
tests/patches/test_minhash.py compares both paths with `MinHash.update_batch` over the 5-grams' bytes.
"""

from __future__ import annotations

from functools import lru_cache

from feedback_loop.patches import changed_sources, warn_once

_M = "datasketch.minhash"
_EXPECTED_SOURCE_SHA256: dict[str, str] = {
    f"{_M}:_fmix": "b012cd163f9a0427b0acf89fda7a160a24f0b08f825f76c9ccf452e04dbcc3c6",
    f"{_M}:MinHash.update_batch": "77a6c40c99117b0cd210952e0770fa2d31172b8d8c818510bc736811ab453090",
    f"{_M}:MinHash.__init__": "4bda723e67f2b515dc12e3522b95f5de7d2aadbdf3c47714167739ac6e75997f",
    f"{_M}:MinHash._init_permutations": "a4ffe278e93aad5d5af3709635171db8c19ba3b1cf44d3201ce2a8ea965d4fea",
    f"{_M}:MinHash._hash_input_array": "bb3808379a2bf3e7292a73170ad9754dec607a7b389b830b7cecac5fe760d6de",
}


@lru_cache(maxsize=1)
def batched_path_usable() -> bool:
    """True when datasketch is the code the numpy path reproduces; otherwise warn once and return False."""
    changed = changed_sources(_EXPECTED_SOURCE_SHA256)
    if changed:
        import datasketch

        warn_once("minhash", (
            f"datasketch {getattr(datasketch, '__version__', '?')} changed code that feedback_loop.patches.minhash "
            "reproduces; near-duplicate signatures fall back to MinHash.update_batch per key (same values, "
            "slower). Re-read the new code, update _EXPECTED_SOURCE_SHA256 and run tests/patches/test_minhash.py."
            "\n  " + "\n  ".join(changed)))
        return False
    return True


def batch_signatures(hashes: list[int], starts: list[int], num_perm: int) -> list:
    """The uint32 MinHash signature of each key, in order (see the module docstring)."""
    if not batched_path_usable():
        return stock_signatures(hashes, starts, num_perm)
    import numpy as np
    from datasketch.minhash import _fmix

    a, b = permutations(num_perm)
    distinct, inverse = np.unique(np.array(hashes, dtype=np.uint32), return_inverse=True)
    permuted = (_fmix(distinct, 32)[:, None] * a + b)[inverse.ravel()]
    ends = starts[1:] + [len(hashes)]
    return [permuted[s:e].min(axis=0) for s, e in zip(starts, ends)]


def stock_signatures(hashes: list[int], starts: list[int], num_perm: int) -> list:
    """The same through datasketch's public API: a MinHash per key, fed the already computed hashes."""
    from datasketch import MinHash

    ends = starts[1:] + [len(hashes)]
    out = []
    for s, e in zip(starts, ends):
        m = MinHash(num_perm=num_perm, seed=1, hashfunc=_already_hashed)
        m.update_batch(hashes[s:e])
        out.append(m.hashvalues)
    return out


def _already_hashed(h: int) -> int:
    return h


@lru_cache(maxsize=4)
def permutations(num_perm: int):
    """datasketch's (a, b) permutation parameters for seed 1, default scheme (uint32 arrays)."""
    from datasketch import MinHash

    m = MinHash(num_perm=num_perm, seed=1)
    assert m.scheme == "affine32", m.scheme
    a, b = m.permutations
    return a, b
