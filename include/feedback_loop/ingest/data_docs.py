"""Links into the Great Expectations Data Docs, for alerts and the Flywheel page.

GX keeps one validation result per suite run under `<gx_root>/gx/uncommitted/validations/...json` and renders
it to the same relative path under `<gx_root>/gx/uncommitted/data_docs/local_site/validations/...html`. A
person reading an alert needs the rendered page, so failures rebuild the docs and link that page: under
`Settings.data_docs_url` (ACSR_DATA_DOCS_URL) when the site is served (the Flywheel plugin serves it at `/flywheel/data-docs/`),
otherwise as a file:// URL on the machine that ran the task.
"""

from __future__ import annotations

from pathlib import Path

SITE = Path("gx") / "uncommitted" / "data_docs" / "local_site"
RESULTS = Path("gx") / "uncommitted" / "validations"


def site_dir(gx_root: str) -> Path:
    return Path(gx_root) / SITE


def page_relpath(gx_root: str, result_json_path: str | None) -> str:
    """The page of one validation result, relative to the site root ('index.html' when unknown)."""
    if not result_json_path:
        return "index.html"
    try:
        rel = Path(result_json_path).resolve().relative_to((Path(gx_root) / RESULTS).resolve())
    except ValueError:
        return "index.html"
    return str(Path("validations") / rel.with_suffix(".html"))


def link(gx_root: str, result_json_path: str | None = None, base_url: str = "") -> str:
    """The page's URL under `base_url` (Settings.data_docs_url) when the site is served, else a file:// URL."""
    rel = page_relpath(gx_root, result_json_path)
    base = base_url.rstrip("/")
    if base:
        return f"{base}/{rel}"
    return (site_dir(gx_root).resolve() / rel).as_uri()


def build_and_link(gx_root: str, result_json_path: str | None, base_url: str = "") -> str:
    """Rebuild the Data Docs (so the failed run's page exists) and return the link to that page."""
    from feedback_loop.ingest.gx_duckdb import build_data_docs

    try:
        build_data_docs(gx_root)
    except Exception as exc:  # noqa: BLE001 - the alert must still go out with what we know
        return f"{link(gx_root, result_json_path, base_url)} (Data Docs rebuild failed: {exc})"
    return link(gx_root, result_json_path, base_url)
