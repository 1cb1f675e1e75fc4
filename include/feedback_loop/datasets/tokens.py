"""Token counts for the datasets' per-example budget, with a real BPE tokenizer that runs offline.

`tiktoken` with the `cl100k_base` encoding (the tokenizer of OpenAI's GPT-4 / GPT-3.5 family). tiktoken
downloads its rank files at run time, which this project cannot do, so the file is vendored in
`data/tokenizers/` and loaded here only if its SHA-256 is the one tiktoken itself pins. Newer OpenAI models
use `o200k_base`, whose counts for English support text are within a few per cent of cl100k's: the budget
is a guard against over-long examples, not a billing estimate.
"""

from __future__ import annotations

import base64
import hashlib
import json
from functools import lru_cache
from pathlib import Path

from feedback_loop.datasets import json_text

ENCODING = "cl100k_base"
RANKS_FILE = Path(__file__).resolve().parents[1] / "data" / "tokenizers" / "cl100k_base.tiktoken"
RANKS_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"  # tiktoken's own pin
# As in tiktoken_ext/openai_public.py for cl100k_base.
_PAT_STR = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|"""
            r"""\s++$|\s*[\r\n]|\s+(?!\S)|\s""")
_SPECIAL = {"<|endoftext|>": 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259,
            "<|fim_suffix|>": 100260, "<|endofprompt|>": 100276}
# OpenAI's chat accounting (openai-cookbook, "How to count tokens"): every message costs 3 tokens of
# framing, and every reply is primed with 3 more.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_REPLY = 3


@lru_cache(maxsize=1)
def encoding():
    """The cl100k_base `tiktoken.Encoding`, built from the vendored, hash-checked rank file."""
    import tiktoken

    data = RANKS_FILE.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != RANKS_SHA256:
        raise RuntimeError(f"{RANKS_FILE}: sha256 {digest} is not tiktoken's pinned {RANKS_SHA256}")
    ranks = {}
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return tiktoken.Encoding(name=ENCODING, pat_str=_PAT_STR, mergeable_ranks=ranks, special_tokens=_SPECIAL)


def count(text: str) -> int:
    """Tokens in `text` (special-token strings in the text are counted as ordinary text)."""
    return _count(text or "")


# Counts of earlier nights, by text hash (datasets/token_store.py loads them): a window's examples are
# mostly last night's, and encoding them again was the largest part of a steady-state dataset night.
_stored: dict[bytes, int] = {}
_new: dict[bytes, int] = {}


def text_key(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def remember(counts: dict[bytes, int]) -> None:
    """Use these stored counts (text hash -> tokens) instead of encoding those texts again."""
    _stored.clear()
    _stored.update(counts)
    _new.clear()
    _count.cache_clear()


def new_counts() -> dict[bytes, int]:
    """The texts encoded since `remember`: what a night adds to the store."""
    return dict(_new)


def count_unique(text: str) -> int:
    """`count` for a text that is not worth keeping in memory (a whole tool-calling example as JSON, ~7 KB,
    one per example): found by its hash among the stored and tonight's counts, never held by `count`'s memo
    of texts (which such texts filled: ~144 MiB at 2 M events a day)."""
    return _by_key(text or "")


def count_json(obj) -> int:
    """`count(json.dumps(obj, ensure_ascii=False))`, a JSON object counted member by member.

    In cl100k's pre-tokenizer (`_PAT_STR`) a "," followed by a space always ends a piece (punctuation runs
    stop at whitespace, and a "," only joins a letter run that follows it at once), and pieces are encoded
    one by one, so the text's count is the sum of its parts cut after each ", " between members. A tool
    example's catalogue (~5 KB of its ~7 KB JSON, the same in every example of a night) is one part, so it
    is encoded once, not once per example (and its JSON text made once: `json_text`).
    tests/datasets/test_tokens.py compares with the whole text's count.
    """
    if not isinstance(obj, dict) or len(obj) < 2 or not all(isinstance(k, str) for k in obj):
        return count_unique(json.dumps(obj, ensure_ascii=False))
    members = [json.dumps(k, ensure_ascii=False) + ": " + (json_text.catalogue(v) if k == json_text.CATALOGUE
                                                           else json.dumps(v, ensure_ascii=False))
               for k, v in obj.items()]
    last = len(members) - 1
    return sum(_by_key(("{" if i == 0 else " ") + m + ("}" if i == last else ","))
               for i, m in enumerate(members))


@lru_cache(maxsize=1 << 15)
def _count(text: str) -> int:
    # Remembered: a dataset build counts the same system message and prompt in many examples and files.
    return _by_key(text)


def _by_key(text: str) -> int:
    key = text_key(text)
    n = _stored.get(key)
    if n is None:
        n = _new.get(key)
        if n is None:
            n = _new[key] = len(encoding().encode(text, disallowed_special=()))
    return n


def store_key() -> str:
    """What a stored count depends on: the encoding, its rank file and tiktoken's release."""
    import tiktoken

    return f"{ENCODING}:{RANKS_SHA256[:16]}:{tiktoken.__version__}"


def count_messages(messages: list[dict]) -> int:
    """Tokens of a chat example the way OpenAI counts them: content + role + framing per message."""
    total = TOKENS_PER_REPLY
    for m in messages:
        total += TOKENS_PER_MESSAGE + count(m.get("content") or "") + count(m.get("role") or "")
    return total


def describe() -> dict:
    """What the manifest records about the tokenizer."""
    import tiktoken

    return {"library": f"tiktoken {tiktoken.__version__}", "encoding": ENCODING, "ranks_sha256": RANKS_SHA256,
            "ranks_file": f"feedback_loop/data/tokenizers/{RANKS_FILE.name} (vendored)",
            "chat_overhead": {"per_message": TOKENS_PER_MESSAGE, "per_example": TOKENS_PER_REPLY}}
