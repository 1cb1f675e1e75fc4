"""Files of the retraining stage on a local lake or an object-store lake (s3://), through one set of calls.

Why: the retraining DAGs' tasks run on different Celery workers with no shared disk, so a run folder on an
S3 lake must hold everything (training sets, model file, evaluations, job records), and a local lake must
keep its temp-file-and-rename atomicity. Each file is written whole: locally to a temp name renamed into
place (`lake.files.write_bytes_atomic`), remotely as one PUT of the whole object, which S3 publishes
atomically. Reads go through the lake's `filesystem_for`. Nothing is ever half-visible on either.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from contextlib import contextmanager

from feedback_loop.lake.files import filesystem_for, is_remote, write_bytes_atomic


def exists(path: str) -> bool:
    fs, p = filesystem_for(path)
    return fs.exists(p)


def read_bytes(path: str) -> bytes:
    fs, p = filesystem_for(path)
    with fs.open(p, "rb") as fh:
        return fh.read()


def write_bytes(path: str, data: bytes) -> str:
    write_bytes_atomic(path, data)
    return path


def read_json(path: str) -> dict | None:
    """A JSON document, or None when the file does not exist."""
    if not exists(path):
        return None
    return json.loads(read_bytes(path))


def write_json(path: str, doc: dict) -> str:
    return write_bytes(path, (json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n").encode())


def write_parquet(table, path: str) -> str:
    """A pyarrow table as one Parquet file (zstd), published whole."""
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return write_bytes(path, buf.getvalue())


def read_parquet_rows(path: str) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(io.BytesIO(read_bytes(path))).to_pylist()


def dump_model(model, path: str) -> str:
    """A fitted model as a joblib file, published whole."""
    import joblib

    buf = io.BytesIO()
    joblib.dump(model, buf)
    return write_bytes(path, buf.getvalue())


def load_model(path: str):
    import joblib

    if not is_remote(path):
        return joblib.load(path)
    return joblib.load(io.BytesIO(read_bytes(path)))


def listdir(path: str) -> list[str]:
    """The names (not paths) directly under a folder; [] when it does not exist."""
    fs, p = filesystem_for(path)
    try:
        return sorted(e.rstrip("/").rsplit("/", 1)[-1] for e in fs.ls(p, detail=False))
    except FileNotFoundError:
        return []


@contextmanager
def local_copy(path: str):
    """A local path with the file's content: the file itself when it is local, else a temporary download
    (removed afterwards). For readers that need a real file (format validators, hashes, uploads)."""
    if not is_remote(path):
        yield path
        return
    folder = tempfile.mkdtemp(prefix="acsr-retrain-")
    try:
        local = os.path.join(folder, path.rstrip("/").rsplit("/", 1)[-1])
        fs, p = filesystem_for(path)
        fs.get_file(p, local)
        yield local
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def download(path: str, local: str) -> str:
    """Copy a lake file to a local path (a temp name renamed into place)."""
    os.makedirs(os.path.dirname(local) or ".", exist_ok=True)
    tmp = f"{local}.part-{os.getpid()}"
    if is_remote(path):
        fs, p = filesystem_for(path)
        fs.get_file(p, tmp)
    else:
        shutil.copyfile(path, tmp)
    os.replace(tmp, local)
    return local
