"""Settings: one typed object, read from kwargs > ACSR_<FIELD> > the JSON Variable acsr_settings > defaults,
with one Variable look-up per task (checked in a real Airflow task run), and errors that name the field."""

from __future__ import annotations

import dataclasses
import json

import feedback_loop.settings as settings_module
import pytest
from feedback_loop.settings import ParseTime, Settings, SettingsError, parse_time


@pytest.fixture(autouse=True)
def _no_task_context(monkeypatch):
    """Outside a task unless a test says otherwise; no stray ACSR_* overrides of the fields tested here."""
    for var in ("AIRFLOW_CTX_DAG_ID", "AIRFLOW_CTX_TASK_ID", "AIRFLOW_CTX_DAG_RUN_ID", "AIRFLOW_CTX_TRY_NUMBER",
                "AIRFLOW_VAR_ACSR_SETTINGS", "ACSR_EXTRA", "ACSR_GAP_WINDOW_DAYS", "ACSR_GAP_PARAMS",
                "ACSR_SIGNALS_MIN_SAMPLE", "ACSR_DATASET_MIN_NEW_EXAMPLES", "ACSR_DATASET_MIN_NEW_PAIRS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(settings_module, "_variable_cache", {})  # each test starts before any task's read


class CountingVariable:
    """Stands in for airflow.sdk.Variable.get: counts look-ups and answers from a dict."""

    def __init__(self, values: dict):
        self.values, self.calls = values, []

    def get(self, key, default=None, deserialize_json=False):
        self.calls.append(key)
        return self.values.get(key, default)


def _in_task(monkeypatch, task_id="t", try_number="1"):
    monkeypatch.setenv("AIRFLOW_CTX_DAG_ID", "d")
    monkeypatch.setenv("AIRFLOW_CTX_TASK_ID", task_id)
    monkeypatch.setenv("AIRFLOW_CTX_DAG_RUN_ID", "r")
    monkeypatch.setenv("AIRFLOW_CTX_TRY_NUMBER", try_number)


def _fake_variable(monkeypatch, values: dict) -> CountingVariable:
    import airflow.sdk

    fake = CountingVariable(values)
    monkeypatch.setattr(airflow.sdk.Variable, "get", fake.get)
    return fake


def test_fields_are_grouped_flat_and_typed():
    s = Settings.load()
    assert s.gap_window_days == 28 and s.duckdb_memory_limit == "1GB" and s.finetune_api_key == ""
    assert not hasattr(s, "extra")  # the untyped side channel is gone
    kinds = {f.type for f in dataclasses.fields(Settings)}
    assert kinds <= {"str", "int", "float", "dict"}


def test_precedence_kwargs_over_env_over_variable(monkeypatch):
    _in_task(monkeypatch)
    fake = _fake_variable(monkeypatch, {"acsr_settings": json.dumps(
        {"gap_window_days": 21, "signals_min_sample": 40, "dataset_max_tokens": 1000})})
    monkeypatch.setenv("ACSR_SIGNALS_MIN_SAMPLE", "50")
    s = Settings.load(dataset_max_tokens=2000)
    assert (s.gap_window_days, s.signals_min_sample, s.dataset_max_tokens) == (21, 50, 2000)
    assert fake.calls == ["acsr_settings"]


def test_one_variable_lookup_per_task_try(monkeypatch):
    _in_task(monkeypatch)
    fake = _fake_variable(monkeypatch, {"acsr_settings": '{"gap_window_days": 14}'})
    assert [Settings.load().gap_window_days for _ in range(5)] == [14] * 5
    assert fake.calls == ["acsr_settings"]
    _in_task(monkeypatch, try_number="2")  # a retry reads again (the Variable may have been fixed)
    Settings.load()
    _in_task(monkeypatch, task_id="other")
    Settings.load()
    assert fake.calls == ["acsr_settings"] * 3


def test_no_variable_lookup_outside_a_task_or_from_env(monkeypatch):
    fake = _fake_variable(monkeypatch, {"acsr_settings": '{"gap_window_days": 14}'})
    assert Settings.load().gap_window_days == 28
    _in_task(monkeypatch)
    assert Settings.from_env().gap_window_days == 28  # lake.duck.connect() without settings
    assert fake.calls == []


def test_coercion_errors_name_the_field_and_the_origin(monkeypatch):
    monkeypatch.setenv("ACSR_SIGNALS_MIN_SAMPLE", "thirty")
    with pytest.raises(SettingsError, match=r"ACSR_SIGNALS_MIN_SAMPLE: setting 'signals_min_sample' expects int"):
        Settings.load()
    monkeypatch.delenv("ACSR_SIGNALS_MIN_SAMPLE")
    monkeypatch.setenv("ACSR_GAP_PARAMS", "[1, 2]")
    with pytest.raises(SettingsError, match="'gap_params' expects dict"):
        Settings.load()
    monkeypatch.delenv("ACSR_GAP_PARAMS")
    _in_task(monkeypatch)
    _fake_variable(monkeypatch, {"acsr_settings": '{"dataset_max_tokens": 12.5}'})
    with pytest.raises(SettingsError, match="Airflow Variable acsr_settings: setting 'dataset_max_tokens' expects int"):
        Settings.load()


def test_variable_typos_and_non_objects_are_errors(monkeypatch):
    _in_task(monkeypatch)
    _fake_variable(monkeypatch, {"acsr_settings": '{"gap_windows_days": 14}'})
    with pytest.raises(SettingsError, match="unknown setting 'gap_windows_days'"):
        Settings.load()
    _in_task(monkeypatch, try_number="2")
    _fake_variable(monkeypatch, {"acsr_settings": '"28"'})
    with pytest.raises(SettingsError, match="must be a JSON object"):
        Settings.load()


def test_variable_json_values_keep_their_types(monkeypatch):
    _in_task(monkeypatch)
    _fake_variable(monkeypatch, {"acsr_settings": json.dumps(
        {"signals_noise_z": 3, "signals_thresholds": {"csat": {"min": 3.5}}, "pii_phone_regions": "US"})})
    s = Settings.load()
    assert s.signals_noise_z == 3.0 and isinstance(s.signals_noise_z, float)
    assert s.signals_thresholds == {"csat": {"min": 3.5}} and s.pii_phone_regions == "US"


def test_legacy_acsr_extra_maps_onto_typed_fields(monkeypatch):
    monkeypatch.setenv("ACSR_EXTRA", json.dumps({"gaps": {"algorithm": "hdbscan"}, "dataset_min_new_examples": 1}))
    s = Settings.load()
    assert s.gap_params == {"algorithm": "hdbscan"}
    assert (s.dataset_min_new_examples, s.dataset_min_new_pairs) == (1, 1)  # as extra did: both bars
    monkeypatch.setenv("ACSR_DATASET_MIN_NEW_PAIRS", "3")  # a field's own variable still wins
    assert Settings.load().dataset_min_new_pairs == 3
    monkeypatch.setenv("ACSR_EXTRA", json.dumps({"dataset_min_new_exampels": 1}))
    with pytest.raises(SettingsError, match="ACSR_EXTRA: unknown setting 'dataset_min_new_exampels'"):
        Settings.load()


def test_secret_is_not_shown(monkeypatch):
    monkeypatch.setenv("ACSR_FINETUNE_API_KEY", "sk-test-not-shown")
    s = Settings.load()
    assert s.finetune_api_key == "sk-test-not-shown"
    assert "sk-test-not-shown" not in repr(s) and "finetune_api_key" not in s.as_dict()


def test_parse_time_section_from_environment_only(monkeypatch):
    for var in ("ACSR_NIGHTLY_DEADLINE_MINUTES", "ACSR_FINETUNE_ON_DATASETS", "AIRFLOW__API__BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    assert parse_time() == ParseTime()
    monkeypatch.setenv("ACSR_NIGHTLY_DEADLINE_MINUTES", "90")
    monkeypatch.setenv("ACSR_FINETUNE_ON_DATASETS", "sft, kto,preference")
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "https://airflow.example/")
    p = parse_time()
    assert (p.nightly_deadline_minutes, p.finetune_on, p.api_base_url) == (90.0, ["sft", "preference"],
                                                                            "https://airflow.example")
    monkeypatch.setenv("ACSR_EARLIER_DAYS_POKE_SECONDS", "soon")
    with pytest.raises(SettingsError, match="ACSR_EARLIER_DAYS_POKE_SECONDS: setting 'earlier_days_poke_seconds'"):
        parse_time()


def test_duckdb_connection_takes_its_options_from_settings(tmp_path):
    from feedback_loop.lake.duck import connect

    s = Settings.load(duckdb_memory_limit="256MB", duckdb_temp_dir=str(tmp_path), lake=str(tmp_path / "lake"))
    con = connect(s)
    limit, temp = con.execute("SELECT current_setting('memory_limit'), current_setting('temp_directory')").fetchone()
    assert limit.startswith("244") and temp.startswith(str(tmp_path / "acsr-duckdb-"))  # 256 MB = 244.1 MiB


def test_a_real_task_reads_the_variable_once(airflow_db, data_dir, monkeypatch):
    """The nightly DAG's own publish_warehouse task through dag.test(): the task runner sets the task context,
    the Variable comes from Airflow's environment secrets backend (AIRFLOW_VAR_ACSR_SETTINGS) through the
    real Variable.get, counted, and its value is used (the warehouse lands where the Variable says)."""
    import airflow.sdk
    from feedback_loop_sample.demo_runner import load_dag

    target = data_dir / "from-the-variable.duckdb"
    monkeypatch.setenv("AIRFLOW_VAR_ACSR_SETTINGS", json.dumps({"warehouse": str(target)}))
    calls = []
    real_get = airflow.sdk.Variable.get.__func__

    def counting_get(cls, key, *args, **kwargs):
        calls.append(key)
        return real_get(cls, key, *args, **kwargs)

    monkeypatch.setattr(airflow.sdk.Variable, "get", classmethod(counting_get))
    dag = load_dag("acsr_nightly").partial_subset(["resolve_day", "publish_warehouse"], include_upstream=False)
    dag.deadline = None  # Airflow 3.3.2's dag.test() fails on DeadlineAlerts (see demo_runner)
    run = dag.test(run_conf={"date": "2026-11-20"})
    assert str(run.state) == "success"
    assert target.exists()
    assert calls == ["acsr_settings"]  # publish_warehouse: one look-up; resolve_day reads no settings
