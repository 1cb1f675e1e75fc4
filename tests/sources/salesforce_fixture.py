"""Two days of a Salesforce org's Case, CaseHistory and a custom survey object, shaped as the REST query
resource returns them (field names: the Case and CaseHistory object reference,
https://developer.salesforce.com/docs/atlas.en-us.object_reference.meta/object_reference/sforce_api_objects_case.htm ,
.../sforce_api_objects_casehistory.htm ; datetimes as 2026-11-02T08:15:00.000+0000)."""

from __future__ import annotations

D1, D2 = "2026-11-02", "2026-11-03"
SURVEY_SOQL = ("SELECT Id, Case__c, Kind__c, Score__c, Comment__c, CreatedDate FROM Case_Survey__c "
               "WHERE CreatedDate >= {start} AND CreatedDate < {end}")


def _ts(day, hh, mm=0):
    return f"{day}T{hh:02d}:{mm:02d}:00.000+0000"


def _case(cid, day, hh, status, *, origin="Web", closed=False, escalated=False, created=None):
    return {"Id": cid, "CaseNumber": f"0000{cid[-3:]}", "Status": status, "IsClosed": closed,
            "ClosedDate": _ts(day, hh, 15) if closed else None, "CreatedDate": created or _ts(day, hh),
            "LastModifiedDate": _ts(day, hh, 15), "Origin": origin, "Reason": "Instructions not clear",
            "Type": "card_arrival", "Priority": "Medium", "Subject": f"Card question {cid}",
            "IsEscalated": escalated, "OwnerId": "005xx000001Sv6A", "ContactId": f"003xx{cid[-3:]}",
            "AccountId": "001xx000003DGb2", "SystemModstamp": _ts(day, hh, 16)}


def _hist(hid, case_id, iso, old, new):
    return {"Id": hid, "CaseId": case_id, "Field": "Status", "OldValue": old, "NewValue": new, "CreatedDate": iso}


def data() -> dict:
    return {
        "Case": [
            _case("500xx00000A0001", D1, 8, "Closed", closed=True),
            _case("500xx00000A0002", D1, 9, "Working", origin="Email", created=_ts("2026-10-30", 9)),
            _case("500xx00000A0003", D1, 10, "On Hold", origin="Phone", escalated=True),
            _case("500xx00000A0004", D1, 11, "Bogus"),
            _case("500xx00000A0005", D1, 12, "Closed", closed=True),
            _case("500xx00000B0001", D2, 8, "Closed", closed=True),
            _case("500xx00000B0002", D2, 9, "New"),
        ],
        "CaseHistory": [
            # case 2: closed on 10-31, reopened on 11-01 and again on D1: two reopens over its life
            _hist("017xx01", "500xx00000A0002", "2026-10-31T10:00:00.000+0000", "Working", "Closed"),
            _hist("017xx02", "500xx00000A0002", "2026-11-01T10:00:00.000+0000", "Closed", "Working"),
            _hist("017xx03", "500xx00000A0002", _ts(D1, 8), "Working", "Closed"),
            _hist("017xx04", "500xx00000A0002", _ts(D1, 9, 10), "Closed", "Working"),
            _hist("017xx05", "500xx00000A0001", _ts(D1, 8, 15), "New", "Closed"),
            _hist("017xx06", "500xx00000B0001", _ts(D2, 8, 15), "Working", "Closed"),
        ],
        "Case_Survey__c": [
            {"Id": "a0Axx01", "Case__c": "500xx00000A0001", "Kind__c": "CSAT", "Score__c": 5.0,
             "Comment__c": "Great", "CreatedDate": _ts(D1, 8, 40)},
            {"Id": "a0Axx02", "Case__c": "500xx00000A0005", "Kind__c": "CES", "Score__c": 6.0,
             "Comment__c": None, "CreatedDate": _ts(D1, 12, 40)},
            {"Id": "a0Axx03", "Case__c": "500xx00000B0001", "Kind__c": "CSAT", "Score__c": 2.0,
             "Comment__c": "Slow", "CreatedDate": _ts(D2, 8, 40)},
        ],
    }
