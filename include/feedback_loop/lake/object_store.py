"""Object storage (s3://) for the lake and the landing area, configured from the standard AWS variables.

One configuration for every client: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_DEFAULT_REGION` and,
for MinIO or any other S3-compatible server, `AWS_ENDPOINT_URL` (e.g. http://minio:9000). fsspec/s3fs
reads them for the lake's own file operations, and DuckDB gets the same filesystem registered on each
connection, so `read_parquet('s3://...')` and `COPY ... TO 's3://...'` go through it.

Why fsspec and not DuckDB's httpfs extension: httpfs is downloaded at run time from DuckDB's extension
server (not reachable from these machines, and there is no PyPI build of it for DuckDB 2.0), while s3fs
is an ordinary pinned dependency. An S3 PUT of a whole object is atomic, so the lake's one-object-per-
partition writes stay atomic without the local temp-and-rename.
"""

from __future__ import annotations

import os
from functools import lru_cache


def is_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def s3_options() -> dict:
    """s3fs keyword arguments from the environment (the endpoint for S3-compatible servers)."""
    opts: dict = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    client_kwargs = {}
    if endpoint:
        client_kwargs["endpoint_url"] = endpoint
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        client_kwargs["region_name"] = region
    if client_kwargs:
        opts["client_kwargs"] = client_kwargs
    if os.environ.get("AWS_ACCESS_KEY_ID"):
        opts["key"] = os.environ["AWS_ACCESS_KEY_ID"]
        opts["secret"] = os.environ.get("AWS_SECRET_ACCESS_KEY", "")
    return opts


@lru_cache(maxsize=8)
def _s3_filesystem(options_key: tuple):
    import s3fs

    # No listings cache: other workers write partitions while this process runs.
    return s3fs.S3FileSystem(use_listings_cache=False, skip_instance_cache=True, **_thaw(options_key))


def s3_filesystem():
    opts = s3_options()
    key = tuple(sorted((k, _freeze(v)) for k, v in opts.items()))
    return _s3_filesystem(key)


def _freeze(v):
    return tuple(sorted(v.items())) if isinstance(v, dict) else v


def _thaw(key: tuple) -> dict:
    return {k: dict(v) if isinstance(v, tuple) and v and isinstance(v[0], tuple) else v for k, v in key}


def filesystem(url: str):
    """(fsspec filesystem, path inside it) for a remote URL."""
    if url.startswith(("s3://", "s3a://")):
        fs = s3_filesystem()
        return fs, fs._strip_protocol(url)
    import fsspec

    return fsspec.core.url_to_fs(url)


def configure_duckdb(con) -> None:
    """Let a DuckDB connection read and write s3:// paths (through the registered fsspec filesystem)."""
    fs = s3_filesystem()
    fs.invalidate_cache()
    con.register_filesystem(fs)


def uses_object_store(*paths: str) -> bool:
    return any(is_remote(p) for p in paths if p)
