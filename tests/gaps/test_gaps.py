"""Knowledge-base gap detection (feedback_loop.gaps.detect): planted gaps found and ranked, no false missing
articles when the KB is complete, ids kept and gaps closed when an article is added, no personal data out.

Two kinds of lakes: a hand-built one (Banking77 utterances, conversation facts and KB snapshots written
straight to the lake, so a test controls exactly which intent has an article from which day), and one built
by the real generator and nightly stages (land, validate, model) for the end-to-end checks.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
from feedback_loop.gaps.detect import detect_gaps
from feedback_loop.lake.files import Lake
from gap_lake import INTENTS, START, gap_rows, majority, utterances, write

PII = {"email": "jane.doe@example.com", "phone": "+44 20 7946 0958", "card": "4111 1111 1111 1111",
       "iban": "GB82 WEST 1234 5698 7654 32"}


def build_lake(settings, start: date, days: int, gaps: dict[str, date | None], *, per_day: int = 50,
               seed: int = 1, pii_every: int = 0) -> dict[str, str]:
    """Write conversation facts and KB snapshots for `days` days.

    `gaps` maps an intent to the day its article is published (None: never). Until then its conversations
    find nothing in the KB and half of them escalate for missing knowledge; afterwards they succeed. Other
    intents fail now and then (low CSAT) at a base rate. Returns conversation id -> true intent.
    """
    rng = random.Random(seed)
    texts = utterances()
    lake = Lake(settings.lake)
    con = duckdb.connect()
    truth = {}
    for d in range(days):
        day = start + timedelta(days=d)
        rows = []
        for n in range(per_day):
            intent = INTENTS[n % len(INTENTS)] if n < 2 * len(INTENTS) else rng.choice(INTENTS)
            text = rng.choice(texts[intent])
            if pii_every and n % pii_every == 0:
                text += f" Reach me at {PII['email']} or {PII['phone']}, card {PII['card']}, IBAN {PII['iban']}."
            cid = f"c-{day:%m%d}-{n:03d}"
            truth[cid] = intent
            added = gaps.get(intent, date.min) if intent in gaps else date.min
            missing = added is None or day < added
            fail = missing or rng.random() < 0.08
            rows.append({
                "conversation_id": cid, "customer_id": f"u{rng.randrange(300)}", "case_id": f"k-{cid}", "fact_date": day,
                "started_at": datetime(day.year, day.month, day.day, 9, tzinfo=UTC) + timedelta(minutes=n),
                "first_customer_text": text, "final_intent": intent, "final_confidence": 0.9, "human_intent": None,
                "kb_articles": [] if missing else [f"A-{intent}"], "kb_max_score": None if missing else (0.3 if fail else 0.85),
                "n_kb_queries": 1, "n_kb_empty": 1 if missing else 0, "escalated": missing and n % 2 == 0,
                "escalation_reason": "missing_knowledge" if missing and n % 2 == 0 else None, "reopen_count": 0,
                "csat": 2 if fail and not missing else None, "handle_time_s": 600.0, "n_thumbs_down": 0,
                "override_policy_clauses": None})
        write(con, lake, rows, "marts", "conversation_facts", day)
        articles = []
        for intent in INTENTS:
            added = gaps.get(intent, date.min) if intent in gaps else date.min
            if added is None or day < added:
                continue
            stamp = datetime(2026, 1, 1, tzinfo=UTC) if added == date.min else \
                datetime(added.year, added.month, added.day, 8, tzinfo=UTC)
            articles.append({"article_id": f"A-{intent}", "title": intent.replace("_", " ").capitalize(),
                                 "body": "What to do about " + intent.replace("_", " ") + ": " + " / ".join(texts[intent][:3]),
                                 "intents": [intent], "status": "published", "updated_at": stamp})
        write(con, lake, articles, "staged", "kb_articles", day)
    con.close()
    return truth




def test_hand_built_gaps_found_ranked_and_described(settings):
    truth = build_lake(settings, START, 7, {"card_delivery_estimate": None, "pending_top_up": None})
    out = detect_gaps(settings, "2026-03-07", window_days=7)
    rows = gap_rows(settings, "2026-03-07")
    missing = [r for r in rows if r["kind"] == "missing_article"]
    assert {majority(r["conversation_ids"], truth) for r in missing} == {"card_delivery_estimate", "pending_top_up"}
    assert [r["rank"] for r in missing] == [1, 2]  # above anything else
    top = missing[0]
    assert top["status"] == "open" and top["first_seen"] == date(2026, 3, 7) and top["closed_on"] is None
    assert top["n_conversations"] >= 20 and top["n_customers"] > 0 and top["n_escalated"] > 0
    assert top["label"] and top["top_terms"] and len(top["representative_messages"]) == 3
    assert top["nearest_articles"] and all(a["intent_share"] == 0 for a in top["nearest_articles"])
    assert json.loads(top["signal_counts"])["kb_empty"] == top["n_conversations"]
    page = Path(out["page"]).read_text()
    assert top["gap_id"] in page and "index.html" in page and "missing article" in page
    # The warehouse exposes the mart as a view.
    from feedback_loop.lake.warehouse import register_views

    con = duckdb.connect()
    assert "kb_gaps" in register_views(con, settings)
    assert con.execute("SELECT count(*) FROM kb_gaps WHERE kind = 'missing_article'").fetchall()[0][0] == 2
    con.close()


def test_complete_kb_gives_no_missing_article(settings):
    from feedback_loop.cli import app
    from typer.testing import CliRunner

    build_lake(settings, START, 7, {})
    result = CliRunner().invoke(app, ["gaps", "--date", "2026-03-07", "--window-days", "7"])
    assert result.exit_code == 0, result.output
    assert '"missing_article": 0' in result.output and "gaps.html" in result.output
    out = json.loads(Path(settings.lake, "runs", "dt=2026-03-07", "gaps.json").read_text())
    assert out["window_start"] == "2026-03-01" and out["gaps_by_kind"]["missing_article"] == 0
    assert not [r for r in gap_rows(settings, "2026-03-07") if r["kind"] == "missing_article"]


def test_adding_the_article_closes_the_gap_under_the_same_id(settings):
    # pending_top_up gets its article on day 8; card_delivery_estimate never does.
    build_lake(settings, START, 9, {"pending_top_up": START + timedelta(days=7), "card_delivery_estimate": None})
    detect_gaps(settings, "2026-03-07", window_days=7)
    before = {r["anchor"]: r for r in gap_rows(settings, "2026-03-07")}
    assert before["intent:pending_top_up"]["status"] == "open"
    detect_gaps(settings, "2026-03-08", window_days=7)
    after = {r["anchor"]: r for r in gap_rows(settings, "2026-03-08")}
    closed = after["intent:pending_top_up"]
    assert closed["gap_id"] == before["intent:pending_top_up"]["gap_id"]
    assert closed["status"] == "closed" and closed["closed_on"] == date(2026, 3, 8) and closed["rank"] is None
    assert "A-pending_top_up" in closed["closed_reason"]
    still = after["intent:card_delivery_estimate"]
    assert still["status"] == "open" and still["gap_id"] == before["intent:card_delivery_estimate"]["gap_id"]
    assert still["first_seen"] == date(2026, 3, 7)
    # The next night it stays closed (same id, same closing day) while it is within the retention.
    detect_gaps(settings, "2026-03-09", window_days=7)
    later = {r["anchor"]: r for r in gap_rows(settings, "2026-03-09")}
    assert later["intent:pending_top_up"]["gap_id"] == closed["gap_id"]
    assert later["intent:pending_top_up"]["closed_on"] == date(2026, 3, 8)
    # Re-running a night gives the same rows.
    first = gap_rows(settings, "2026-03-08")
    detect_gaps(settings, "2026-03-08", window_days=7)
    assert gap_rows(settings, "2026-03-08") == first


def test_personal_data_never_reaches_the_mart_or_the_page(settings):
    build_lake(settings, START, 7, {"card_delivery_estimate": None}, pii_every=3)
    out = detect_gaps(settings, "2026-03-07", window_days=7)
    page = Path(out["page"]).read_text()
    mart = json.dumps(gap_rows(settings, "2026-03-07"), default=str)
    summary = Path(settings.lake, "runs", "dt=2026-03-07", "gaps.json").read_text()
    assert "[EMAIL]" in mart  # the messages with personal data were among the examples ...
    for value in PII.values():  # ... but only redacted
        for text in (page, mart, summary):
            assert value not in text and value.replace(" ", "") not in text


def test_stale_and_revise_articles(settings):
    build_lake(settings, START, 14, {})
    lake = Lake(settings.lake)
    con = duckdb.connect()
    # An article retrieved in the previous window and no more, and an intent whose article keeps failing.
    kb = lake.partition_file("staged", "kb_articles", "2026-03-14")
    con.execute(f"""CREATE TABLE kb AS SELECT * FROM read_parquet('{kb}', hive_partitioning=false) UNION ALL
        SELECT 'A-old-fees', 'Fees in 2019', 'Our fees as of 2019.', ['fees_2019'], 'published', TIMESTAMPTZ '2019-01-01'""")
    lake.write_query(con, "SELECT * FROM kb", "staged", "kb_articles", "2026-03-14")
    for d in range(14):
        day = START + timedelta(days=d)
        f = lake.partition_file("marts", "conversation_facts", day)
        con.execute(f"""CREATE OR REPLACE TABLE f AS SELECT * REPLACE (
            CASE WHEN final_intent = 'age_limit' THEN 1 ELSE csat END AS csat,
            CASE WHEN final_intent = 'age_limit' THEN 2 ELSE reopen_count END AS reopen_count,
            CASE WHEN {d} < 7 AND final_intent = 'exchange_rate' THEN list_append(kb_articles, 'A-old-fees')
                 ELSE kb_articles END AS kb_articles)
            FROM read_parquet('{f}', hive_partitioning=false)""")
        lake.write_query(con, "SELECT * FROM f", "marts", "conversation_facts", day)
    con.close()
    detect_gaps(settings, "2026-03-14", window_days=7)
    rows = gap_rows(settings, "2026-03-14")
    kinds = {(r["kind"], r["article_id"]) for r in rows if r["status"] == "open"}
    assert ("revise_article", "A-age_limit") in kinds
    assert ("stale_article", "A-old-fees") in kinds
    stale = next(r for r in rows if r["article_id"] == "A-old-fees")
    assert "not retrieved in the window" in stale["reason"] and stale["prev_window_conversations"] > 0
    assert not [r for r in rows if r["kind"] == "missing_article"]


def test_action_queue_rows_point_at_gaps(settings):
    truth = build_lake(settings, START, 7, {"pending_top_up": None})
    lake = Lake(settings.lake)
    example = next(c for c, i in sorted(truth.items()) if i == "pending_top_up" and c.startswith("c-0307"))
    queue = [
        {"action_id": "a-intent", "signal": "csat", "scope_dimension": "intent", "scope_value": "pending_top_up",
         "example_conversation_ids": []},
        {"action_id": "a-example", "signal": "reopen_24h", "scope_dimension": "channel", "scope_value": "chat",
         "example_conversation_ids": [example]},
        {"action_id": "a-other", "signal": "aht", "scope_dimension": "intent", "scope_value": "age_limit",
         "example_conversation_ids": ["c-0307-999"]},
    ]
    con = duckdb.connect()
    write(con, lake, queue, "marts", "action_queue", date(2026, 3, 7))
    con.close()
    detect_gaps(settings, "2026-03-07", window_days=7)
    gap = next(r for r in gap_rows(settings, "2026-03-07") if r["kind"] == "missing_article")
    assert gap["action_ids"] == ["a-example", "a-intent"]
    from feedback_loop.lake.warehouse import register_views

    con = duckdb.connect()
    assert "kb_gap_actions" in register_views(con, settings)
    links = con.execute("SELECT action_id, gap_id, link FROM kb_gap_actions ORDER BY action_id").fetchall()
    assert links == [("a-example", gap["gap_id"], "conversations"), ("a-intent", gap["gap_id"], "intent")]
    con.close()


def test_messages_without_topic_words_or_labels_are_noise():
    import numpy as np
    from feedback_loop.gaps.topics import NOISE, cluster

    x = np.zeros((12, 4), dtype=np.float32)
    x[:6, 0] = 1.0
    x[6:11, 1] = 1.0  # row 11 stays all zero: no topic word, no label
    for algorithm in ("agglomerative", "hdbscan"):
        labels = cluster(x, algorithm=algorithm, distance_threshold=0.5, min_size=3)
        assert labels[11] == NOISE and len(set(labels[:6])) == 1 and len(set(labels[6:11])) == 1
        assert labels[0] != labels[6] and NOISE not in labels[:11]
