"""The PII corpus the patched-library tests run over: the seeded personal data of tests/hostile/pii_seed.py in
the sentences it writes, the hostile text of tests/hostile/corpus.py, and the cases and look-alikes of the
redactor's own tests (read from tests/**/test_pii.py as literals, wherever that module lives)."""

from __future__ import annotations

import ast
from pathlib import Path

from hostile.corpus import HOSTILE_TEXT
from hostile.pii_seed import ALL, SEEDED

TESTS = Path(__file__).resolve().parents[1]


def _test_pii_literals() -> list[str]:
    """The strings of CASES and LOOKALIKES in test_pii.py (parsed, not imported: it is a test module)."""
    found = sorted(TESTS.rglob("test_pii.py"))
    assert found, "tests/**/test_pii.py not found: the corpus would silently shrink"
    texts = []
    for node in ast.parse(found[0].read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") in ("CASES", "LOOKALIKES") for t in node.targets):
            for item in ast.literal_eval(node.value):
                texts.append(item[0] if isinstance(item, tuple) else item)
    assert len(texts) >= 20, texts
    return texts


def corpus() -> list[str]:
    texts = list(ALL)
    texts += [f"reach me at {s}" for s in ALL]
    texts += [f"{HOSTILE_TEXT} (you can reach me at {s})" for s in SEEDED["phone"]]
    texts += [HOSTILE_TEXT, " ".join(ALL), ", ".join(SEEDED["phone"]) + " or " + " / ".join(SEEDED["card"])]
    texts += _test_pii_literals()
    # Neighbours that change a verdict: letters, slashes, digits and masks right before or after a number.
    for s in SEEDED["phone"][:6]:
        texts += [f"x{s}y", f"{s}/7", f"1{s}", f"\x00\x00{s}\x00", f"Tel.:{s}.", f"{s} ext. 12", f"{s}{s}"]
    texts += ["dated 2026-11-20 at 10:30, order 123456789, amount 1 234,56 EUR, case 0044 20 7946",
              "1/2/2026 12345678 +1 (800) FLOWERS 555 0000 1-800-555-0199 +44 (0) 20 7946 0000"]
    return texts
