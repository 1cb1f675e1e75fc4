"""The simulated world: static data (Banking77, the ABCD guidelines, confusion neighbourhoods), the
seeded world (customers, KB, strategies) and `_Gen`, one day of conversations as numpy arrays.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from types import SimpleNamespace

import numpy as np

from feedback_loop_sample.generator.common import (
    _ACTION_OF_INTENT,
    _OPENING_PII,
    ACTIONS,
    COMMENTS_BAD,
    COMMENTS_GOOD,
    DATA,
    ERRORS,
    EXTERNAL_CASE_SHARE,
    FALLBACKS,
    FOLLOW_BAD,
    FOLLOW_GOOD,
    FOLLOW_RESP_BAD,
    FOLLOW_RESP_GOOD,
    GENERIC_RESP,
    HANDOVER,
    MAX_DUR_MS,
    MS_H,
    MS_MIN,
    R_CUSTOMER,
    R_LOWCONF,
    R_MISSING,
    R_POLICY,
    REENGAGE_SHARE,
    RESP_VARIANTS,
    RETURN_WINDOW,
    S_BASE,
    S_EXT,
    S_OUT,
    S_OV,
    S_PII,
    S_RET,
    S_SV,
    START_MAX_MS,
    TZ_OFFSETS,
    _day_ms,
    _pii,
    _pii_kind,
    _pyrng,
    _rng,
    _section,
    _title,
    _ymd,
)

# ----------------------------------------------------------------------------- static data (seed-free)


@dataclass(frozen=True)
class _Static:
    intents: tuple
    titles: tuple
    utt_text: list  # Banking77 train utterances, grouped by intent
    utt_start: np.ndarray
    utt_count: np.ndarray
    neigh: np.ndarray  # (77, 4) most similar intents: where the built-in classifier's errors go
    neigh_p: np.ndarray  # (77, 4) cumulative probabilities over those neighbours
    err: np.ndarray  # (77,) built-in classifier error rate: higher for intents with close neighbours
    policy: tuple  # per intent, plus one for labels outside the 77: "POL-<abcd subflow>"
    policy_text: tuple  # one guideline sentence per policy
    action: np.ndarray  # (77,) index into ACTIONS or -1
    resp: tuple  # per intent x variant: the agent's answer text


@lru_cache(maxsize=1)
def _static() -> _Static:
    """Banking77, the ABCD guidelines and the confusion neighbourhoods (TF-IDF), loaded once per process."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    intents = tuple(json.loads((DATA / "banking77" / "categories.json").read_text()))
    index = {c: i for i, c in enumerate(intents)}
    by_intent: list[list[str]] = [[] for _ in intents]
    with open(DATA / "banking77" / "train.csv", newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            by_intent[index[row["category"]]].append(" ".join(row["text"].split()))
    utt_text = [t for group in by_intent for t in group]
    utt_count = np.array([len(g) for g in by_intent], dtype=np.int64)
    utt_start = np.concatenate([[0], np.cumsum(utt_count)[:-1]])

    docs = [" ".join(g) + (" " + c.replace("_", " ")) * 5 for c, g in zip(intents, by_intent)]
    vec = TfidfVectorizer(sublinear_tf=True, stop_words="english", ngram_range=(1, 2), min_df=2).fit(docs)
    x = vec.transform(docs)
    sim = (x @ x.T).toarray()
    np.fill_diagonal(sim, 0.0)
    neigh = np.argsort(-sim, axis=1, kind="stable")[:, :4]
    w = np.take_along_axis(sim, neigh, axis=1) ** 2 + 1e-9
    neigh_p = np.cumsum(w / w.sum(1, keepdims=True), axis=1)
    maxsim = sim.max(1)
    err = np.clip(0.17 * maxsim / maxsim.mean(), 0.03, 0.45)

    # Policy per intent: the ABCD subflow whose guideline text is closest to the intent's utterances.
    guide = json.loads((DATA / "abcd" / "guidelines.json").read_text())
    sub_names, sub_docs, sub_sent = [], [], []
    for flow in guide.values():
        for name, sub in flow["subflows"].items():
            texts = [a["text"] for a in sub["actions"]] + sub.get("instructions", [])
            sub_names.append("POL-" + re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_"))
            sub_docs.append(f"{name} {flow['description']} " + " ".join(texts))
            sentence = re.sub(r"\s+", " ", re.sub(r"[\[\]]", "", texts[0])).strip().rstrip(":")
            sub_sent.append(sentence if sentence.endswith(".") else sentence + ".")
    pvec = TfidfVectorizer(stop_words="english").fit(sub_docs + docs)
    psim = (pvec.transform(docs) @ pvec.transform(sub_docs).T).toarray()
    pick = psim.argmax(1)
    general = sub_names.index("POL-policy_faq") if "POL-policy_faq" in sub_names else 0
    policy = tuple(sub_names[j] for j in pick) + (sub_names[general],)
    policy_text = tuple(sub_sent[j] for j in pick) + (sub_sent[general],)

    action_idx = {a[0]: i for i, a in enumerate(ACTIONS)}
    action = np.array([action_idx.get(_ACTION_OF_INTENT.get(c, ""), -1) for c in intents], dtype=np.int64)
    titles = tuple(_title(c) for c in intents)
    answer = {c: f"Open the app, go to {_section(c)} and follow the steps there; it usually takes a few minutes."
              for c in intents}
    resp = tuple(v.format(t=t.lower(), a=answer[c]) for c, t in zip(intents, titles) for v in RESP_VARIANTS)
    return _Static(intents, titles, utt_text, utt_start, utt_count, neigh, neigh_p, err, policy, policy_text,
                   action, resp)


# ----------------------------------------------------------------------------- the world (seed-only)


@dataclass
class _World:
    seed: int
    st: _Static
    popularity: np.ndarray
    gap: np.ndarray  # bool per intent: no published article (the true knowledge gaps)
    article: np.ndarray  # published article index per intent, -1 for a gap
    kb_ids: list  # published article ids, by article index
    kb: list  # the snapshot rows (with a fixed reference date for updated_at)
    pool: int
    cust_off: np.ndarray  # UTC offset (minutes) per customer
    cust_cdf: np.ndarray  # sampling distribution over the customer pool (some customers write often)
    vocab: list  # every text an event can carry, except the day's PII openings
    v: dict  # offsets of the text groups inside vocab


@lru_cache(maxsize=4)
def _world(seed: int, kb_gap_share: float, pool: int) -> _World:
    """What depends only on the seed: intent popularity, the KB and its gaps, the customer pool."""
    st = _static()
    k = len(st.intents)
    rng = np.random.default_rng([seed, 0, 77])
    popularity = rng.dirichlet(np.full(k, 2.0))
    order = rng.permutation(k)
    gap = np.zeros(k, dtype=bool)
    gap[order[: round(kb_gap_share * k)]] = True

    ref = datetime(2025, 1, 1, tzinfo=UTC)
    article = np.full(k, -1, dtype=np.int64)
    kb_ids, kb = [], []
    for i, intent in enumerate(st.intents):
        if gap[i]:
            continue
        utts = st.utt_text[st.utt_start[i]: st.utt_start[i] + st.utt_count[i]]
        ex = [utts[j] for j in rng.choice(len(utts), 3, replace=False)]
        body = (f"{st.titles[i]}. Customers ask things like: " + " / ".join(f'"{u}"' for u in ex)
                + f". {st.resp[i * 3].split('. ', 1)[1]} Policy: {st.policy_text[i]}")
        aid = f"KB-{i + 1:04d}"
        article[i] = len(kb_ids)
        kb_ids.append(aid)
        kb.append({"article_id": aid, "title": st.titles[i], "body": body, "intents": [intent],
                   "status": "published", "updated_at": ref + timedelta(minutes=int(rng.integers(0, 525_600)))})
    # A couple of drafts (one on a gap: someone has started writing it) and archived old versions.
    gaps, covered = np.flatnonzero(gap), np.flatnonzero(~gap)
    extra = [(int(gaps[0]) if len(gaps) else int(covered[0]), "draft"), (int(covered[-1]), "draft"),
             (int(covered[0]), "archived"), (int(covered[len(covered) // 2]), "archived")]
    for j, (i, status) in enumerate(extra):
        kb.append({"article_id": f"KB-{k + 1 + j:04d}",
                   "title": st.titles[i] + (" (draft)" if status == "draft" else ""),
                   "body": f"{st.titles[i]}. " + ("Work in progress." if status == "draft" else "Superseded."),
                   "intents": [st.intents[i]], "status": status,
                   "updated_at": ref + timedelta(minutes=int(rng.integers(0, 525_600)))})

    w = (np.arange(pool) + 50.0) ** -0.7
    w = w[rng.permutation(pool)]
    cdf = np.cumsum(w / w.sum())
    cdf[-1] = 1.0
    off = np.where(rng.random(pool) < 0.12, rng.choice(TZ_OFFSETS, pool), 0).astype(np.int64)

    texts, v = [], {}
    for name, group in (("utt", st.utt_text), ("good", FOLLOW_GOOD), ("bad", FOLLOW_BAD), ("resp", st.resp),
                        ("generic", (GENERIC_RESP,)), ("fallback", FALLBACKS), ("fgood", FOLLOW_RESP_GOOD),
                        ("fbad", FOLLOW_RESP_BAD), ("handover", HANDOVER),
                        ("sugg", tuple(f"Suggested article: {r['title']}" for r in kb[: len(kb_ids)])),
                        ("url", tuple(f"https://help.example-bank.com/articles/{a}" for a in kb_ids))):
        v[name] = len(texts)
        texts.extend(group)
    return _World(seed, st, popularity, gap, article, kb_ids, kb, pool, off, cdf, texts, v)


# ----------------------------------------------------------------------------- per-day simulation


def _builtin(st: _Static, rng: np.random.Generator, intent: np.ndarray):
    """The built-in classifier: ~83 % right; errors go mostly to TF-IDF neighbours, with lower confidence."""
    m = len(intent)
    wrong = rng.random(m) < st.err[intent]
    to_neigh = rng.random(m) < 0.85
    k = np.minimum((rng.random(m)[:, None] > st.neigh_p[intent]).sum(1), 3)
    other = (intent + rng.integers(1, len(st.intents), m)) % len(st.intents)
    pred = np.where(wrong, np.where(to_neigh, st.neigh[intent, k], other), intent)
    conf = np.where(wrong, 0.15 + 0.65 * rng.beta(2.2, 2.8, m), 0.55 + 0.44 * rng.beta(5.0, 1.6, m))
    return pred.astype(np.int64), np.round(conf, 3)


_TIME_FIELDS = {"start", "end", "dur", "m", "chk_t", "t"}


def _compact(ns: SimpleNamespace) -> None:
    """Shrink a cached day's integer arrays to the smallest dtype that holds them (times stay int64):
    a range of 200k-conversation days keeps ~11 of them in memory."""
    for name, a in vars(ns).items():
        if isinstance(a, np.ndarray) and a.dtype == np.int64 and name not in _TIME_FIELDS and a.size:
            lo, hi = int(a.min()), int(a.max())
            for t in (np.int8, np.int16, np.int32):
                if np.iinfo(t).min <= lo and hi <= np.iinfo(t).max:
                    setattr(ns, name, a.astype(t))
                    break


def _wide(ns: SimpleNamespace) -> SimpleNamespace:
    """A view of a compacted day with int64 arrays again, so arithmetic on them cannot overflow."""
    return SimpleNamespace(**{k: a.astype(np.int64) if isinstance(a, np.ndarray) and a.dtype.kind == "i" else a
                              for k, a in vars(ns).items()})


def _lognormal(rng, median_ms: float, sigma: float, size, lo: float, hi: float) -> np.ndarray:
    return np.clip(median_ms * np.exp(sigma * rng.standard_normal(size)), lo, hi).astype(np.int64)


class _Gen:
    """Derives each day's conversations and their consequences, caching what a date range re-uses."""

    def __init__(self, world: _World, n: int, classifier):
        self.w, self.st, self.n, self.classifier = world, world.st, n, classifier
        self.n_ret = round(n * REENGAGE_SHARE) if n >= 10 else 0
        self.labels = list(world.st.intents)  # grows if a custom classifier returns other labels
        self.label_index = {c: i for i, c in enumerate(self.labels)}
        self.bases: dict = {}
        self.cores: dict = {}

    def evict(self, keep_from: date) -> None:
        """Bounded memory over long ranges: drop days no later target can need."""
        for cache, margin in ((self.cores, 0), (self.bases, RETURN_WINDOW)):
            for d in [d for d in cache if d < keep_from - timedelta(margin)]:
                del cache[d]

    def base(self, day: date) -> SimpleNamespace:
        """First-time conversations of a day: only what re-engagement on later days needs."""
        if day not in self.bases:
            rng, w = _rng(self.w.seed, day, S_BASE), self.w
            nb = self.n - self.n_ret
            cust = np.minimum(np.searchsorted(w.cust_cdf, rng.random(nb), side="right"), w.pool - 1)
            intent = rng.choice(len(self.st.intents), nb, p=w.popularity)
            utt = self.st.utt_start[intent] + (rng.random(nb) * self.st.utt_count[intent]).astype(np.int64)
            bpred, bconf = _builtin(self.st, rng, intent)
            start = rng.integers(0, START_MAX_MS, nb) + _day_ms(day)
            self.bases[day] = SimpleNamespace(cust=cust, intent=intent, utt=utt, bpred=bpred, bconf=bconf,
                                              start=start)
            _compact(self.bases[day])
        return self.bases[day]

    def returners(self, day: date) -> SimpleNamespace:
        """Customers back within 7 days on the same intent: failed conversations come back more often."""
        rng, r = _rng(self.w.seed, day, S_RET), self.n_ret
        parts = [(lag, self.base(day - timedelta(lag))) for lag in range(1, RETURN_WINDOW + 1)]
        cust = np.concatenate([b.cust for _, b in parts])
        intent = np.concatenate([b.intent for _, b in parts])
        wrong = np.concatenate([b.bpred != b.intent for _, b in parts])
        lag = np.concatenate([np.full(len(b.cust), lag) for lag, b in parts])
        weight = 0.75 ** (lag - 1) * (1 + 2 * self.w.gap[intent] + 2 * wrong)
        keys = np.log(rng.random(len(cust))) / weight  # Efraimidis-Spirakis weighted sampling
        sel = np.sort(np.argpartition(-keys, r - 1)[:r]) if r else np.zeros(0, dtype=np.int64)
        intent = intent[sel]
        utt = self.st.utt_start[intent] + (rng.random(r) * self.st.utt_count[intent]).astype(np.int64)
        bpred, bconf = _builtin(self.st, rng, intent)
        start = rng.integers(0, START_MAX_MS, r) + _day_ms(day)
        return SimpleNamespace(cust=cust[sel], intent=intent, utt=utt, bpred=bpred, bconf=bconf, start=start)

    def _label(self, name: str) -> int:
        if name not in self.label_index:
            self.label_index[name] = len(self.labels)
            self.labels.append(name)
        return self.label_index[name]

    def core(self, day: date) -> SimpleNamespace:
        """One day's conversations and everything they cause later (cases, surveys, reviews, checks)."""
        if day in self.cores:
            return self.cores[day]
        st, w, seed = self.st, self.w, self.w.seed
        b, r = self.base(day), self.returners(day)
        cat = {f: np.concatenate([getattr(b, f), getattr(r, f)]) for f in vars(b)}
        ret = np.concatenate([np.zeros(len(b.cust), bool), np.ones(len(r.cust), bool)])
        order = np.argsort(cat["start"], kind="stable")
        c = SimpleNamespace(day=day, ymd=_ymd(day), ret=ret[order], **{f: a[order] for f, a in cat.items()})
        n = len(c.start)
        c.n = n
        c.off = w.cust_off[c.cust]
        c.gap = w.gap[c.intent]

        # Personal data in ~5 % of opening messages; the strings are made only when needed (openings).
        rng = _rng(seed, day, S_OUT)
        c.pii_rows = np.flatnonzero(rng.random(n) < 0.05)

        if self.classifier is not None:
            texts = [st.utt_text[u] for u in c.utt]
            for i, t in zip(c.pii_rows, self.openings(c)[1]):
                texts[i] = t
            out = list(self.classifier(texts))
            if len(out) != n:
                raise ValueError(f"classifier returned {len(out)} results for {n} texts")
            c.pred = np.array([self._label(str(lbl)) for lbl, _ in out], dtype=np.int64)
            c.conf = np.round(np.clip(np.array([float(p) for _, p in out]), 0.0, 1.0), 3)
        else:
            c.pred, c.conf = c.bpred, c.bconf
        c.correct = c.pred == c.intent
        known = c.pred < len(st.intents)
        pred77 = np.where(known, c.pred, 0)

        c.rag = rng.random(n) < 0.30
        c.shadow = rng.random(n) < 0.10
        live = ~c.shadow
        c.channel = rng.choice(3, n, p=[0.85, 0.10, 0.05])
        c.has_case = rng.random(n) > 0.04
        bad = ~c.correct | c.gap
        c.turns = np.where(bad, rng.choice([1, 2, 3], n, p=[0.2, 0.4, 0.4]),
                           rng.choice([1, 2, 3], n, p=[0.35, 0.45, 0.2]))
        c.dur = np.minimum(20_000 + c.turns * _lognormal(rng, 45_000, 0.6, n, 5_000, 400_000), MAX_DUR_MS)
        c.end = c.start + c.dur
        c.pol = rng.choice(3, n, p=[0.88, 0.08, 0.04])
        c.policy = np.where(known, c.pred, len(st.intents))
        c.act = np.where(known, st.action[pred77], -1)
        c.proposed = (c.act >= 0) & (rng.random(n) < 0.7)
        c.exec = c.proposed & live & c.has_case & (c.pol != 1) & (rng.random(n) < 0.92)
        c.act_status = rng.choice(3, n, p=[0.94, 0.04, 0.02])  # ok, failed, timeout (on executed)
        c.fallback = live & np.where(c.gap, rng.random(n) < 0.6, (c.conf < 0.45) & (rng.random(n) < 0.35))
        c.error = np.where(rng.random(n) < 0.015, rng.integers(0, len(ERRORS), n), -1)
        # Escalation: the first reason that fires, in order of how a human triage would name it.
        u = rng.random((5, n))
        reason = np.full(n, -1)
        for cond, rid in (((c.pol == 1) & (u[0] < 0.6), R_POLICY), (c.gap & (u[1] < 0.55), R_MISSING),
                          ((c.conf < 0.5) & (u[2] < 0.3), R_LOWCONF),
                          ((~c.correct | (c.error >= 0)) & (u[3] < 0.2), R_CUSTOMER), (u[4] < 0.04, R_CUSTOMER)):
            reason = np.where((reason < 0) & cond, rid, reason)
        c.reason = np.where(live, reason, -1)
        c.esc = c.reason >= 0
        c.variant = np.arange(n) % 3

        # Case milestones (ms, -1 = never): 0 open, 1 pending (escalated), 2 solved, 3 reopened,
        # 4 solved again, 5 closed. A day's CRM export holds each case's last milestone of that day.
        human = c.esc | c.shadow
        m = np.full((n, 6), -1, dtype=np.int64)
        m[:, 0] = c.start + rng.integers(300, 1500, n)
        m[:, 1] = np.where(c.esc, c.end, -1)
        human_delay = _lognormal(rng, 3 * MS_H, 1.0, n, 5 * MS_MIN, 30 * MS_H)
        human_delay = np.where(c.channel == 1, np.minimum(human_delay * 3 // 2, 30 * MS_H), human_delay)
        solved = rng.random(n) > 0.02
        m[:, 2] = np.where(solved, np.where(human, c.end + human_delay, c.end + rng.integers(1_000, 60_000, n)), -1)
        p_reopen = (0.04 + 0.18 * ~c.correct + 0.15 * c.gap + 0.05 * c.fallback
                    + 0.2 * (c.exec & (c.act_status > 0))) * np.where(c.rag, 0.8, 1.0)
        c.reopened = solved & (rng.random(n) < p_reopen)
        m[:, 3] = np.where(c.reopened, m[:, 2] + _lognormal(rng, 20 * MS_H, 0.9, n, 30 * MS_MIN, 96 * MS_H), -1)
        m[:, 4] = np.where(c.reopened, m[:, 3] + _lognormal(rng, 4 * MS_H, 1.0, n, 10 * MS_MIN, 24 * MS_H), -1)
        m[:, 5] = np.where(solved, np.where(c.reopened, m[:, 4], m[:, 2]) + 72 * MS_H, -1)
        m[~c.has_case] = -1
        ht1 = np.where(human, c.dur / 1000 + _lognormal(rng, 600_000, 0.7, n, 60_000, 7_200_000) / 1000,
                       c.dur / 1000)
        ht2 = _lognormal(rng, 900_000, 0.7, n, 60_000, 7_200_000) / 1000

        # Cases opened outside the agent (phone, e-mail), handled by humans: conversation_id is null.
        er = _rng(seed, day, S_EXT)
        ne = round(n * EXTERNAL_CASE_SHARE)
        e_cust = np.minimum(np.searchsorted(w.cust_cdf, er.random(ne), side="right"), w.pool - 1)
        e_intent = er.choice(len(st.intents), ne, p=w.popularity)
        em = np.full((ne, 6), -1, dtype=np.int64)
        em[:, 0] = _day_ms(day) + np.sort(er.integers(0, START_MAX_MS, ne))
        em[:, 2] = em[:, 0] + _lognormal(er, 5 * MS_H, 1.0, ne, 10 * MS_MIN, 30 * MS_H)
        e_re = er.random(ne) < 0.05
        em[:, 3] = np.where(e_re, em[:, 2] + _lognormal(er, 20 * MS_H, 0.9, ne, 30 * MS_MIN, 96 * MS_H), -1)
        em[:, 4] = np.where(e_re, em[:, 3] + _lognormal(er, 4 * MS_H, 1.0, ne, 10 * MS_MIN, 24 * MS_H), -1)
        em[:, 5] = np.where(e_re, em[:, 4], em[:, 2]) + 72 * MS_H
        c.case = SimpleNamespace(
            conv=np.concatenate([np.arange(n), np.full(ne, -1)]),
            cust=np.concatenate([c.cust, e_cust]), intent=np.concatenate([c.intent, e_intent]),
            channel=np.concatenate([c.channel, er.choice([1, 2], ne, p=[0.5, 0.5])]),
            esc=np.concatenate([c.esc, np.zeros(ne, bool)]), reason=np.concatenate([c.reason, np.full(ne, -1)]),
            shadow=np.concatenate([c.shadow, np.zeros(ne, bool)]),
            human=np.concatenate([human, np.ones(ne, bool)]),
            reopened=np.concatenate([c.reopened, e_re]), m=np.concatenate([m, em]),
            ht1=np.concatenate([ht1, _lognormal(er, 700_000, 0.7, ne, 60_000, 7_200_000) / 1000]),
            ht2=np.concatenate([ht2, _lognormal(er, 900_000, 0.7, ne, 60_000, 7_200_000) / 1000]),
            off=np.concatenate([c.off, w.cust_off[e_cust]]),
        )
        c.n_ext = ne

        self._surveys(c)
        self._overrides(c)
        # Outcome checks verify executed actions minutes to hours later; failures rarely verify.
        c.chk_t = np.where(c.exec, c.end + rng.integers(2 * MS_MIN, 6 * MS_H, n), -1)
        c.verified = np.where(c.act_status == 0, rng.random(n) < 0.96, rng.random(n) < 0.1)
        _compact(c)
        _compact(c.case)
        self.cores[day] = c
        return c

    def openings(self, c) -> tuple[list, list]:
        """(PII strings, full opening texts) of the day's conversations with personal data, in row order."""
        if not hasattr(c, "pii_open"):
            pr, st = _pyrng(self.w.seed, c.day, S_PII), self.st
            c.pii_strings, c.pii_open = [], []
            for i in c.pii_rows:
                kind = _pii_kind(pr)
                s = _pii(pr, kind)
                c.pii_strings.append(s)
                c.pii_open.append(st.utt_text[c.utt[i]] + " " + pr.choice(_OPENING_PII[kind]).format(s))
        return c.pii_strings, c.pii_open

    def _surveys(self, c) -> None:
        """CSAT (and sometimes CES) for ~25 % of solved cases, 0-3 days later, lower after bad outcomes."""
        rng, pr = _rng(self.w.seed, c.day, S_SV), _pyrng(self.w.seed, c.day, S_SV)
        cs = c.case
        nc = len(cs.conv)
        conv = np.maximum(cs.conv, 0)
        bad = cs.reopened | ((cs.conv >= 0) & (~c.correct[conv] | c.gap[conv] | c.fallback[conv]))
        take = (cs.m[:, 2] >= 0) & (rng.random(nc) < np.where(bad, 0.30, 0.22))
        t = cs.m[:, 2] + np.clip(rng.exponential(14 * MS_H, nc).astype(np.int64), MS_MIN, 72 * MS_H)
        good_p, bad_p = [0.02, 0.03, 0.10, 0.30, 0.55], [0.30, 0.25, 0.20, 0.15, 0.10]
        csat = np.where(bad, rng.choice(5, nc, p=bad_p), rng.choice(5, nc, p=good_p)) + 1
        ces_good, ces_bad = [0.02, 0.03, 0.05, 0.10, 0.20, 0.30, 0.30], [0.25, 0.20, 0.20, 0.15, 0.10, 0.05, 0.05]
        ces = np.where(rng.random(nc) < 0.4,
                       np.where(bad, rng.choice(7, nc, p=ces_bad), rng.choice(7, nc, p=ces_good)) + 1, 0)
        has_comment = rng.random(nc) < 0.4
        rows = np.flatnonzero(take)
        comments = []
        for i in rows:
            if not has_comment[i]:
                comments.append((None, None))
                continue
            text = pr.choice(COMMENTS_BAD if csat[i] <= 3 else COMMENTS_GOOD)
            pii = None
            if pr.random() < 0.10:
                pii = _pii(pr, pr.choice(("email", "phone")))
                text += f" You can reach me at {pii}."
            comments.append((text, pii))
        c.sv = SimpleNamespace(case=rows, t=t[rows], csat=csat[rows], ces=ces[rows], comments=comments)

    def _overrides(self, c) -> None:
        """The human-in-the-loop log: corrections of wrong decisions, some approvals, a few sloppy entries."""
        rng, pr = _rng(self.w.seed, c.day, S_OV), _pyrng(self.w.seed, c.day, S_OV)
        n = c.n
        u = rng.random((8, n))
        review_delay = np.where(c.shadow, rng.integers(MS_MIN, 20 * MS_MIN, n),
                                _lognormal(rng, 5 * MS_H, 1.0, n, 10 * MS_MIN, 40 * MS_H))
        groups = [  # (rows, stage, outcome array)
            (np.flatnonzero(~c.correct & (u[0] < np.where(c.shadow, 0.9, 0.35))), 0,
             np.where(u[1] < 0.88, 0, 1)),
            (np.flatnonzero(c.correct & (u[2] < np.where(c.shadow, 0.6, 0.04))), 0, np.full(n, 2)),
            (np.flatnonzero(c.exec & (~c.correct | (c.act_status > 0)) & (u[3] < 0.6)), 1,
             np.where(u[1] < 0.85, 0, 1)),
            (np.flatnonzero(c.gap & ~c.esc & ~c.fallback & ~c.shadow & (u[4] < 0.3)), 2, np.zeros(n, int)),
            (np.flatnonzero((c.reason == R_POLICY) & (u[5] < 0.5)), 3, np.zeros(n, int)),
        ]
        conv = np.concatenate([g[0] for g in groups])
        stage = np.concatenate([np.full(len(g[0]), g[1]) for g in groups])
        outcome = np.concatenate([g[2][g[0]] for g in groups])
        order = np.lexsort((stage, conv))
        conv, stage, outcome = conv[order], stage[order], outcome[order]
        k = len(conv)
        t = c.end[conv] + review_delay[conv] + stage * 17_000
        ground = rng.choice([1, 2, 3], k, p=[0.55, 0.30, 0.15])  # bit 1 policy clause, bit 2 evidence
        ground = np.where(outcome == 0, ground, np.where(rng.random(k) < 0.5, ground, 0))
        missing = np.where((outcome == 0) & (rng.random(k) < 0.04), rng.choice([1, 2], k), 0)
        has_rationale = (outcome != 2) | (rng.random(k) < 0.5)
        reviewer = rng.integers(1, 16, k)
        pii = []
        for j in range(k):
            kind = None
            if ground[j] & 2 and pr.random() < 0.10:
                kind = "evidence"
            elif has_rationale[j] and pr.random() < 0.03:
                kind = "rationale"
            pii.append((kind, _pii(pr, pr.choice(("email", "phone", "card"))) if kind else None))
        c.ov = SimpleNamespace(conv=conv, stage=stage, outcome=outcome, t=t, ground=ground, missing=missing,
                               has_rationale=has_rationale, reviewer=reviewer, pii=pii)
