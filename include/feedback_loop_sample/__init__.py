"""Sample data and the demo: a seeded generator of the contract's landing files (Banking77 queries, the ABCD
knowledge base) with planted faults and gaps, and the runner of `make demo`. Not part of the product: the
product (`feedback_loop`) imports nothing from here."""
