"""The trigger forms (Params) of the retraining DAGs, light enough for DAG-parse time.

Every field is validated by its JSON schema when a run is created (UI form, `airflow dags trigger -c`,
`POST /api/v2/dags/{dag_id}/dagRuns`), so a bad value is refused before any task runs.
"""

from __future__ import annotations

from airflow.sdk import Param

DATASET_VERSION = r"^(latest|v[0-9]{8}-[0-9a-f]{10})$"


def intent_classifier_params() -> dict:
    return {
        "dataset_version": Param("latest", type="string", pattern=r"^(latest|none|v[0-9]{8}-[0-9a-f]{10})$",
                                 title="Relabel dataset version",
                                 description="'latest', 'none' (base set only) or a version id such as v20261125-0123456789"),
        "promotion_policy": Param("evidence", type="string", enum=["evidence", "never", "always"],
                                  title="Promotion policy",
                                  description="evidence: promote only on a significant gain (default); never: "
                                              "register the challenger only; always: promote whatever the evidence "
                                              "(a manual override, recorded as such)"),
        "margin": Param(None, type=["null", "number"], minimum=0, maximum=1, title="Required accuracy gain",
                        description="On the gold set, e.g. 0.005. Empty: Settings.retrain_promotion_margin"),
        "alpha": Param(None, type=["null", "number"], exclusiveMinimum=0, maximum=0.5,
                       title="Significance level (McNemar)", description="Empty: Settings.retrain_promotion_alpha"),
        "base_per_intent": Param(None, type=["null", "integer"], minimum=0, maximum=100000,
                                 title="Base examples per intent", description="0 = all. Empty: Settings"),
        "force": Param(False, type="boolean", title="Force",
                       description="Train even if the champion was trained on exactly this data"),
        "dry_run": Param(False, type="boolean", title="Dry run",
                         description="Train and evaluate, register and promote nothing"),
        "reason": Param("manual", type="string", minLength=1, maxLength=500, title="Reason",
                        description="Why this run (recorded with the model version)"),
        "decision": Param(None, type=["null", "object"], title="Nightly decision",
                          description="Filled by the nightly decision when it triggers the run"),
    }


def finetune_params() -> dict:
    return {
        "dataset": Param("sft", type="string", enum=["sft", "preference"], title="Dataset",
                         description="sft: supervised conversations; preference: chosen/rejected pairs (DPO)"),
        "dataset_version": Param("latest", type="string", pattern=DATASET_VERSION, title="Dataset version",
                                 description="'latest' or a version id such as v20261125-0123456789"),
        "backend": Param("dry_run", type="string", enum=["dry_run", "openai", "command"], title="Backend",
                         description="dry_run: show what would be sent; openai: an OpenAI-compatible API "
                                     "(connection below); command: the configured local training command"),
        "dry_run": Param(False, type="boolean", title="Dry run",
                         description="With backend openai or command: validate and show the exact requests, submit nothing"),
        "base_model": Param("gpt-4.1-mini-2025-04-14", type="string", pattern=r"^[A-Za-z0-9._:/-]{1,128}$",
                            title="Base model"),
        "connection_id": Param("acsr_finetune_api", type="string", pattern=r"^[A-Za-z0-9_.-]{1,250}$",
                               title="Airflow connection (openai backend)",
                               description="host = API base URL (https://.../v1), password = API key"),
        "hyperparameters": Param({}, type="object", title="Hyperparameters",
                                 properties={"n_epochs": {"type": ["integer", "string"], "minimum": 1, "maximum": 50},
                                             "batch_size": {"type": ["integer", "string"], "minimum": 1},
                                             "learning_rate_multiplier": {"type": ["number", "string"],
                                                                          "exclusiveMinimum": 0},
                                             "beta": {"type": ["number", "string"], "exclusiveMinimum": 0}},
                                 additionalProperties=False),
        "suffix": Param("acsr", type="string", pattern=r"^[a-z0-9-]{1,40}$", title="Model name suffix"),
        "poll_seconds": Param(60, type="number", minimum=1, maximum=3600, title="Poll every (s)"),
        "timeout_hours": Param(24, type="number", exclusiveMinimum=0, maximum=720, title="Give up after (h)"),
        "force": Param(False, type="boolean", title="Force",
                       description="Submit again even if this exact job already succeeded"),
        "reason": Param("manual", type="string", minLength=1, maxLength=500, title="Reason"),
    }


def asset_event_version(events, asset) -> str | None:
    """The dataset version announced by the newest triggering event of `asset` (None for other runs)."""
    if not events:
        return None
    try:
        found = list(events[asset])
    except (KeyError, TypeError):
        return None
    for event in reversed(found):
        version = (getattr(event, "extra", None) or {}).get("version")
        if version:
            return version
    return None
