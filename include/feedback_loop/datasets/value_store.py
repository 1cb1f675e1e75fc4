"""Per-night partials of each example's token count and id: `<lake>/partials/dataset_example_values/dt=D/
part.parquet` holds (content hash, tokens, example id) for every example a night first counted and
identified.

Why: with the candidates stored (`candidate_store`), a steady night still read every kept example's records
back from disk twice, to count its tokens and to hash its JSON into its id: a fifth of the night (issue 18).
Both are pure functions of the dataset, the conversation, the source and the records, which
`content_hash` hashes (the records' pickle, read back from the spill without unpickling it), and of the
counting and identifying code and the tokenizer (`values_key`, in the file's metadata). So the stored values
are the ones computing would give, and the versions are byte-identical.

As in `signature_store`, the window's stored values are never loaded whole: a dataset's content hashes go
to DuckDB, which joins them with the window's files and streams the values back in order; the ones not found
are computed and spilled to a local file, stored when the night ends.
"""

from __future__ import annotations

import hashlib
import inspect
from functools import lru_cache

from feedback_loop.datasets.nightly_store import NightlyStore

NAME = "dataset_example_values"


@lru_cache(maxsize=1)
def values_key() -> str:
    """What a stored count and id depend on besides the content: the tokenizer and the code of both."""
    from feedback_loop.datasets import publish, tokens
    from feedback_loop.datasets.config import LAYOUT

    h = hashlib.sha256()
    for part in (tokens.store_key(), inspect.getsource(tokens), inspect.getsource(publish._count_tokens),
                 inspect.getsource(publish._example_id), inspect.getsource(publish._main_format), repr(LAYOUT)):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:20]


def content_hash(dataset: str, conversation_id: str, source: str, records_blob: bytes,
                 catalogue_key: bytes = b"") -> bytes:
    """What an example's token count and id are computed from: its records as pickled when built, and the
    catalogue they refer to (`candidates._Spill.catalogue_key`: the pickle holds a reference to it)."""
    h = hashlib.blake2b(digest_size=16)
    for part in (dataset, conversation_id, source):
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    h.update(catalogue_key)
    h.update(b"\0")
    h.update(records_blob)
    return h.digest()


class ExampleValues(NightlyStore):
    """The counts and ids stored by the nights of a window, and the ones this night computes."""

    name, metadata_field = NAME, "values_key"

    def key(self) -> str:
        return values_key()

    def schema(self):
        import pyarrow as pa

        return pa.schema([("content", pa.binary()), ("tokens", pa.int64()), ("example_id", pa.string())],
                         metadata={"values_key": values_key()})

    def fill(self, examples: list, count, identify) -> None:
        """Set `tokens` and `example_id` of every example: stored ones read back, the others computed with
        `count(e)` and `identify(e)` (an example whose records are not in a spill is always computed)."""
        todo, contents = [], []
        for e in examples:
            if hasattr(e.records, "blob"):  # the records' pickle, read back from the spill without unpickling
                todo.append(e)
                contents.append(content_hash(e.dataset, e.conversation_id, e.source, e.records.blob(),
                                             e.records.spill.catalogue_key))
            else:
                e.tokens, e.example_id = count(e), identify(e)
        if not todo:
            return
        new = []
        for positions, values in self.lookup(contents, ("tokens", "example_id")):
            for pos, n, eid in zip(positions, values["tokens"], values["example_id"]):
                e = todo[pos]
                if eid is None:
                    e.tokens, e.example_id = count(e), identify(e)
                    new.append(pos)
                else:
                    e.tokens, e.example_id = n, eid
                    self.reused += 1
        self.computed += len(new)
        self.spill({"content": [contents[i] for i in new], "tokens": [todo[i].tokens for i in new],
                    "example_id": [todo[i].example_id for i in new]})
