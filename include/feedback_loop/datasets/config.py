"""What shapes a dataset version: the dataset names and file layout, the build's Config and its window.

Part of the dataset stage (`feedback_loop.datasets.build`, docs/datasets.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

from feedback_loop.datasets import ACTION_DATASETS, ALL_DATASETS, DATASETS  # noqa: F401  (the one list, light)
from feedback_loop.settings import Settings

# Asset URIs live in feedback_loop.assets (light, for DAG files); the names here are the folders.

# Which file of each dataset holds which format (relative path pattern, format name, Parquet too?).
LAYOUT = {
    "intent_relabels": [("data/{split}", "intent_relabel", True)],
    "sft": [("trl/{split}", "trl_messages", True), ("openai/{split}", "openai_chat", False)],
    "preference": [("trl/{split}", "trl_preference", True), ("openai_dpo/{split}", "openai_dpo", False)],
    "kto": [("trl/{split}", "trl_unpaired", True)],
    # JSON Lines only: a Parquet schema would merge every tool's arguments into one struct of nullable fields.
    "tool_sft": [("trl/{split}", "trl_tool_messages", False), ("openai/{split}", "openai_chat", False)],
    "tool_preference": [("trl/{split}", "trl_tool_preference", False)],
    "tool_kto": [("trl/{split}", "trl_tool_unpaired", False)],
}

DEFAULT_SYSTEM_PROMPT = (
    "You are the customer-support assistant of a retail bank. Answer from the knowledge-base passages and "
    "policy clauses below; when they do not cover the request, say so and offer a hand-over to a person."
)
# Weights the retraining job gives each provenance of an intent label (override with
# ACSR_DATASET_RELABEL_WEIGHTS='{...}').
RELABEL_WEIGHTS = {"override": 1.0, "escalation_category": 0.8, "confirmed": 0.5}
HUMAN_LABEL_SOURCES = {"override", "escalation_category"}
RELABEL_FIELDS = ("example_id", "text", "label", "source", "weight", "conversation_id", "previous_label",
                  "agent_confidence", "reviewers", "n_copies", "csat", "override_id", "reviewed_at", "fact_date")
CSAT_GOOD, CSAT_BAD = 4, 2
KB_PASSAGES, KB_PASSAGE_CHARS = 3, 600


class DatasetError(RuntimeError):
    """A built version that must not be published (invalid format, personal data found)."""


@dataclass
class Config:
    """Everything that shapes a version; recorded in its manifest and part of its id."""

    window_start: str
    window_end: str
    min_new_examples: int
    min_new_pairs: int  # preference pairs come only from response corrections: a lower bar
    max_tokens: int
    near_duplicate_threshold: float
    validation_share: float
    test_share: float
    system_prompt: str
    relabel_weights: dict
    csat_good: int = CSAT_GOOD
    csat_bad: int = CSAT_BAD
    kb_passages: int = KB_PASSAGES
    kb_passage_chars: int = KB_PASSAGE_CHARS
    phone_regions: str = ""
    extra_pii_patterns: list = field(default_factory=list)

    @classmethod
    def from_settings(cls, settings: Settings, start: str, end: str) -> Config:
        return cls(
            window_start=start, window_end=end,
            min_new_examples=settings.dataset_min_new_examples, min_new_pairs=settings.dataset_min_new_pairs,
            max_tokens=settings.dataset_max_tokens,
            near_duplicate_threshold=settings.dataset_near_duplicate_threshold,
            validation_share=settings.dataset_validation_share, test_share=settings.dataset_test_share,
            system_prompt=settings.dataset_system_prompt or DEFAULT_SYSTEM_PROMPT,
            relabel_weights={**RELABEL_WEIGHTS, **settings.dataset_relabel_weights},
            csat_good=settings.dataset_csat_good, csat_bad=settings.dataset_csat_bad,
            phone_regions=settings.pii_phone_regions,
            extra_pii_patterns=sorted(settings.pii_patterns or {}),  # names only: patterns may be sensitive
        )

    def as_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


def resolve_window(settings: Settings, dt: str | date | None = None, window_days: int | None = None,
                   start: str | None = None, end: str | None = None) -> tuple[str, str]:
    """[start, end] of a build: explicit bounds win; else the `window_days` (default from Settings) ending at dt."""
    end_d = date.fromisoformat(str(end or dt)[:10]) if (end or dt) else None
    if end_d is None:
        raise ValueError("give dt, or start and end")
    if start:
        start_d = date.fromisoformat(str(start)[:10])
    else:
        start_d = end_d - timedelta(days=(window_days or settings.dataset_window_days) - 1)
    if start_d > end_d:
        raise ValueError(f"window start {start_d} is after its end {end_d}")
    return start_d.isoformat(), end_d.isoformat()
