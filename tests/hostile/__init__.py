"""The hostile-input corpus and the fault suite (issue 9); see docs/reliability.md."""
