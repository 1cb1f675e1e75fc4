"""Code that leans on other libraries' private internals, kept in one room and guarded.

Each module here copies or extends a library's private code for speed, and each is guarded the way
`feedback_loop.ingest.gx_duckdb` guards its GX shim (that one stays beside the GX runner it serves): the
SHA-256 of the source of every private function it copies, overrides or calls, and of every private regular
expression it reuses, is pinned here as read in the pinned version. If any of them differs after an upgrade,
the module falls back to the library's public, stock behaviour (same results, slower) and logs one warning
that names what changed; a differential test (tests/patches/) proves that the patched code gives exactly the
stock results, so a pin can only be updated after re-reading the new library code and running it.

- `phonenumbers_matcher`: libphonenumber's PhoneNumberMatcher with a shared candidate search and remembered
  verdicts (used by datasets.pii);
- `minhash`: datasketch MinHash signatures of many keys at once with numpy (used by datasets.curation).
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import logging
import re
from typing import Any

log = logging.getLogger(__name__)

_warned: set[str] = set()


def _resolve(target: str) -> Any:
    """'pkg.module:Class.attr' -> that attribute (looked up statically: no descriptors run)."""
    module_name, path = target.split(":")
    owner: Any = importlib.import_module(module_name)
    *parents, name = path.split(".")
    for parent in parents:
        owner = getattr(owner, parent)
    return inspect.getattr_static(owner, name)


def source_sha256(obj: Any) -> str:
    """SHA-256 of a function's source, or of a compiled regular expression's pattern and flags (of each, for
    a tuple of them)."""
    if isinstance(obj, re.Pattern):
        text = f"{obj.pattern!r}/{obj.flags}"
    elif isinstance(obj, tuple) and obj and all(isinstance(x, re.Pattern) for x in obj):
        text = "\n".join(f"{x.pattern!r}/{x.flags}" for x in obj)
    else:
        text = inspect.getsource(getattr(obj, "__func__", obj))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def changed_sources(expected: dict[str, str]) -> list[str]:
    """The targets whose source hash is not the pinned one (or that are gone), each with what was found."""
    changed = []
    for target, sha in expected.items():
        try:
            actual = source_sha256(_resolve(target))
        except (AttributeError, ImportError, OSError, TypeError, ValueError) as exc:
            actual = f"unreadable ({type(exc).__name__}: {exc})"
        if actual != sha:
            changed.append(f"{target}: expected sha256 {sha}, found {actual}")
    return changed


def warn_once(key: str, message: str) -> None:
    """Log `message` once per process for `key` (a fallback is taken on every call, reported once)."""
    if key not in _warned:
        _warned.add(key)
        log.warning(message)
