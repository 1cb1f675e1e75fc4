"""Per-night partials of the validated lines: `<lake>/partials/dataset_validated_lines/dt=D/part.parquet`
holds a hash of every JSON Lines line that a dataset build first checked on night D and found valid for its
format and free of personal data.

Why: a version is checked before it is published: every record of every JSON Lines file read back, parsed,
checked against its consumer's rules, and every free-text string in it scanned for personal data. A
night's version holds the window's 28 days of examples, mostly lines earlier versions held, and checking
them again was the largest share of a steady-state dataset night once the candidates were stored (the
phone matcher alone ~25 s of ~90 at 5,000 conversations a day; issue 18). Both checks are pure functions of
the line's bytes, the format, the token budget and the code and redactor (`check_key`, in the file's
metadata), so a line stored as passed passes: the outcome and the manifest's summary are the same. A line
that fails is never stored. Parquet files are still read back whole (what a trainer's loader sees).
"""

from __future__ import annotations

import hashlib
import inspect
from functools import lru_cache

from feedback_loop.datasets.nightly_store import NightlyStore

NAME = "dataset_validated_lines"


@lru_cache(maxsize=8)
def check_key(redactor_key: str) -> str:
    """What a line's checks depend on besides its bytes, format and budget: the format rules, the scan's
    choice of free text, and the redactor."""
    from feedback_loop.datasets import formats, publish

    h = hashlib.sha256()
    for part in (inspect.getsource(formats), inspect.getsource(publish._strings),
                 inspect.getsource(publish._all_strings), repr(sorted(publish.FREE_TEXT_KEYS)), redactor_key):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:20]


def line_hash(fmt: str, max_tokens: int | None, line: bytes) -> bytes:
    h = hashlib.blake2b(f"{fmt}\0{max_tokens}\0".encode(), digest_size=16)
    h.update(line)
    return h.digest()


class ValidatedLines(NightlyStore):
    """The lines the nights of a window found valid, and the ones this night checks."""

    name, metadata_field = NAME, "check_key"
    dedupe = False  # a line stored twice is harmless (the lookup is a semi-join); a set of every line is not

    def __init__(self, con, lake, start: str, end: str, redactor_key: str):
        super().__init__(con, lake, start, end)
        self.redactor_key = redactor_key

    def key(self) -> str:
        return check_key(self.redactor_key)

    def schema(self):
        import pyarrow as pa

        return pa.schema([("line_hash", pa.binary())], metadata={"check_key": self.key()})

    def known(self, hashes: list[bytes]) -> list[bool]:
        """Per hash, in order: stored as passed by a night of the window."""
        out = [False] * len(hashes)
        for positions, values in self.lookup(hashes, ()):
            for pos, found in zip(positions, values["found"]):
                out[pos] = bool(found)
        self.reused += sum(out)
        return out

    def passed(self, hashes: list[bytes]) -> None:
        """Lines checked tonight and found valid: stored when the night ends."""
        self.computed += len(hashes)
        self.spill({"line_hash": hashes})
