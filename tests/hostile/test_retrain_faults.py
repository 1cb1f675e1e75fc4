"""A retraining job that fails halfway leaves the champion in place: the lake pointer the agent serves from
(models/intent_classifier/champion.json) and the MLflow `champion` alias. Failures: an exception while
evaluating, and SIGKILL after the challenger is registered, and SIGKILL inside the promotion itself
(between moving the alias and writing the pointer). A retry then finishes the job consistently."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from retrain_helpers import banking_relabels, mlflow_db, write_relabel_version

CHILD = '''
import os, signal, sys
from feedback_loop.lake import files as lake
from feedback_loop.settings import Settings
from feedback_loop.retrain import intent_promotion, intent_retrain as ir, registry

point = sys.argv[1]
if point == "after_register":
    real_register = intent_promotion.register
    def register(*args, **kwargs):
        out = real_register(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)
    intent_promotion.register = register
elif point == "inside_promote":  # the alias has moved, the pointer is about to be written
    real_write_json = lake.Lake.write_json
    def write_json(self, doc, *parts):
        if tuple(parts) == registry.POINTER:
            os.kill(os.getpid(), signal.SIGKILL)
        return real_write_json(self, doc, *parts)
    lake.Lake.write_json = write_json
s = Settings.load()
ir.run(s, ir.resolve_request(s, {"reason": "fault test"}))
'''


@pytest.fixture
def with_champion(data_dir, tmp_path_factory, monkeypatch):
    """A lake whose champion is the bootstrapped baseline v1, and a better relabel version waiting."""
    from feedback_loop.retrain import intent_retrain as ir
    from feedback_loop.retrain import registry
    from feedback_loop.settings import Settings

    monkeypatch.setenv("ACSR_RETRAIN_BASE_PER_INTENT", "3")
    s = Settings.load()
    mlflow_db(s, tmp_path_factory.getbasetemp() / "mlflow-template")
    ir.ensure_champion(s, ir.resolve_request(s, {"dataset_version": "none"}))
    assert registry.alias_version(s, "champion") == "1" == registry.champion(s)["version"]
    good = banking_relabels()
    held = good[::8]
    write_relabel_version(s, "2026-11-18", {"train": [r for r in good if r not in held], "test": held}, tag="good")
    pointer = Path(s.lake, *registry.POINTER)
    return s, pointer, pointer.read_bytes()


def _champion_unchanged(s, pointer: Path, before: bytes) -> None:
    from feedback_loop.retrain import registry

    assert pointer.read_bytes() == before  # the agent still serves v1
    assert registry.champion(s)["version"] == "1"
    assert registry.load_champion_model(s) is not None  # and its model file still loads


def _retry_promotes(s) -> None:
    from feedback_loop.retrain import intent_retrain as ir
    from feedback_loop.retrain import registry

    out = ir.run(s, ir.resolve_request(s, {"reason": "retry"}))
    assert out["outcome"]["promoted"] is True, out["outcome"]["reasons"]
    assert registry.alias_version(s, "champion") == registry.champion(s)["version"] == out["outcome"]["version"]


def test_an_exception_halfway_keeps_the_champion(with_champion, monkeypatch):
    from feedback_loop.retrain import intent_promotion, registry
    from feedback_loop.retrain import intent_retrain as ir

    s, pointer, before = with_champion
    real_evaluate = intent_promotion.evaluate

    def evaluate_then_fail(*args, **kwargs):
        real_evaluate(*args, **kwargs)
        raise MemoryError("the worker ran out of memory while evaluating")

    monkeypatch.setattr(intent_promotion, "evaluate", evaluate_then_fail)
    with pytest.raises(MemoryError):
        ir.run(s, ir.resolve_request(s, {"reason": "fault test"}))
    _champion_unchanged(s, pointer, before)
    assert registry.alias_version(s, "champion") == "1"
    monkeypatch.setattr(intent_promotion, "evaluate", real_evaluate)
    _retry_promotes(s)


@pytest.mark.parametrize("point", ["after_register", "inside_promote"])
def test_a_retraining_job_killed_halfway_keeps_the_champion(with_champion, point):
    from feedback_loop.retrain import registry

    s, pointer, before = with_champion
    env = {**os.environ, "ACSR_DATA_DIR": str(Path(s.lake).parent)}
    proc = subprocess.run([sys.executable, "-c", CHILD, point], env=env, capture_output=True, text=True,
                          timeout=900, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stdout[-2000:] + proc.stderr[-2000:]
    _champion_unchanged(s, pointer, before)
    if point == "after_register":
        assert registry.alias_version(s, "champion") == "1" and registry.alias_version(s, "challenger") == "2"
    else:
        # Killed between the two writes of the promotion: MLflow's alias already names the challenger while
        # the pointer the agent serves from does not. The retry (the same task again) completes it.
        assert registry.alias_version(s, "champion") == "2"
    _retry_promotes(s)
