"""People in the loop (issue 17): approval gates with their decision records, and the nightly review queue
whose answers come back through the contract as overrides. docs/review.md."""
