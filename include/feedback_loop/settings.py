"""One configuration object for the whole loop, and the few values that must be known before it can be read.

`Settings` holds every setting a stage reads, typed, in blocks per stage (flat access: `settings.lake`,
`settings.gap_window_days`). Every field has a default that makes `make demo` work with no set-up.
Precedence, highest first:

1. keyword arguments of `Settings.load(...)`;
2. environment variables `ACSR_<FIELD>` (upper case), e.g. `ACSR_GAP_WINDOW_DAYS=21`;
3. the JSON Airflow Variable `acsr_settings` (`{"gap_window_days": 21, ...}`), read once per task try and only
   inside a running task (never at DAG-parse time, never in callbacks);
4. the defaults below.

A value that does not fit its field's type raises `SettingsError` naming the field and where the value came
from; an unknown key in `acsr_settings` is an error too (a typo would otherwise be ignored).

`ParseTime` (`parse_time()`) is the other, deliberately small, section: what DAG files need while they are
parsed and what alert callbacks need in the dag-processor and the triggerer, where no Variable may be read.
It comes from the environment only. docs/operations.md lists both.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA_DIR = PROJECT_ROOT / ".data"

VARIABLE = "acsr_settings"  # the one Airflow Variable: a JSON object of field -> value


class SettingsError(ValueError):
    """A setting's value does not fit its field (the message names the field and the value's origin)."""


def _default(sub: str) -> str:
    return str(Path(os.environ.get("ACSR_DATA_DIR", DEFAULT_DATA_DIR)) / sub)


@dataclass(frozen=True)
class Settings:
    # ---- lake: the shared ground (feedback_loop.lake) --------------------------------------------------------
    # Paths. `lake` may be a local folder or an object-store URL (s3://bucket/prefix). ACSR_DATA_DIR moves all three.
    landing: str = field(default_factory=lambda: _default("landing"))
    lake: str = field(default_factory=lambda: _default("lake"))
    warehouse: str = field(default_factory=lambda: _default("warehouse.duckdb"))
    # How long publishing waits for another process's read-write connection to the warehouse file to close
    # before it fails (read-only connections never block it; docs/reliability.md).
    warehouse_lock_wait_seconds: float = 60.0
    # Every stage's DuckDB connection (lake.duck.connect): bounded memory, spilling to a per-process folder.
    duckdb_memory_limit: str = "1GB"
    duckdb_temp_dir: str = ""  # parent of each process's spill folder acsr-duckdb-<pid> ("" = the system temp)

    # ---- ingest: land and validate (feedback_loop.ingest) -----------------------------------------------------
    lateness_hours: float = 48.0  # rows up to this much before the interval are accepted as late data
    future_skew_minutes: float = 15.0  # clock skew tolerated past the interval's end
    max_bad_row_share: float = 0.2  # above this share of quarantined rows a source fails the task
    reference_lookback_days: int = 30  # how far back references (cases, conversations) are resolved (model too)
    missing_source: str = "fail"  # a source folder absent for a day: "fail" (outage) or "empty" (no data)
    data_docs_url: str = ""  # where the GX Data Docs site is served ("" = file:// links on the task's machine)

    # ---- model: conversation facts (feedback_loop.model) ------------------------------------------------------
    model_bucket_events: int = 2_000_000  # model aggregates a day's conversations in buckets of about this many events

    # ---- signals (feedback_loop.signals, docs/signals.md): windows, noise rules, the action queue's thresholds
    signals_baseline_days: int = 28
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

    # ---- gaps: knowledge-base gaps (feedback_loop.gaps, docs/gaps.md) -----------------------------------------
    gap_window_days: int = 28
    gap_params: dict = field(default_factory=dict)  # fields of gaps.detect.GapParams, e.g. {"algorithm": "hdbscan"}

    # ---- datasets: fine-tuning datasets (feedback_loop.datasets, docs/datasets.md) ----------------------------
    dataset_window_days: int = 28
    dataset_min_new_examples: int = 10  # a version with fewer examples unseen in the last one is not published
    dataset_min_new_pairs: int = 5  # the same for preference pairs (one per ~150 conversations: rarer)
    dataset_max_tokens: int = 4096  # token budget per example (cl100k_base), over it an example is dropped
    dataset_near_duplicate_threshold: float = 0.85  # MinHash Jaccard above which two examples are duplicates
    dataset_validation_share: float = 0.1  # split by a hash of the conversation id
    dataset_test_share: float = 0.1
    dataset_system_prompt: str = ""  # "" = datasets.build.DEFAULT_SYSTEM_PROMPT
    dataset_relabel_weights: dict = field(default_factory=dict)  # per relabel source, over datasets.build.RELABEL_WEIGHTS
    dataset_csat_good: int = 4  # CSAT at or above this is a good outcome
    dataset_csat_bad: int = 2  # CSAT at or below this is a bad outcome
    # Personal-data redaction (feedback_loop.datasets.pii), used by every stage that writes free text.
    pii_phone_regions: str = "US,GB,DE,FR,ES,IT,NL,IE,IN,AU,CA"  # regions whose numbering plans are tried
    pii_patterns: dict = field(default_factory=dict)  # extra {"PLACEHOLDER": "regex"}, JSON in ACSR_PII_PATTERNS

    # ---- retrain: the nightly decision, promotion policy, registry (feedback_loop.retrain, docs/retraining.md)
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
    # Without that connection (the command line): the API's base URL and key. The key is never shown.
    finetune_base_url: str = "https://api.openai.com/v1"
    finetune_api_key: str = field(default="", repr=False)
    finetune_command: str = ""  # command backend: "" = the bundled local trainer (feedback_loop.retrain.train_command)
    finetune_poll_seconds: float = 60.0
    finetune_timeout_hours: float = 24.0

    # Retraining on an object-store lake (issue 21, retrain stage): the command fine-tuning backend runs a
    # local process, so with the lake on S3 its job folders (inputs copied from the lake, status, output)
    # live here; the compose file puts it on the data volume every worker and the triggerer share.
    finetune_local_dir: str = field(default_factory=lambda: _default("finetune_jobs"))

    # The company's intent taxonomy (issue 19, retrain stage; docs/retraining.md). "" keeps the demo's
    # Banking77. Files or folders: CSV / JSON Lines / Parquet with text, intent, optional weight and source,
    # local or on the lake's object store.
    retrain_taxonomy: str = ""  # the base labelled set ("" = Banking77 train, vendored)
    retrain_gold: str = ""  # the gold set ("" = Banking77 test by default, else split off the taxonomy and frozen)
    retrain_gold_share: float = 0.2  # share of the taxonomy split off (stable text hash) when there is no gold set
    retrain_intent_mapping: str = ""  # renamed/retired intents: JSON {"old": "new" | null} or a path to one
    retrain_min_new_intent_examples: int = 5  # relabels an intent unknown to the base set needs to be learnt
    retrain_model: str = ""  # "" = TF-IDF + linear SVM; "module:function" returning an unfitted text classifier

    # People in the loop (issue 17, feedback_loop.review; docs/review.md). Approval gates, per DAG:
    # mode "auto" approves at once (development, the demo), "required" waits for a person in Airflow's
    # Required Actions; after the timeout the default outcome (approve | reject) is applied. Assignees: comma-
    # separated Airflow user ids allowed to answer ("" = anyone the auth manager lets edit the DAG's HITL).
    approval_promotion_mode: str = "auto"  # before the intent classifier's champion alias moves
    approval_promotion_timeout_minutes: float = 1440.0
    approval_promotion_on_timeout: str = "reject"
    approval_promotion_assignees: str = ""
    approval_finetune_mode: str = "auto"  # before a paid fine-tuning job is submitted (dry runs are never gated)
    approval_finetune_timeout_minutes: float = 1440.0
    approval_finetune_on_timeout: str = "reject"
    approval_finetune_assignees: str = ""
    # Training price per million tokens by base model (US dollars), for the fine-tuning gate's estimate;
    # a model not listed uses the "default" entry. Epochs default to 3 when the request leaves them to the API.
    finetune_price_usd_per_1m_tokens: dict = field(default_factory=lambda: {
        "gpt-4.1-2025-04-14": 25.0, "gpt-4.1-mini-2025-04-14": 5.0, "gpt-4.1-nano-2025-04-14": 1.5,
        "gpt-4o-2024-08-06": 25.0, "gpt-4o-mini-2024-07-18": 3.0, "default": 25.0})
    # The nightly review queue: how many conversations people are asked to review per day, and the largest
    # share of that budget one intent or one channel may take (few channels exist, so their cap is higher).
    review_budget: int = 40
    review_max_intent_share: float = 0.15
    review_max_channel_share: float = 0.5
    review_low_confidence: float = 0.6  # an agent intent confidence below this is "unsure"

    # Source pulls (issue 16, feedback_loop.sources, docs/sources.md): the systems pulled before land.
    sources: str = ""  # "zendesk+otlp": one pull task per system (connections acsr_<system>); "" = files only
    sources_mappings: dict = field(default_factory=dict)  # {system: mapping file} instead of the built-in one
    sources_otlp_path: str = ""  # folder of OTLP JSON files (the OpenTelemetry file exporter's output)
    sources_timeout_seconds: float = 30.0  # one HTTP request to a vendor
    sources_max_retries: int = 5  # per request: 429/503 (Retry-After), 5xx, timeouts, connection errors
    sources_max_wait_seconds: float = 120.0  # a Retry-After longer than this fails the pull (retried by Airflow)

    @classmethod
    def load(cls, **overrides) -> Settings:
        """Build the settings from defaults, the `acsr_settings` Variable, the environment and `overrides`."""
        return cls._build(True, overrides)

    @classmethod
    def from_env(cls, **overrides) -> Settings:
        """The same without the Airflow Variable: for code that has no Settings passed in and must not cost a
        look-up (lake.duck.connect() without settings)."""
        return cls._build(False, overrides)

    @classmethod
    def _build(cls, use_variable: bool, overrides: dict) -> Settings:
        values: dict = {}
        for name, raw in (_variable_values() if use_variable else {}).items():
            values[name] = _coerce(name, raw, f"Airflow Variable {VARIABLE}")
        values.update(_legacy_extra())
        for name in _FIELDS:
            env = os.environ.get(f"ACSR_{name.upper()}")
            if env is not None:
                values[name] = _coerce(name, env, f"ACSR_{name.upper()}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        if settings.finetune_api_key:
            _mask(settings.finetune_api_key)
        return settings

    def as_dict(self) -> dict:
        """Every field but secrets (for logs and manifests)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in SECRET_FIELDS}


SECRET_FIELDS = frozenset({"finetune_api_key"})
_FIELDS: dict[str, str] = {f.name: str(f.type) for f in dataclasses.fields(Settings)}


def _coerce(name: str, raw, origin: str):
    """`raw` (a string from the environment, or a JSON value from the Variable) as field `name`'s type."""
    if name not in _FIELDS:
        raise SettingsError(f"{origin}: unknown setting {name!r} (known: {', '.join(sorted(_FIELDS))})")
    kind = _FIELDS[name]
    try:
        if kind == "int":
            if isinstance(raw, bool) or isinstance(raw, float) and not raw.is_integer():
                raise ValueError("not an integer")
            return int(raw)
        if kind == "float":
            if isinstance(raw, bool):
                raise ValueError("not a number")
            return float(raw)
        if kind == "dict":
            value = json.loads(raw) if isinstance(raw, str) else raw
            if not isinstance(value, dict):
                raise ValueError("not a JSON object")
            return dict(value)
        if not isinstance(raw, str):
            raise TypeError("not a string")
        return raw
    except (ValueError, TypeError) as exc:
        raise SettingsError(f"{origin}: setting {name!r} expects {kind}, got {raw!r} ({exc})") from None


_variable_cache: dict[tuple, dict] = {}


def _variable_values() -> dict:
    """The `acsr_settings` Variable as a dict: one look-up per task try, none outside a running task.

    The task runner exports AIRFLOW_CTX_* for the task it runs; outside one (DAG parsing, the command line,
    callbacks) no Variable is read. Several `Settings.load()` calls of one task share the one read."""
    ctx = tuple(os.environ.get(f"AIRFLOW_CTX_{k}") for k in ("DAG_ID", "TASK_ID", "DAG_RUN_ID", "TRY_NUMBER"))
    if not ctx[0]:
        return {}
    if ctx in _variable_cache:
        return _variable_cache[ctx]
    try:
        from airflow.sdk import Variable

        raw = Variable.get(VARIABLE, default=None)
    except Exception as exc:  # noqa: BLE001 - no Variable backend reachable: fall back to env and defaults
        log.warning("Airflow Variable %s not readable (%s): settings from the environment and defaults", VARIABLE, exc)
        raw = None
    if raw is None or raw == "":
        doc = {}
    else:
        try:
            doc = json.loads(raw) if isinstance(raw, str) else raw
        except json.JSONDecodeError as exc:
            raise SettingsError(f"Airflow Variable {VARIABLE} is not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise SettingsError(f"Airflow Variable {VARIABLE} must be a JSON object of setting -> value")
    _variable_cache.clear()  # only the running task's read is kept
    _variable_cache[ctx] = doc
    return doc


def _legacy_extra() -> dict:
    """ACSR_EXTRA, the retired untyped side channel, still read so existing deployments keep working: each key
    must now be a field (coerced like any other; `gaps` maps to `gap_params`), below ACSR_<FIELD>."""
    raw = os.environ.get("ACSR_EXTRA")
    if not raw:
        return {}
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise SettingsError(f"ACSR_EXTRA is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise SettingsError("ACSR_EXTRA must be a JSON object of setting -> value")
    log.warning("ACSR_EXTRA is deprecated: set each setting as ACSR_<FIELD> or in the %s Variable", VARIABLE)
    if "dataset_min_new_examples" in doc:  # as before: extra's bar applied to preference pairs too
        doc.setdefault("dataset_min_new_pairs", doc["dataset_min_new_examples"])
    return {("gap_params" if k == "gaps" else k): _coerce("gap_params" if k == "gaps" else k, v, "ACSR_EXTRA")
            for k, v in doc.items()}


def _mask(secret: str) -> None:
    """Ask Airflow's log masker to redact a secret setting (a no-op outside Airflow)."""
    try:
        from airflow.sdk.log import mask_secret
    except ImportError:  # pragma: no cover - Airflow is installed wherever tasks run
        return
    mask_secret(secret)


# ---- parse time: read from the environment only -------------------------------------------------------------


@dataclass(frozen=True)
class ParseTime:
    """Values needed where no Variable may be read: while a DAG file is parsed (the schedule, the deadline, a
    sensor's poke interval) and in alert callbacks (dag-processor, workers, triggerer). Environment only."""

    nightly_deadline_minutes: float = 240.0  # ACSR_NIGHTLY_DEADLINE_MINUTES: the nightly run's DeadlineAlert
    earlier_days_poke_seconds: float = 30.0  # ACSR_EARLIER_DAYS_POKE_SECONDS: a backfill day's wait for earlier days
    finetune_on_datasets: str = ""  # ACSR_FINETUNE_ON_DATASETS: "sft" and/or "preference" schedule the fine-tuning DAG
    alert_webhook_url: str = ""  # ACSR_ALERT_WEBHOOK_URL: where alerts are posted ("" = logged only)
    api_base_url: str = "http://localhost:8080"  # AIRFLOW__API__BASE_URL: links in alerts

    @classmethod
    def from_env(cls) -> ParseTime:
        values = {}
        for f in dataclasses.fields(cls):
            var = PARSE_TIME_ENV[f.name]
            raw = os.environ.get(var)
            if raw is None:
                continue
            if str(f.type) == "float":
                try:
                    values[f.name] = float(raw)
                except ValueError:
                    raise SettingsError(f"{var}: setting {f.name!r} expects float, got {raw!r}") from None
            else:
                values[f.name] = raw
        out = cls(**values)
        return dataclasses.replace(out, api_base_url=out.api_base_url.rstrip("/"))

    @property
    def finetune_on(self) -> list[str]:
        """The datasets whose new versions start the fine-tuning DAG (unknown names ignored)."""
        return [n.strip() for n in self.finetune_on_datasets.split(",") if n.strip() in ("sft", "preference")]


PARSE_TIME_ENV = {f.name: f"ACSR_{f.name.upper()}" for f in dataclasses.fields(ParseTime)}
PARSE_TIME_ENV["api_base_url"] = "AIRFLOW__API__BASE_URL"


def parse_time() -> ParseTime:
    """The parse-time section, from the environment (cheap: no I/O, no Airflow import)."""
    return ParseTime.from_env()
