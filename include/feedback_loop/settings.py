"""One configuration object for the whole loop.

Every setting has a default that makes `make demo` work with no set-up. Precedence, highest first:
explicit keyword arguments, environment variables `ACSR_<NAME>` (upper case), Airflow Variables
`acsr_<name>` (only read inside a running Airflow task, never at DAG-parse time), the defaults below.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA_DIR = PROJECT_ROOT / ".data"


def _default(sub: str) -> str:
    return str(Path(os.environ.get("ACSR_DATA_DIR", DEFAULT_DATA_DIR)) / sub)


@dataclass(frozen=True)
class Settings:
    # Paths. `lake` may be a local folder or an object-store URL (s3://bucket/prefix).
    landing: str = field(default_factory=lambda: _default("landing"))
    lake: str = field(default_factory=lambda: _default("lake"))
    warehouse: str = field(default_factory=lambda: _default("warehouse.duckdb"))
    # How long publishing waits for another process's read-write connection to the warehouse file to close
    # before it fails (read-only connections never block it; docs/reliability.md).
    warehouse_lock_wait_seconds: float = 60.0

    # Data quality.
    lateness_hours: float = 48.0  # rows up to this much before the interval are accepted as late data
    future_skew_minutes: float = 15.0  # clock skew tolerated past the interval's end
    max_bad_row_share: float = 0.2  # above this share of quarantined rows a source fails the task
    reference_lookback_days: int = 30  # how far back references (cases, conversations) are resolved
    model_bucket_events: int = 2_000_000  # model aggregates a day's conversations in buckets of about this many events
    missing_source: str = "fail"  # a source folder absent for a day: "fail" (outage) or "empty" (no data)

    # Signals, datasets, gaps and retraining read their own settings from here too.
    signals_baseline_days: int = 28
    dataset_window_days: int = 28
    gap_window_days: int = 28

    # Signals stage (docs/signals.md): windows, noise rules and the action queue's thresholds.
    signals_reengagement_days: int = 7  # same customer, same intent, new conversation within this many days
    signals_review_window_days: int = 2  # human reviews up to this long after the conversation day still count
    signals_level_window_days: int = 7  # level thresholds are judged on this many trailing days, pooled
    signals_min_sample: int = 30  # a scope needs this many units before it can raise an action
    signals_min_baseline_days: int = 7  # with fewer final baseline days there is no change-vs-baseline verdict
    signals_noise_z: float = 3.5  # |z| of a change against the baseline's noise to count as beyond noise
    signals_level_z: float = 1.645  # one-sided confidence bound that must clear a level threshold
    signals_kb_low_score: float = 0.5  # a knowledge-base result below this score is a weak result
    signals_ab_window_days: int = 7  # trailing days pooled for the A/B tests between strategies
    signals_ab_alpha: float = 0.05  # significance level of the A/B tests
    signals_ab_control: str = ""  # the control strategy ("" = the strategy with the most live traffic)
    signals_thresholds: dict = field(default_factory=dict)  # per metric {"min","max","min_change",...}: overrides
    # Cost model for cost per resolution, in US dollars.
    cost_input_usd_per_1k_tokens: float = 0.0025  # prices tokens of steps that carry no cost_usd
    cost_output_usd_per_1k_tokens: float = 0.01
    cost_human_usd_per_hour: float = 40.0  # loaded cost of an hour of a human agent's handle time
    cost_review_usd: float = 1.5  # one human review of an agent decision (a row of the override log)

    # Fine-tuning datasets (docs/datasets.md).
    dataset_min_new_examples: int = 10  # a version with fewer examples unseen in the last one is not published
    dataset_min_new_pairs: int = 5  # the same for preference pairs (one per ~150 conversations: rarer)
    dataset_max_tokens: int = 4096  # token budget per example (cl100k_base), over it an example is dropped
    dataset_near_duplicate_threshold: float = 0.85  # MinHash Jaccard above which two examples are duplicates
    dataset_validation_share: float = 0.1  # split by a hash of the conversation id
    dataset_test_share: float = 0.1

    # Personal-data redaction (feedback_loop.datasets.pii), used by every stage that writes free text.
    pii_phone_regions: str = "US,GB,DE,FR,ES,IT,NL,IE,IN,AU,CA"  # regions whose numbering plans are tried
    pii_patterns: dict = field(default_factory=dict)  # extra {"PLACEHOLDER": "regex"}, JSON in ACSR_PII_PATTERNS

    # Retraining (docs/retraining.md): the nightly decision's triggers, the promotion policy, the registry.
    retrain_min_new_relabels: int = 50  # human relabels unseen by the champion's training set that trigger a retrain
    retrain_drift_psi: float = 0.2  # population stability index of live vs training intents that triggers a retrain
    retrain_window_days: int = 7  # trailing days pooled for drift and the override-rate test
    retrain_override_z: float = 3.5  # one-sided z of an intent's override-rate rise vs its baseline
    retrain_min_sample: int = 30  # conversations an intent needs in the window (and baseline) to be tested
    retrain_base_per_intent: int = 0  # examples per intent taken from the base labelled set (0 = all)
    retrain_promotion_margin: float = 0.005  # accuracy gain on the gold set a challenger needs over the champion
    retrain_promotion_alpha: float = 0.05  # McNemar (exact, one-sided) significance level for promotion
    retrain_max_intent_regression: float = 0.1  # largest F1 drop allowed on a protected intent
    retrain_max_ece_increase: float = 0.03  # largest calibration-error increase allowed
    retrain_protected_intents: str = ("lost_or_stolen_card,compromised_card,card_payment_not_recognised,"
                                      "cash_withdrawal_not_recognised,lost_or_stolen_phone")
    mlflow_tracking_uri: str = ""  # "" = sqlite:///<lake>/mlflow/mlflow.db, artifacts in <lake>/mlflow/artifacts
    finetune_backend: str = "dry_run"  # dry_run | openai | command: what the nightly decision launches
    finetune_dataset: str = "sft"  # sft | preference
    finetune_base_model: str = "gpt-4.1-mini-2025-04-14"
    finetune_connection_id: str = "acsr_finetune_api"  # Airflow connection: host = API base URL, password = key
    finetune_command: str = ""  # command backend: "" = the bundled local trainer (feedback_loop.retrain.train_command)
    finetune_poll_seconds: float = 60.0
    finetune_timeout_hours: float = 24.0
    finetune_on_datasets: str = ""  # "sft" and/or "preference": schedule the fine-tuning DAG on their Assets

    # Source pulls (issue 16, feedback_loop.sources, docs/sources.md): the systems pulled before land.
    sources: str = ""  # "zendesk+otlp": one pull task per system (connections acsr_<system>); "" = files only
    sources_mappings: dict = field(default_factory=dict)  # {system: mapping file} instead of the built-in one
    sources_otlp_path: str = ""  # folder of OTLP JSON files (the OpenTelemetry file exporter's output)
    sources_timeout_seconds: float = 30.0  # one HTTP request to a vendor
    sources_max_retries: int = 5  # per request: 429/503 (Retry-After), 5xx, timeouts, connection errors
    sources_max_wait_seconds: float = 120.0  # a Retry-After longer than this fails the pull (retried by Airflow)

    # Anything a stage adds without a field of its own (JSON in ACSR_EXTRA).
    extra: dict = field(default_factory=dict)

    @classmethod
    def load(cls, **overrides) -> Settings:
        """Build the settings from defaults, Airflow Variables, the environment and `overrides`."""
        values: dict = {}
        for f in dataclasses.fields(cls):
            raw = _airflow_variable(f"acsr_{f.name}")
            env = os.environ.get(f"ACSR_{f.name.upper()}")
            if env is not None:
                raw = env
            if raw is not None:
                values[f.name] = _coerce(f, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _coerce(f: dataclasses.Field, raw: str):
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "str")
    if kind == "float":
        return float(raw)
    if kind == "int":
        return int(raw)
    if kind == "dict":
        return json.loads(raw) if isinstance(raw, str) else dict(raw)
    return raw


def _airflow_variable(key: str):
    """An Airflow Variable, read only inside a running task (no metadata-DB access anywhere else)."""
    if not os.environ.get("AIRFLOW_CTX_DAG_ID"):
        return None
    try:
        from airflow.sdk import Variable

        return Variable.get(key, default=None)
    except Exception:  # noqa: BLE001 - no Variable backend reachable: fall back to env and defaults
        return None
