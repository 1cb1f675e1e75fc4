"""Seeded personal data: known e-mail addresses, phone numbers of several countries in their national and
international formats, card numbers and IBANs, written into every free-text field of every source of a
generated landing area, so a test can prove that none of them comes out anywhere it must not.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import re
from itertools import cycle

SEEDED = {
    "email": ["ann.lee@example.com", "j.smith+billing@mail.example.co.uk", "Lukas.Mueller@example.de",
              "fatima_h@inbox.example.org"],
    "phone": ["+1 415-555-0132", "(212) 555-0187", "+44 20 7946 0958", "020 7946 0321", "07700 900123",
              "+49 30 12345678", "030 23125678", "+33 1 42 68 53 00", "06 12 34 56 78", "+91 98765 43210",
              "+61 2 9374 4000", "0412 345 678", "+34 912 345 678", "+39 06 6982 1234", "+31 20 794 0123",
              "+353 1 234 5678"],
    "card": ["4111 1111 1111 1111", "5555-5555-5555-4444", "378282246310005", "4012888888881881",
             "3782 822463 10005"],
    "iban": ["DE89 3704 0044 0532 0130 00", "GB29NWBK60161331926819", "FR14 2004 1010 0505 0001 3M02 606",
             "NL91 ABNA 0417 1643 00", "ES9121000418450200051332", "IT60 X054 2811 1010 0000 0123 456"],
}
ALL = [s for kind in SEEDED.values() for s in kind]

# Free-text fields, and JSON fields whose values are free text (action_args), per source.
FIELDS = {
    "agent_events": ("text", "kb_query", "error_message", "action_status", "action_args"),
    "crm_cases": ("escalation_reason",),
    "surveys": ("comment",),
    "overrides": ("rationale", "evidence", "agent_decision", "human_decision"),
    "outcome_checks": ("expected_state", "observed_state"),
    "kb_articles": ("title", "body"),
}
PER_FIELD = 6  # rows per field and file that get a seeded string


def _with_pii(value, pii: str):
    if isinstance(value, dict):
        return {**value, "customer_note": f"contact {pii}"}
    if isinstance(value, str) and value.startswith("{"):  # action_args as JSON text (CSV)
        try:
            return json.dumps({**json.loads(value), "customer_note": f"contact {pii}"})
        except ValueError:
            pass
    return f"{value} (you can reach me at {pii})" if value else f"reach me at {pii}"


def _seed_rows(source: str, rows: list[dict], strings) -> dict[str, int]:
    """Put seeded strings into up to PER_FIELD rows per field, preferring rows where the field has text."""
    counts = {}
    for name in FIELDS[source]:
        carriers = [i for i, r in enumerate(rows) if r.get(name) not in (None, "")]
        if not carriers and name != "action_args":  # a field empty in this file: give a few rows one
            carriers = list(range(len(rows)))
        step = max(1, len(carriers) // PER_FIELD)
        chosen = carriers[::step][:PER_FIELD]
        for i in chosen:
            rows[i][name] = _with_pii(rows[i].get(name), next(strings))
        counts[name] = len(chosen)
    return counts


def seed_landing(landing: str, sources=tuple(FIELDS)) -> dict:
    """Rewrite every landing file in place with seeded personal data; {source: {field: rows seeded}}."""
    strings = cycle(ALL)
    seeded: dict = {}
    for source in sources:
        base = os.path.join(landing, source)
        for root, _, files in os.walk(base):
            for name in sorted(files):
                path = os.path.join(root, name)
                counts = _rewrite(path, source, strings)
                for field, n in counts.items():
                    seeded.setdefault(source, {}).setdefault(field, 0)
                    seeded[source][field] += n
    return seeded


def _rewrite(path: str, source: str, strings) -> dict[str, int]:
    lower = path.lower()
    if lower.endswith(".parquet"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        rows = table.to_pylist()
        counts = _seed_rows(source, rows, strings)
        pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), path)
        return counts
    opener = gzip.open if lower.endswith(".gz") else open
    with opener(path, "rb") as fh:
        data = fh.read().decode("utf-8")
    if re.search(r"\.csv(\.gz)?$", lower):
        reader = csv.DictReader(io.StringIO(data))
        rows = list(reader)
        counts = _seed_rows(source, rows, strings)
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=reader.fieldnames, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        text = out.getvalue()
    else:
        lines = [ln for ln in data.split("\n") if ln.strip()]
        parsed = []
        for ln in lines:
            try:
                parsed.append(json.loads(ln))
            except ValueError:
                parsed.append(None)
        good = [p for p in parsed if isinstance(p, dict)]
        counts = _seed_rows(source, good, strings)
        it = iter(good)
        text = "".join((json.dumps(next(it), ensure_ascii=False) if isinstance(p, dict) else ln) + "\n"
                       for p, ln in zip(parsed, lines))
    with opener(path, "wb") as fh:
        fh.write(text.encode("utf-8"))
    return counts


# -- finding them again ----------------------------------------------------------------------------------

_SEPARATORS = re.compile(r"[\s\-.()/]")


def _compact(s: str) -> str:
    return _SEPARATORS.sub("", s).lower()


# What a leak looks like in an output: the string as written, or (numbers) its digits/characters with any
# separators removed, which also catches a number re-formatted or split by a partial redaction.
NEEDLES = {s: {s.lower(), _compact(s)} if not s.count("@") else {s.lower()} for s in ALL}


def find_leaks(text: str) -> list[str]:
    """The seeded strings present in `text`."""
    lower, compact = text.lower(), _compact(text)
    return [s for s, needles in NEEDLES.items()
            if s.lower() in lower or any(n in compact for n in needles if n != s.lower())]
