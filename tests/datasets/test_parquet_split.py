"""A split's Parquet file written a block of rows at a time (datasets/publish.py `_ParquetSplit`): the
same schema and rows as the whole split turned into one table at once, and the whole split's inference
when a block would infer another schema (a field empty in the first block, a key missing from a block's
first record, a nested field appearing late)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from feedback_loop.datasets import publish


def _write(path: str, records: list[dict]) -> None:
    """As `publish._write_files` does: records added one at a time, the whole split handed to `close`."""
    split = publish._ParquetSplit(path)
    for r in records:
        split.add(r)
    split.close(lambda: iter(records))


def _messages(i: int) -> dict:
    return {"messages": [{"role": "system", "content": f"passages {i % 3}"},
                         {"role": "user", "content": f"question {i}"},
                         {"role": "assistant", "content": f"answer {i}"}]}


def _relabel(i: int, late_value_at: int) -> dict:
    return {"text": f"text {i}", "label": "card_arrival", "previous_label": "x" if i >= late_value_at else None,
            "weight": 1.0 if i % 2 else 1}


CASES = {
    "same schema in every block": ([_messages(i) for i in range(23)], 3),
    "a field empty in the first block": ([_relabel(i, 12) for i in range(23)], 1),
    "a key missing from a later block's first record": (
        [{"a": i, "b": "x"} for i in range(10)] + [{"b": "y", "a": 10}] + [{"a": i, "b": "z"} for i in range(11, 20)], 1),
    "a nested field appearing late": (
        [_messages(i) for i in range(15)] + [{"messages": [{"role": "user", "content": "q", "name": "n"}]}], 1),
}


@pytest.mark.parametrize("case", list(CASES))
def test_blocks_give_the_whole_splits_schema_and_rows(tmp_path, monkeypatch, case):
    records, row_groups = CASES[case]
    monkeypatch.setattr(publish, "PARQUET_ROWS", 10)
    path = tmp_path / "split.parquet"
    _write(str(path), records)
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "whole.parquet", compression="zstd")
    whole = pq.read_table(tmp_path / "whole.parquet")  # the split as one table, as written before blocks
    got = pq.ParquetFile(path)
    table = got.read()
    assert table.schema.equals(whole.schema, check_metadata=True), case
    assert table.equals(whole), case
    assert table.to_pylist() == whole.to_pylist()
    assert got.metadata.num_row_groups == row_groups, case


def test_a_split_within_one_block_is_byte_identical_to_one_table(tmp_path):
    records = [_messages(i) for i in range(50)]
    _write(str(tmp_path / "blocks.parquet"), records)
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "whole.parquet", compression="zstd")
    assert (tmp_path / "blocks.parquet").read_bytes() == (tmp_path / "whole.parquet").read_bytes()
