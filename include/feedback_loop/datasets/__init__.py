"""Fine-tuning datasets: candidates from overrides and CSAT, curation (redaction of personal data,
deduplication, token budgets), the trainers' formats (SFT, preference pairs, intent relabels) and versioned
publishing. In: a window of staged overrides, events and facts. Out: `<lake>/datasets/<name>/<version>/`."""

# The datasets the stage builds, in build order. Here, not in build.py, so that feedback_loop.assets can name
# their Airflow Assets at DAG-parse time without importing the stage.
DATASETS = ("intent_relabels", "sft", "preference", "kto")
# Learning from actions (datasets/actions.py): tool-calling sets from action/policy corrections and failed checks.
ACTION_DATASETS = ("tool_sft", "tool_preference", "tool_kto")
ALL_DATASETS = DATASETS + ACTION_DATASETS
