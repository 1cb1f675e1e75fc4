"""Local stand-ins for the vendors' APIs (small HTTP servers on 127.0.0.1), answering with payloads shaped
like the vendors' documented responses: the pulls' tests and `make demo SOURCE=zendesk+otlp` run on them."""
