"""The Parquet lake: the source of truth, one file per partition, written atomically.

Layout: `<lake>/<layer>/<name>/dt=YYYY-MM-DD/part.parquet` for day-partitioned data, plus JSON
documents (run summaries, manifests) under `<lake>/runs/...`. Every write goes to a temporary name in
the same folder and is renamed into place, so a killed task never leaves a half-written partition
visible and a re-run replaces the day. On object storage (s3://) a single PUT is atomic already.

Temporary files are named `.tmp-<pid>@<host>@<random>`: readers never glob them (they read
`dt=*/part.parquet`), and the next write into the same folder removes those whose process is gone
(a task killed mid-write), so retries do not accumulate them. A write that fails (a full disk) raises
`LakeWriteError` naming the target; nothing is published and the previous version stays in place.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import time
import uuid
from datetime import date
from pathlib import Path

PART = "part.parquet"
TMP_PREFIX = ".tmp-"
_TMP_OWNER = re.compile(r"^\.tmp-(?P<pid>\d+)@(?P<host>[^@/]*)@[0-9a-f]{32}")
STALE_TMP_SECONDS = 24 * 3600  # a temp file of another host (or of an older naming) is removed after this


class LakeWriteError(OSError):
    """A partition or document could not be written (disk full, permissions); the target is named."""


def is_remote(root: str) -> bool:
    return "://" in root and not root.startswith("file://")


def join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *[p.strip("/") for p in parts]])


class Lake:
    """Paths and atomic writes under one lake root (a local folder or an object-store URL)."""

    def __init__(self, root: str):
        self.root = root.rstrip("/")

    def partition_dir(self, layer: str, name: str, dt: date | str) -> str:
        return join(self.root, layer, name, f"dt={dt}")

    def partition_file(self, layer: str, name: str, dt: date | str) -> str:
        return join(self.partition_dir(layer, name, dt), PART)

    def shard_file(self, name: str, dt: date | str, shard: int, shards: int) -> str:
        """Shard `shard` of `shards` of a day partition of `name`, before they are combined into it:
        `<lake>/shards/<name>/dt=D/shard-<k>-of-<n>.parquet`. Outside every layer and not named part.parquet,
        so no reader of the lake ever sees a shard."""
        return join(self.root, "shards", name, f"dt={dt}", f"shard-{shard}-of-{shards}.parquet")

    def exists(self, path: str) -> bool:
        fs, p = filesystem_for(path)
        return fs.exists(p)

    def remove(self, path: str) -> None:
        """Remove one file of the lake (already gone is fine); locally also its folder once it is empty."""
        if is_remote(path):
            fs, p = filesystem_for(path)
            try:
                fs.rm(p)
            except FileNotFoundError:
                pass
            return
        try:
            os.remove(path)
        except FileNotFoundError:
            pass
        try:
            os.rmdir(os.path.dirname(path))
        except OSError:  # not empty (another shard, a writer's temp file) or already removed
            pass

    def glob(self, layer: str, name: str) -> str:
        """The glob DuckDB reads for every day of one dataset (hive-style `dt` column)."""
        return join(self.root, layer, name, "dt=*", PART)

    def days(self, layer: str, name: str) -> list[str]:
        """The days that have a partition of `layer/name`, oldest first."""
        base = join(self.root, layer, name)
        fs, path = filesystem_for(base)
        try:
            entries = fs.ls(path, detail=False)
        except FileNotFoundError:
            return []
        out = []
        for e in entries:
            leaf = e.rstrip("/").rsplit("/", 1)[-1]
            if leaf.startswith("dt=") and fs.exists(f"{e.rstrip('/')}/{PART}"):
                out.append(leaf[3:])
        return sorted(out)

    def days_between(self, layer: str, name: str, first: str, last: str) -> list[str]:
        """The days of [first, last] (ISO dates) that have a partition of `layer/name`, oldest first."""
        return [d for d in self.days(layer, name) if first <= d <= last]

    def files_between(self, layer: str, name: str, first: str, last: str) -> list[str]:
        """The partition files of the days of [first, last], oldest first: the window a stage reads."""
        return [self.partition_file(layer, name, d) for d in self.days_between(layer, name, first, last)]

    def days_with_file(self, layer: str, filename: str) -> list[str]:
        """The days under `<lake>/<layer>/dt=*/` that hold `filename` (run summaries, reports)."""
        base = join(self.root, layer)
        fs, path = filesystem_for(base)
        try:
            entries = fs.ls(path, detail=False)
        except FileNotFoundError:
            return []
        return sorted(
            e.rstrip("/").rsplit("/", 1)[-1][3:]
            for e in entries
            if e.rstrip("/").rsplit("/", 1)[-1].startswith("dt=") and fs.exists(f"{e.rstrip('/')}/{filename}")
        )

    def has_partition(self, layer: str, name: str, dt: date | str) -> bool:
        fs, path = filesystem_for(self.partition_file(layer, name, dt))
        return fs.exists(path)

    def write_query(self, con, query: str, layer: str, name: str, dt: date | str, check=None,
                    params: dict | None = None, metadata: dict[str, str] | None = None) -> str:
        """Run `query` on DuckDB connection `con` and publish its result as one partition, atomically
        (`check`: see copy_atomic; `params`: the query's bound parameters; `metadata`: Parquet key-value
        metadata written into the file, read back with `parquet_kv_metadata`)."""
        target = self.partition_file(layer, name, dt)
        return copy_atomic(con, query, target, check=check, params=params, metadata=metadata)

    def publish_file(self, local: str, layer: str, name: str, dt: date | str) -> str:
        """Publish a finished local Parquet file as one partition, atomically (see `publish_file`)."""
        return publish_file(local, self.partition_file(layer, name, dt))

    def signature(self, path: str) -> str | None:
        """Size and modification time (an object store's ETag) of one file: a partial computed from it is
        valid while this is unchanged. None when the file does not exist."""
        if not is_remote(path):
            try:
                st = os.stat(path)
            except FileNotFoundError:
                return None
            return f"{st.st_size}:{st.st_mtime_ns}"
        fs, p = filesystem_for(path)
        try:
            info = fs.info(p)
        except FileNotFoundError:
            return None
        return f"{info.get('size')}:{info.get('ETag') or info.get('LastModified') or info.get('mtime')}"

    def write_json(self, doc: dict, *parts: str) -> str:
        target = join(self.root, *parts)
        write_bytes_atomic(target, (json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n").encode())
        return target

    def read_json(self, *parts: str) -> dict | None:
        target = join(self.root, *parts)
        fs, path = filesystem_for(target)
        if not fs.exists(path):
            return None
        with fs.open(path, "rb") as fh:
            return json.loads(fh.read())


def copy_atomic(con, query: str, target: str, check=None, params: dict | None = None,
                metadata: dict[str, str] | None = None) -> str:
    """COPY a query (with its bound `params`) to Parquet at `target`: temp file + rename locally, a single
    PUT remotely.

    `check(path)`, if given, is called on the written file before it is published; if it raises, nothing
    is published and the exception propagates (a remote target is then written locally first)."""
    options = "FORMAT parquet, COMPRESSION zstd"
    if metadata:
        if not all(k.isidentifier() for k in metadata):
            raise ValueError(f"Parquet metadata keys must be identifiers: {sorted(metadata)}")
        pairs = ", ".join(f"{k}: '{str(v).replace(chr(39), chr(39) * 2)}'" for k, v in metadata.items())
        options += f", KV_METADATA {{{pairs}}}"
    if is_remote(target) and check is None:
        con.execute(f"COPY ({query}) TO '{target}' ({options})", params)
        return target
    if is_remote(target):
        import tempfile

        fd, tmp = tempfile.mkstemp(suffix=".parquet", prefix=".acsr-")
        os.close(fd)
        try:
            con.execute(f"COPY ({query}) TO '{tmp}' ({options})", params)
            check(tmp)
            fs, path = filesystem_for(target)
            fs.put_file(tmp, path)
        finally:
            os.remove(tmp)
        return target
    tmp = _tmp_beside(target)
    try:
        con.execute(f"COPY ({query}) TO '{tmp}' ({options})", params)
        _fsync(tmp)
        if check is not None:
            check(tmp)
        os.replace(tmp, target)
    except Exception as exc:
        if _is_write_failure(exc, tmp):
            raise LakeWriteError(f"{target}: could not write the partition ({exc}); nothing was published, "
                                 "the previous version (if any) is unchanged") from exc
        raise
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return target


def _tmp_beside(target: str) -> str:
    """A temporary name in `target`'s folder (created; stale temporaries of dead writers removed), with
    its extension: renamed onto `target` once complete."""
    folder = os.path.dirname(target)
    os.makedirs(folder, exist_ok=True)
    remove_stale_tmp(folder)
    return os.path.join(folder, f"{tmp_name()}{os.path.splitext(target)[1]}")


def publish_file(local: str, target: str) -> str:
    """Publish a finished local file at `target`: copied beside it under a temporary name and renamed
    locally, a single PUT remotely. For files written a batch at a time (pyarrow's ParquetWriter), which a
    DuckDB COPY would buffer again by row group."""
    if is_remote(target):
        fs, path = filesystem_for(target)
        fs.put_file(local, path)
        return target
    tmp = _tmp_beside(target)
    try:
        shutil.copyfile(local, tmp)
        _fsync(tmp)
        os.replace(tmp, target)
    except OSError as exc:
        raise LakeWriteError(f"{target}: could not write the partition ({exc}); nothing was published, "
                             "the previous version (if any) is unchanged") from exc
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return target


@contextlib.contextmanager
def parquet_file(path: str):
    """A pyarrow ParquetFile of a local or object-store path, closed after use."""
    import pyarrow.parquet as pq

    if is_remote(path):
        fs, p = filesystem_for(path)
        with fs.open(p, "rb") as fh:
            yield pq.ParquetFile(fh)
    else:
        with pq.ParquetFile(path) as f:
            yield f


def parquet_metadata(con, path: str) -> dict[str, str]:
    """The key-value metadata `copy_atomic(metadata=...)` wrote into a Parquet file."""
    return dict(con.execute("SELECT decode(key), decode(value) FROM parquet_kv_metadata($f)", {"f": path}).fetchall())


def write_bytes_atomic(target: str, data: bytes) -> None:
    if is_remote(target):
        fs, path = filesystem_for(target)
        with fs.open(path, "wb") as fh:
            fh.write(data)
        return
    os.makedirs(os.path.dirname(target), exist_ok=True)
    remove_stale_tmp(os.path.dirname(target))
    tmp = f"{os.path.dirname(target)}/{tmp_name()}"
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        raise LakeWriteError(f"{target}: could not write ({exc}); the previous version (if any) is unchanged") from exc
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def tmp_name() -> str:
    """A temporary file name that says which process writes it: `.tmp-<pid>@<host>@<random>`."""
    return f"{TMP_PREFIX}{os.getpid()}@{socket.gethostname()}@{uuid.uuid4().hex}"


def remove_stale_tmp(folder: str) -> list[str]:
    """Remove the temp files in `folder` that no running writer owns; returns their paths.

    A temp file belongs to a live writer while its process runs on this host; one of a dead process (a
    task killed mid-write) is removed at once. Files of other hosts, or without an owner in their name,
    are removed only when older than STALE_TMP_SECONDS, so a concurrent writer elsewhere is never cut."""
    removed = []
    try:
        names = [n for n in os.listdir(folder) if n.startswith(TMP_PREFIX)]
    except FileNotFoundError:
        return removed
    host = socket.gethostname()
    for name in names:
        path = os.path.join(folder, name)
        m = _TMP_OWNER.match(name)
        try:
            if not os.path.isfile(path):  # a writer's temp folder is its own business
                continue
            if m and m["host"] == host:
                stale = not process_alive(int(m["pid"]))
            else:
                stale = time.time() - os.path.getmtime(path) > STALE_TMP_SECONDS
            if stale:
                os.remove(path)
                removed.append(path)
        except FileNotFoundError:  # its writer renamed or removed it meanwhile
            continue
    return removed


def process_alive(pid: int) -> bool:
    """Whether process `pid` still runs (a child of ours that ended is reaped, not reported alive)."""
    if pid == os.getpid():
        return True
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def file_sha256(path: str) -> str:
    """Content hash of a local file, read in 1 MiB chunks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _is_write_failure(exc: Exception, tmp: str) -> bool:
    """A failure to write the temp file or rename it (ENOSPC, EDQUOT, EACCES, EROFS...), not a failure to
    read the query's inputs (DuckDB raises IOException for both; only a write names the temp file)."""
    if isinstance(exc, OSError):
        return True
    try:
        import duckdb
    except ImportError:  # pragma: no cover - duckdb is a dependency
        return False
    return isinstance(exc, duckdb.IOException) and os.path.basename(tmp) in str(exc)


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def filesystem_for(url: str):
    """An fsspec filesystem and path for `url` (local paths need no fsspec import)."""
    if not is_remote(url):
        return _LocalFS(), url
    from feedback_loop.lake.object_store import filesystem

    return filesystem(url)


class _LocalFS:
    """The few filesystem calls the lake needs, on the local disk."""

    def ls(self, path, detail=False):
        return [str(p) for p in Path(path).iterdir()]

    def exists(self, path):
        return os.path.exists(path)

    def open(self, path, mode):
        return open(path, mode)
