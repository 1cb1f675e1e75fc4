"""What reads as chit-chat or a template: few wordings for the topic's size, counted up to `distinct_cap`
conversations (wordings grow slower than a topic: at scale every real question repeated word for word)."""

from __future__ import annotations

from types import SimpleNamespace

from feedback_loop.gaps.params import GapParams
from feedback_loop.gaps.rows import _out_of_scope

IN_DOMAIN = SimpleNamespace(domain=1.0)  # every word of the topic is one the business uses


def _members(wordings: list[str], n: int) -> list[dict]:
    return [{"text": wordings[i % len(wordings)]} for i in range(n)]


def test_a_big_topic_of_a_hundred_wordings_is_a_question_not_chit_chat():
    p = GapParams()
    wordings = [f"when will my new card {i} arrive" for i in range(100)]
    # 5,000 conversations, 100 wordings: 2 % distinct, which the plain share (30 %) called a template.
    assert _out_of_scope(p, IN_DOMAIN, [], _members(wordings, 5000)) is None


def test_chit_chat_stays_out_of_scope_at_any_size():
    p = GapParams()
    chit_chat = ["hi", "hello there", "ok", "thanks bye", "lol", "good morning!", "how are you today",
                 "tell me a joke", "what's your name", "are you a robot?", "you are very slow", "nice weather"]
    for n in (100, 200, 5000):  # (20 conversations in 12 wordings are spread enough: the domain rule is for those)
        reason = _out_of_scope(p, IN_DOMAIN, [], _members(chit_chat, n))
        assert reason and "distinct messages" in reason, n


def test_small_topics_keep_the_plain_share():
    p = GapParams()
    # 40 conversations need 12 wordings (30 %): 11 is a template, 12 is a question.
    assert _out_of_scope(p, IN_DOMAIN, [], _members([f"where is transfer {i}" for i in range(11)], 40))
    assert _out_of_scope(p, IN_DOMAIN, [], _members([f"where is transfer {i}" for i in range(12)], 40)) is None
