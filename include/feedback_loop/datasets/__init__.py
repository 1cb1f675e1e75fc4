"""Fine-tuning datasets: candidates from overrides and CSAT, curation (redaction of personal data,
deduplication, token budgets), the trainers' formats (SFT, preference pairs, intent relabels) and versioned
publishing. In: a window of staged overrides, events and facts. Out: `<lake>/datasets/<name>/<version>/`."""
