"""A spy on the tokenizer: which texts tiktoken is asked to encode (the stored and member-wise counts are about
not asking it again)."""

from __future__ import annotations

from feedback_loop.datasets import tokens


def record_encodes(monkeypatch) -> list[str]:
    """From now on, every text `tokens` encodes is appended to the returned list (and encoded for real)."""
    encoded: list[str] = []
    real = tokens.encoding()

    class Spy:
        def encode(self, text, **kw):
            encoded.append(text)
            return real.encode(text, **kw)

    monkeypatch.setattr(tokens, "encoding", lambda: Spy())
    return encoded
