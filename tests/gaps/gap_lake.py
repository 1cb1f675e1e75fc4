"""A hand-built lake for gap tests: conversation facts, KB snapshots and escalation replies written straight
to the lake, so a test decides exactly which intent has an article, where the agent routes it, with what
confidence, and whether a person labelled it. Texts are real Banking77 utterances."""

from __future__ import annotations

import csv
import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
from feedback_loop.lake.files import Lake

B77 = Path(__file__).resolve().parents[2] / "include" / "feedback_loop" / "data" / "banking77" / "train.csv"
INTENTS = ["card_arrival", "lost_or_stolen_card", "exchange_rate", "top_up_failed", "pending_top_up",
           "cancel_transfer", "age_limit", "pin_blocked", "country_support", "card_delivery_estimate",
           "beneficiary_not_allowed", "apple_pay_or_google_pay"]
CHIT_CHAT = ["hi", "hello", "hi there"]
START = date(2026, 3, 1)


def utterances() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    with open(B77, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            out.setdefault(row["category"], []).append(row["text"])
    return out


def write(con, lake: Lake, rows: list[dict], layer: str, name: str, day: date) -> None:
    import pyarrow as pa

    con.register("rows_in", pa.Table.from_pylist(rows))
    lake.write_query(con, "SELECT * FROM rows_in", layer, name, day)
    con.unregister("rows_in")


def build(settings, *, days: int = 7, gaps: tuple = (), routed: dict | None = None, confidence: float = 0.9,
          human: bool = False, revise: tuple = (), chit_chat: int = 0, per_day: int = 60, seed: int = 1,
          extra_articles: tuple = (), reads_like: dict | None = None, reply: str = "Our team explains {t} step by step: open Cards > {t}.") -> dict:
    """Write `days` days from START; returns conversation id -> true intent ('chit_chat' for chit-chat).

    - `gaps`: intents without an article: their conversations find nothing in the KB, half escalate for
      missing knowledge and get a human reply after the hand-over (`reply`, formatted with the topic).
    - `routed`: intent -> the intent the agent predicts for it (with `confidence`); others are right.
    - `human`: a person labelled every escalated conversation (case category) and corrected every
      misrouted one (intent override): the true intent.
    - `revise`: intents whose article exists and is retrieved with a high score, but 70 % still fail.
    - `chit_chat`: conversations a day that only say hello (nothing retrieved).
    - `reads_like`: intent -> the intent whose utterances its customers write (a look-alike pair).
    """
    rng = random.Random(seed)
    texts = utterances()
    routed = routed or {}
    lake = Lake(settings.lake)
    con = duckdb.connect()
    truth = {}
    for d in range(days):
        day = START + timedelta(days=d)
        facts, events = [], []
        for n in range(per_day + chit_chat):
            cid = f"c-{day:%m%d}-{n:03d}"
            if n >= per_day:
                intent, text = "chit_chat", CHIT_CHAT[n % len(CHIT_CHAT)]
            else:
                intent = INTENTS[n % len(INTENTS)] if n < 2 * len(INTENTS) else rng.choice(INTENTS)
                text = rng.choice(texts[(reads_like or {}).get(intent, intent)])
            truth[cid] = intent
            missing = intent in gaps or intent == "chit_chat"
            failing_article = intent in revise and rng.random() < 0.7
            fail = missing or failing_article or rng.random() < 0.06
            predicted = routed.get(intent, intent if intent != "chit_chat" else "apple_pay_or_google_pay")
            escalated = missing and n % 2 == 0
            started = datetime(day.year, day.month, day.day, 9, tzinfo=UTC) + timedelta(minutes=n)
            facts.append({
                "conversation_id": cid, "customer_id": f"u{rng.randrange(400)}", "case_id": f"k-{cid}",
                "fact_date": day, "started_at": started, "first_customer_text": text,
                "final_intent": predicted, "final_confidence": confidence if predicted != intent else 0.9,
                "human_intent": intent if human and predicted != intent and intent != "chit_chat" else None,
                "human_category": intent if human and escalated and intent != "chit_chat" else None,
                "kb_articles": [] if missing else [f"A-{intent}"],
                "kb_max_score": None if missing else (0.8 if intent in revise else (0.3 if fail else 0.85)),
                "n_kb_queries": 1, "n_kb_empty": 1 if missing else 0, "escalated": escalated,
                "escalation_reason": "missing_knowledge" if escalated and intent != "chit_chat" else
                ("customer_request" if escalated else None),
                "reopen_count": 1 if failing_article else 0,
                "csat": 1 if failing_article else (2 if fail and not missing else None),
                "handle_time_s": 600.0, "n_thumbs_down": 0, "override_policy_clauses": None})
            if escalated:
                events.append({"conversation_id": cid, "ts": started + timedelta(minutes=2), "event_type": "escalated",
                               "text": "Transferring you to a human agent now."})
                if intent != "chit_chat":
                    events.append({"conversation_id": cid, "ts": started + timedelta(minutes=5),
                                   "event_type": "agent_response", "text": reply.format(t=intent.replace("_", " "))})
            events.append({"conversation_id": cid, "ts": started + timedelta(seconds=1), "event_type": "agent_response",
                           "text": "I can help with that."})
        write(con, lake, facts, "marts", "conversation_facts", day)
        write(con, lake, events, "staged", "agent_events", day)
        articles = [{"article_id": f"A-{i}", "title": i.replace("_", " ").capitalize(),
                     "body": "What to do about " + i.replace("_", " ") + ": " + " / ".join(texts[i][:3])
                             + ". It usually takes a few minutes.",
                     "intents": [i], "status": "published", "updated_at": datetime(2026, 1, 1, tzinfo=UTC)}
                    for i in INTENTS if i not in gaps]
        write(con, lake, articles + [dict(a) for a in extra_articles], "staged", "kb_articles", day)
    con.close()
    return truth


def gap_rows(settings, dt: str) -> list[dict]:
    con = duckdb.connect()
    cur = con.execute("SELECT * FROM read_parquet($f) ORDER BY rank NULLS LAST, gap_id",
                      {"f": Lake(settings.lake).partition_file("marts", "kb_gaps", dt)})
    names = [d[0] for d in cur.description]
    rows = [dict(zip(names, r)) for r in cur.fetchall()]
    con.close()
    return rows


def majority(ids, truth) -> str:
    labels = [truth[c] for c in ids]
    return max(sorted(set(labels)), key=labels.count)
