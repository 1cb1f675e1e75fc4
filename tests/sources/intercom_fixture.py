"""Two days of an Intercom workspace, shaped as the conversation model of Intercom's REST API 2.11:
https://developers.intercom.com/docs/references/2.11/rest-api/api.intercom.io/conversations/conversation
(`source`, `contacts`, `state`, `tags`, `conversation_rating`, `statistics`, `ai_agent`, `conversation_parts`
with `part_type` and `author{type, from_ai_agent}`)."""

from __future__ import annotations

from datetime import UTC, datetime

D1, D2 = "2026-11-02", "2026-11-03"


def _t(day: str, hh: int, mm: int = 0) -> int:
    return int(datetime.fromisoformat(f"{day}T{hh:02d}:{mm:02d}:00").replace(tzinfo=UTC).timestamp())


def _part(pid, kind, author_type, t, body=None, from_ai=False):
    return {"type": "conversation_part", "id": str(pid), "part_type": kind, "body": body, "created_at": t,
            "updated_at": t, "notified_at": t, "assigned_to": None, "external_id": None, "redacted": False,
            "attachments": [],
            "author": {"type": author_type, "id": f"{author_type}-1", "name": author_type.title(), "email": "",
                       "from_ai_agent": from_ai, "is_ai_answer": from_ai}}


def _conv(cid, day, hh, state, *, rating=None, resolution=None, reopens=0, parts=(), source_type="conversation",
          contact="contact-1", tags=()):
    created = _t(day, hh)
    return {
        "type": "conversation", "id": str(cid), "title": None, "created_at": created, "updated_at": created + 900,
        "waiting_since": None, "snoozed_until": None, "open": state != "closed", "state": state, "read": True,
        "priority": "not_priority", "admin_assignee_id": None, "team_assignee_id": "5017691",
        "tags": {"type": "tag.list", "tags": [{"type": "tag", "id": str(i), "name": n} for i, n in enumerate(tags)]},
        "conversation_rating": None if rating is None else {
            "rating": rating, "remark": "thanks" if rating >= 4 else "not helpful", "created_at": created + 800,
            "contact": {"type": "contact", "id": contact}, "teammate": {"type": "admin", "id": "991"}},
        "source": {"type": source_type, "id": f"src-{cid}", "delivered_as": "customer_initiated", "subject": "",
                   "body": "<p>My card has not arrived</p>", "author": {"type": "user", "id": contact, "name": "Ann",
                                                                        "email": "ann@example.com"},
                   "attachments": [], "url": None, "redacted": False},
        "contacts": {"type": "contact.list", "contacts": [{"type": "contact", "id": contact, "external_id": f"CUST-{cid}"}]},
        "teammates": {"type": "admin.list", "teammates": []},
        "custom_attributes": {"Plan": "pro"}, "topics": {}, "linked_objects": {"type": "list", "data": [], "total_count": 0},
        "ai_agent_participated": resolution is not None,
        "ai_agent": None if resolution is None else {
            "source_type": "essentials_plan_setup", "source_title": "Fin", "last_answer_type": "ai_answer",
            "resolution_state": resolution, "rating": None, "rating_remark": None,
            "content_sources": {"type": "content_source.list", "total_count": 1, "content_sources": [
                {"content_type": "article", "url": "/help/card-arrival", "title": "Card arrival", "locale": "en"}]}},
        "statistics": {"type": "conversation_statistics", "time_to_assignment": 0, "time_to_admin_reply": 60,
                       "time_to_first_close": 600, "time_to_last_close": 840, "median_time_to_reply": 30,
                       "first_contact_reply_at": created, "first_assignment_at": created,
                       "first_admin_reply_at": created + 60, "first_close_at": created + 600,
                       "last_assignment_at": created, "last_assignment_admin_reply_at": created + 60,
                       "last_contact_reply_at": created + 300, "last_admin_reply_at": created + 400,
                       "last_close_at": created + 840 if state == "closed" else None, "last_closed_by_id": "991",
                       "count_reopens": reopens, "count_assignments": 1, "count_conversation_parts": len(parts)},
        "conversation_parts": {"type": "conversation_part.list", "conversation_parts": list(parts),
                               "total_count": len(parts)},
    }


def data() -> list[dict]:
    t = _t(D1, 9)
    return [
        _conv(1001, D1, 8, "closed", rating=5, resolution="confirmed_resolution", tags=["card"],
              parts=[_part(1, "comment", "bot", _t(D1, 8, 1), "Here is how", True),
                     _part(2, "close", "bot", _t(D1, 8, 14), None, True)]),
        _conv(1002, D1, 9, "open", resolution="routed_to_team", reopens=1,
              parts=[_part(3, "close", "admin", t + 100), _part(4, "open", "user", t + 500, "Still broken")]),
        _conv(1003, D1, 10, "snoozed", source_type="email"),
        _conv(1004, D1, 11, "archived_weird", rating=2),  # state not in the map: quarantined
        _conv(1005, D1, 12, "closed", rating=1),
        _conv(2001, D2, 8, "closed", rating=4, resolution="assumed_resolution"),
        _conv(2002, D2, 9, "open"),
        _conv(2003, D2, 10, "closed", rating=3),
    ]
