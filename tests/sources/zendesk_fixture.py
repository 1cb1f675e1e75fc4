"""Two days of a Zendesk account, shaped as Zendesk's API reference documents each object:
tickets https://developer.zendesk.com/api-reference/ticketing/tickets/tickets/#json-format ,
ticket metrics https://developer.zendesk.com/api-reference/ticketing/tickets/ticket_metrics/#json-format ,
ticket events https://developer.zendesk.com/api-reference/ticketing/ticket-management/incremental_exports/#incremental-ticket-event-export ,
satisfaction ratings https://developer.zendesk.com/api-reference/ticketing/ticket-management/satisfaction_ratings/#json-format ,
articles https://developer.zendesk.com/api-reference/help_center/help-center-api/articles/#json-format ."""

from __future__ import annotations

D1, D2 = "2026-11-02", "2026-11-03"
BASE = "https://acme.zendesk.com"


def _ticket(tid, day, hh, status, *, external_id=None, channel="native_messaging", tags=(), requester=9000,
            created=None):
    upd = f"{day}T{hh:02d}:15:00Z"
    return {
        "url": f"{BASE}/api/v2/tickets/{tid}.json", "id": tid, "external_id": external_id,
        "via": {"channel": channel, "source": {"from": {}, "to": {}, "rel": None}},
        "created_at": created or f"{day}T{hh:02d}:00:00Z", "updated_at": upd, "generated_timestamp": 0,
        "type": "question", "subject": f"Card question {tid}", "raw_subject": f"Card question {tid}",
        "description": "Where is my card?", "priority": "normal", "status": status, "recipient": None,
        "requester_id": requester + tid, "submitter_id": requester + tid, "assignee_id": 501, "organization_id": None,
        "group_id": 77, "collaborator_ids": [], "follower_ids": [], "email_cc_ids": [], "forum_topic_id": None,
        "problem_id": None, "has_incidents": False, "is_public": True, "due_at": None, "tags": list(tags),
        "custom_fields": [{"id": 360000000001, "value": None}], "satisfaction_rating": {"score": "unoffered"},
        "sharing_agreement_ids": [], "custom_status_id": 1, "fields": [], "followup_ids": [], "ticket_form_id": 1,
        "brand_id": 1, "allow_channelback": False, "allow_attachments": True, "from_messaging_channel": True,
    }


def _metric(tid, day, hh, *, reopens=0, solved=True, minutes=25):
    return {
        "url": f"{BASE}/api/v2/ticket_metrics/{tid + 100000}.json", "id": tid + 100000, "ticket_id": tid,
        "created_at": f"{day}T{hh:02d}:00:05Z", "updated_at": f"{day}T{hh:02d}:15:00Z", "group_stations": 1,
        "assignee_stations": 1, "reopens": reopens, "replies": 2, "assignee_updated_at": None,
        "requester_updated_at": f"{day}T{hh:02d}:10:00Z", "status_updated_at": f"{day}T{hh:02d}:15:00Z",
        "initially_assigned_at": f"{day}T{hh:02d}:01:00Z", "assigned_at": f"{day}T{hh:02d}:01:00Z",
        "solved_at": f"{day}T{hh:02d}:15:00Z" if solved else None,
        "latest_comment_added_at": f"{day}T{hh:02d}:14:00Z",
        "reply_time_in_minutes": {"calendar": 1, "business": 1},
        "first_resolution_time_in_minutes": {"calendar": minutes, "business": minutes},
        "full_resolution_time_in_minutes": {"calendar": minutes, "business": minutes} if solved else {"calendar": None, "business": None},
        "agent_wait_time_in_minutes": {"calendar": 0, "business": 0},
        "requester_wait_time_in_minutes": {"calendar": 3, "business": 3},
        "on_hold_time_in_minutes": {"calendar": 0, "business": 0},
    }


def _status_event(eid, tid, iso, previous, value):
    ts = iso.replace("Z", "+00:00")
    from datetime import datetime

    return {"id": eid, "ticket_id": tid, "timestamp": int(datetime.fromisoformat(ts).timestamp()), "created_at": iso,
            "updater_id": 501, "via": "Web form", "system": {"client": "Mozilla/5.0", "location": "Dublin"},
            "event_type": "Audit", "merged_ticket_ids": [],
            "child_events": [{"id": eid * 10, "via": "Web form", "via_reference_id": None, "field_name": "status",
                              "value": value, "previous_value": previous, "event_type": "Change"},
                             {"id": eid * 10 + 1, "via": "Web form", "via_reference_id": None, "event_type": "Comment",
                              "comment_present": True, "comment_public": True}]}


def _rating(rid, tid, iso, score, comment=None):
    return {"url": f"{BASE}/api/v2/satisfaction_ratings/{rid}.json", "id": rid, "assignee_id": 501, "group_id": 77,
            "requester_id": 9000 + tid, "ticket_id": tid, "score": score, "created_at": iso, "updated_at": iso,
            "comment": comment, "reason": None, "reason_id": None, "reason_code": None}


def _article(aid, title, labels, draft=False):
    return {"id": aid, "url": f"{BASE}/api/v2/help_center/en-us/articles/{aid}.json",
            "html_url": f"{BASE}/hc/en-us/articles/{aid}", "author_id": 501, "comments_disabled": False,
            "draft": draft, "promoted": False, "position": 0, "vote_sum": 3, "vote_count": 4, "section_id": 42,
            "created_at": "2026-10-01T09:00:00Z", "updated_at": "2026-10-20T09:00:00Z", "name": title,
            "title": title, "source_locale": "en-us", "locale": "en-us", "outdated": False, "outdated_locales": [],
            "edited_at": "2026-10-20T09:00:00Z", "user_segment_id": None, "permission_group_id": 7,
            "content_tag_ids": [], "label_names": labels, "body": f"<p>{title}: open the app and follow the steps.</p>"}


def data() -> dict:
    tickets = [
        _ticket(101, D1, 8, "solved", external_id="CONV-1", tags=["ai_resolved"]),
        _ticket(102, D1, 9, "open", external_id="CONV-2", channel="email",
                created="2026-11-01T07:00:00Z"),  # reopened on D1
        _ticket(103, D1, 10, "hold", external_id=None, channel="voice", tags=["escalated"]),
        _ticket(104, D1, 11, "weird_status", external_id="CONV-4"),  # cannot be mapped: quarantined
        _ticket(105, D1, 12, "closed", external_id="CONV-5"),
        _ticket(201, D2, 8, "solved", external_id="CONV-21", tags=["ai_resolved"]),
        _ticket(202, D2, 9, "pending", external_id="CONV-22"),
        _ticket(203, D2, 10, "new", external_id="CONV-23", channel="web"),
    ]
    metric_sets = [_metric(101, D1, 8), _metric(102, D1, 9, reopens=1, solved=False), _metric(103, D1, 10, solved=False),
                   _metric(104, D1, 11), _metric(105, D1, 12, minutes=40), _metric(201, D2, 8),
                   _metric(202, D2, 9, solved=False), _metric(203, D2, 10, solved=False)]
    events = [
        _status_event(1, 102, "2026-11-01T07:30:00Z", "open", "solved"),  # the day before: not in D1's pull
        _status_event(2, 102, f"{D1}T09:05:00Z", "solved", "open"),        # the reopen
        _status_event(3, 101, f"{D1}T08:15:00Z", "open", "solved"),
        _status_event(4, 105, f"{D1}T12:15:00Z", "solved", "closed"),
        _status_event(5, 201, f"{D2}T08:15:00Z", "open", "solved"),
        _status_event(6, 202, f"{D2}T09:15:00Z", "open", "pending"),
    ]
    ratings = [
        _rating(7001, 101, f"{D1}T08:30:00Z", "good", "Quick and right."),
        _rating(7002, 105, f"{D1}T12:30:00Z", "bad", "Took too long."),
        _rating(7003, 103, f"{D1}T10:30:00Z", "offered"),  # asked, not answered: not a survey row
        _rating(7004, 201, f"{D2}T08:40:00Z", "good"),
    ]
    articles = [_article(360001, "Card arrival", ["card_arrival"]), _article(360002, "Change PIN", ["change_pin"]),
                _article(360003, "Top-up limits", ["top_up_limits"], draft=True)]
    return {"tickets": tickets, "metric_sets": metric_sets, "ticket_events": events,
            "satisfaction_ratings": ratings, "articles": articles}
