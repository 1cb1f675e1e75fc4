"""Topics of the failing conversations and their verdict against the knowledge base (docs/gaps.md).

A topic is built from what the customers wrote; intent labels join the text weighted by trust
(`gaps.trust`). Its kind is decided by text, not by the agent's label:

- **revise_article**: the topic's text is close to an article's text (the questions that article's
  answered conversations asked, or its own title and body) *and* the article was routed to or retrieved
  for the topic, and the topic still fails well above the base rate;
- **missing_article**: no article is both close and routed/retrieved. When the agent routed most of the
  topic to one article's intent anyway, that article is `misrouted_to`: the classifier needs a new class;
- **out_of_scope**: a missing-looking topic whose words are foreign to the whole knowledge base (or hit the
  configured out-of-scope terms): something the business does not handle, ranked after every real gap.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import json
import logging
from collections import Counter
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from feedback_loop.gaps import trust
from feedback_loop.gaps.kb import article_text, contradictory_articles, stale_articles
from feedback_loop.gaps.params import SIGNALS, GapParams
from feedback_loop.settings import Settings

log = logging.getLogger(__name__)
ASSIGN_BLOCK = 50000  # rows whose vectors are built at a time to join their nearest topic
FETCH_BLOCK = 50000  # window rows fetched from DuckDB at a time
REDACT_CACHE = 1 << 16  # distinct messages whose redaction is remembered
STREAM_PREVIOUS = True  # past `max_fit_texts`, the previous window's vectors a block at a time (False: held)

COLUMNS = ["conversation_id", "customer_id", "text", "final_intent", "final_confidence", "human_intent",
           "human_category", "kb_articles", "kb_max_score", "started_at", "escalated", "handle_time_s", "weight"] + \
          [f"sig_{s}" for s in SIGNALS]
# A start is only compared with an article's update: as epoch microseconds (DuckDB's precision), not as an
# aware datetime, which cost more to fetch than the rest of the row.
SELECT_COLUMNS = ", ".join("epoch_us(started_at) AS started_at" if c == "started_at" else c for c in COLUMNS)


@dataclass
class Topic:
    t: int
    idx: np.ndarray  # rows of `sig` in the topic
    text_cos: np.ndarray  # TF-IDF cosine of the topic centroid with each published article's own text
    answered_cos: np.ndarray  # semantic cosine with each article's answered-questions centroid (nan: none)
    answered_rel: np.ndarray  # mean member similarity to that centroid over the answered questions' own
    label_share: dict  # trust-weighted main-label shares
    anchors: dict  # share of conversations whose most trusted label is each one (trust.anchor_shares)
    human: dict  # share of the topic a person labelled with each intent
    routed: dict  # the agent's raw routing shares
    retrieved: np.ndarray  # share of the topic's conversations that retrieved each article
    covering: int | None  # index into published
    centroid: np.ndarray
    miss: float  # share of the topic whose KB retrieval found nothing useful
    domain: float  # share of the topic's TF-IDF mass on the business's words (KB and answered traffic)
    traffic: float = 0.0
    members: list = None  # the topic's signal rows
    n_searched: int = 0  # members whose KB searches returned any article
    search_profile: np.ndarray = None  # share of members that got each article back, over the signals' share
    trusted_routing: np.ndarray = None  # per published article: routing to it is trusted (see _describe)


def find_gaps(con, p: GapParams, settings: Settings | None = None) -> tuple[list[dict], dict]:
    """The gap rows (without ids) of the window loaded in `conv` / `kb`, and counts for the summary."""
    from feedback_loop.datasets.pii import redactor
    from feedback_loop.gaps import topics as gt

    # Redaction is a pure function of the text, and first messages repeat a lot: each distinct text once
    # (the most recent ones: a window of a million distinct messages would hold each twice more).
    redact = functools.lru_cache(maxsize=REDACT_CACHE)(redactor(settings).redact)
    select = f"""SELECT {SELECT_COLUMNS} FROM conv WHERE in_window AND text IS NOT NULL AND trim(text) <> ''"""
    shared: dict = {}
    fetch = functools.partial(_fetch_rows, con, redact, shared)
    sig = fetch(f"{select} AND weight >= $w ORDER BY weight DESC, conversation_id", {"w": p.min_weight})
    # The rest of the traffic gives each topic its size and each label what it answers: a sample at scale.
    n_other = con.execute(f"SELECT count(*) FROM ({select} AND weight < $w)", {"w": p.min_weight}).fetchall()[0][0]
    # At least a quarter of `max_texts` however many signals there are: a topic's traffic is scaled up from
    # this sample, and a handful of rows would make every failure rate noise.
    budget = max(p.max_texts - len(sig), p.max_texts // 4, 1)
    other = fetch(f"{select} AND weight < $w ORDER BY hash(conversation_id), conversation_id LIMIT $n",
                  {"w": p.min_weight, "n": budget})
    other.sort(key=lambda r: r["conversation_id"])
    scale = n_other / len(other) if other else 1.0
    # The previous window's signals only join a topic, for its trend: their text and labels, held as columns.
    prev = _Previous.fetch(con, redact, shared, p.min_weight)
    n_total = con.execute("SELECT count(*) FROM conv WHERE in_window").fetchall()[0][0]
    has_prev_window = bool(con.execute("SELECT count(*) > 0 FROM conv WHERE NOT in_window").fetchall()[0][0])
    # An article: (id, title, body, intents, status, updated_at, updated_at in epoch microseconds).
    kb = con.execute("SELECT article_id, title, body, intents, status, updated_at, epoch_us(updated_at) FROM kb "
                     "ORDER BY article_id").fetchall()
    published = [a for a in kb if a[4] == "published"]
    stats = {"n_conversations": n_total, "n_signals": len(sig), "n_topics": 0, "n_noise": 0, "n_traffic_sample": len(other),
             "kb_published": len(published)}
    rows: list[dict] = stale_articles(con, p, published)
    n_held = len(sig) + len(other)
    n_conv = n_held + prev.n
    nc = min(len(sig), p.max_signals)
    art_texts = [article_text(a) for a in published]
    fit_rows = _fit_rows(p, n_conv, nc, range(len(sig), n_held), len(published))
    # Past `max_fit_texts` the space is fitted on a sample and every text projected into it row by row: the
    # previous window's then get their vectors a block at a time when needed (twice: for the label names
    # every vector has a column for, then to join the topics), not all at once (~1 GB at 1 M signals).
    stream_prev = STREAM_PREVIOUS and fit_rows is not None and p.backend == "tfidf"
    all_rows = sig + other if stream_prev else sig + other + prev.rows(0, prev.n)
    n_rows = len(all_rows)  # the rows whose vectors the space holds
    texts = [r["text"] for r in all_rows] + art_texts or [""]
    # Positions as `_fit_rows` counts them: current window's rows, previous window's, then the articles.
    fit_texts = None if fit_rows is None else [
        texts[i] if i < n_rows else prev.text[i - n_held] if i < n_conv else art_texts[i - n_conv] for i in fit_rows]
    space = gt.fit_text_space(texts, backend=p.backend, lsa_components=p.lsa_components,
                              sentence_model=p.sentence_model or None, seed=p.seed, fit_texts=fit_texts)
    del texts, fit_texts
    art_tfidf = space.tfidf[n_rows:n_rows + len(published)]
    rows.extend(contradictory_articles(con, p, published, art_tfidf))
    stats["n_prev_signals"] = prev.n
    if len(sig) < 2:
        return rows, stats

    sem = space.semantic[:n_rows]
    # What each label answers: the text centroid of the conversations that carried it and did not fail.
    answered = np.array([False] * len(sig) + [float(r["weight"]) == 0.0 for r in other] + [False] * (n_rows - n_held))
    human_intent, human_category, final_intent = (column_of(all_rows, c) for c in ("human_intent", "human_category", "final_intent"))
    answer_label = [h or c or f for h, c, f in zip(human_intent, human_category, final_intent)]
    cents = trust.answered_centroids(sem, answer_label, answered)
    agree = trust.agreement(sem, final_intent, cents)
    labels_of = trust.weighted_labels(human_intent, human_category, final_intent,
                                      column_of(all_rows, "final_confidence"), agree, p)
    del human_intent, human_category, final_intent, answer_label
    names = set(gt.label_vocab(labels_of))
    if stream_prev:
        # The previous window's TF-IDF rows are kept for the second pass (they are held for the background
        # anyway): tokenising a million messages twice was the larger part of that pass.
        prev_tfidf = []
        for tfidf_b, _sem_b, labels_b in prev.blocks(space, cents, p):
            names.update(gt.label_vocab(labels_b))
            prev_tfidf.append(tfidf_b)
        background = gt.column_mean(sparse.vstack([space.tfidf[:n_rows], *prev_tfidf], format="csr"))
    else:
        background = gt.column_mean(space.tfidf[:n_rows])
    vocab = sorted(names)

    def vectors(rows: np.ndarray) -> np.ndarray:
        # Text and label vectors of these rows only: the whole window's, at 2.4 M messages and ~150 labels,
        # would be 2.4 GB beside a 1.4 GB label matrix (each row is built alone, so the values are the same).
        return gt.combine(sem[rows], gt.label_features([labels_of[i] for i in rows], normalise=False,
                                                       vocab=vocab)[0], p.label_weight)

    min_size = p.min_topic_size or max(4, round(0.003 * len(sig)))
    # Only `nc` signals are clustered: there a topic needs its share of them, not its size among all the
    # signals (0.3 % of 1.3 M signals is 3,900, more than most topics hold of the 6,000 clustered).
    cluster_min = min_size if nc == len(sig) else max(4, round(min_size * nc / len(sig)))
    x_clustered = vectors(np.arange(nc))
    topic = gt.cluster(x_clustered, algorithm=p.algorithm, distance_threshold=p.distance_threshold, min_size=cluster_min)
    topic = _merge_same_anchor(topic, labels_of[:nc], p)
    cent = gt.centroids(x_clustered, topic)
    # Everything else (signals past the cap, other traffic, the previous window) joins its nearest topic
    # when it is within the distance that built the topics.
    assigned = np.concatenate([gt.assign(vectors(np.arange(i, min(i + ASSIGN_BLOCK, n_rows))), cent, p.distance_threshold)
                               for i in range(nc, n_rows, ASSIGN_BLOCK)] or [np.zeros(0, dtype=np.int64)])
    sig_topic = np.concatenate([topic, assigned[: len(sig) - nc]])
    other_topic = assigned[len(sig) - nc: len(sig) - nc + len(other)]
    prev_topic = assigned[len(sig) - nc + len(other):]
    if stream_prev:
        prev_topic = np.concatenate([gt.assign(gt.combine(sem_b, gt.label_features(labels_b, normalise=False, vocab=vocab)[0],
                                                          p.label_weight), cent, p.distance_threshold)
                                     for _tfidf_b, sem_b, labels_b in prev.blocks(space, cents, p, prev_tfidf)]
                                    or [np.zeros(0, dtype=np.int64)])
        del prev_tfidf
    stats.update(n_topics=int(cent.shape[0]), n_noise=int((sig_topic == gt.NOISE).sum()), min_topic_size=min_size,
                 clustered=nc, cluster_min_size=cluster_min, fitted_texts=space.n_fitted, labels_trusted=round(float(np.mean([bool(lab) and lab[0][1] >= 0.5 for lab in labels_of[:len(sig)]])), 3))
    if cent.shape[0] == 0:
        return rows, stats

    art_cents = _article_centroids(published, cents, sem.shape[1])
    # The business's vocabulary: every word of the KB, and the words the answered conversations use.
    kb_vocab = np.asarray((space.tfidf[:n_rows][np.flatnonzero(answered)] > 0).sum(axis=0)).ravel() >= 2
    if art_tfidf.shape[0]:
        kb_vocab |= np.asarray(art_tfidf.sum(axis=0)).ravel() > 0
    sig_tfidf = space.tfidf[: len(sig)]
    describe = functools.partial(_describe, p, sig, sig_tfidf, art_tfidf, sem[: len(sig)], labels_of, art_cents,
                                 published, kb_vocab, _searched(sig))
    topics = describe(sig_topic)
    if _merge_uncovered(p, topics, sig_topic) + _merge_same_cover(topics, sig_topic):
        topics = describe(sig_topic)
    moved = _absorb(p, topics, sig, sem[: len(sig)], sig_topic)
    if moved:
        topics = describe(sig_topic)
        stats["moved_to_missing"] = moved
    terms = gt.characteristic_terms(sig_tfidf, sig_topic, space.terms, k=p.top_terms, background_mean=background)
    for tp in topics:
        tp.traffic = len(tp.idx) + float((other_topic == tp.t).sum()) * scale
    # The base failure rate: conversations outside the topics no article covers.
    uncovered = [tp for tp in topics if tp.covering is None]
    failing_elsewhere = len(sig) - sum(len(tp.idx) for tp in uncovered)
    traffic_elsewhere = len(sig) + len(other) * scale - sum(tp.traffic for tp in uncovered)
    base_rate = failing_elsewhere / max(1.0, traffic_elsewhere)
    stats["base_failure_rate"] = round(base_rate, 4)
    from feedback_loop.gaps.rows import topic_row

    for tp in topics:
        if len(tp.idx) < min_size:
            continue  # a topic that handed its conversations to a missing-article gap is too small now
        row = topic_row(p, tp, [sig[i] for i in tp.idx], terms[tp.t], published, base_rate,
                        int((prev_topic == tp.t).sum()), has_prev_window, vectors(tp.idx), cent[tp.t])
        if row:
            rows.append(row)
    return rows, stats


def _fit_rows(p: GapParams, n_conv: int, n_clustered: int, traffic: range, n_articles: int) -> np.ndarray | None:
    """The rows the text space is fitted on, or None for all of them (a window of up to `max_fit_texts`
    messages). Beyond, the clustered signals, the traffic sample, the articles and a seeded sample of the
    other signals and the previous window: fitting the vocabulary of 2.4 M messages took 5.8 GB."""
    if n_conv <= p.max_fit_texts:
        return None
    fixed = np.concatenate([np.arange(n_clustered), np.arange(traffic.start, traffic.stop),
                            np.arange(n_conv, n_conv + n_articles)]).astype(np.int64)
    # The rows not fixed, in order: a mask, not `np.setdiff1d` (which sorts both sides: ~4 s of a steady night
    # at 2 M events a day, for the same array).
    free = np.ones(n_conv, dtype=bool)
    free[fixed[fixed < n_conv]] = False
    rest = np.flatnonzero(free).astype(np.int64)
    take = max(0, min(rest.size, p.max_fit_texts - n_clustered - len(traffic)))
    sample = np.random.default_rng(p.seed).choice(rest, size=take, replace=False)
    return np.sort(np.concatenate([fixed, sample]))


_POSITION = {c: i for i, c in enumerate(COLUMNS)}
SHARED_COLUMNS = ("final_intent", "human_intent", "human_category", "kb_articles")


class WindowRow(tuple):
    """One conversation of the window, read like a dict (`row["text"]`, `row.get(...)`) but held as a tuple:
    at 10 M events a day the window's signals are 260k rows, ~830 bytes each as 24-key dicts, ~250 as this."""

    __slots__ = ()

    def __getitem__(self, key):
        return tuple.__getitem__(self, _POSITION[key] if isinstance(key, str) else key)

    def get(self, key, default=None):
        return tuple.__getitem__(self, _POSITION[key]) if key in _POSITION else default


def column_of(rows: list, name: str) -> list:
    """One column of window rows (their own `__getitem__` is a Python call per row: this is C's); of dict
    rows (tests build topics' members as dicts), a lookup per row."""
    if rows and not isinstance(rows[0], WindowRow):
        return [r[name] for r in rows]
    return list(map(tuple.__getitem__, rows, itertools.repeat(_POSITION[name], len(rows))))


class _Previous:
    """The previous window's signals, which only join a topic (for its trend): their text (redacted) and
    labels as columns, ~40 bytes a row beside their text instead of a ~240-byte row."""

    COLUMNS = ("text", "final_intent", "final_confidence", "human_intent", "human_category")

    def __init__(self, columns: dict):
        self.columns = columns
        self.text = columns["text"]
        self.n = len(self.text)

    @classmethod
    def fetch(cls, con, redact, shared: dict, min_weight: float) -> _Previous:
        columns = {c: [] for c in cls.COLUMNS}
        sql = (f"SELECT {', '.join(cls.COLUMNS)} FROM conv WHERE NOT in_window AND weight >= $w "
               "AND text IS NOT NULL AND trim(text) <> '' ORDER BY conv.conversation_id")
        for block in _fetch_columns(con, redact, shared, sql, {"w": min_weight}):
            for c, values in zip(cls.COLUMNS, block):
                columns[c].extend(values)
        return cls(columns)

    def rows(self, start: int, stop: int) -> list[WindowRow]:
        """Rows `start:stop` as window rows (the columns not held are NULL)."""
        held = [_POSITION[c] for c in self.COLUMNS]
        cols = [self.columns[c][start:stop] for c in self.COLUMNS]
        out = []
        for values in zip(*cols):
            row = [None] * len(COLUMNS)
            for i, v in zip(held, values):
                row[i] = v
            out.append(WindowRow(row))
        return out

    def blocks(self, space, cents: dict, p: GapParams, tfidf_blocks: list | None = None):
        """(TF-IDF, semantic vectors, weighted labels) of the rows, `ASSIGN_BLOCK` at a time, each exactly
        what the rows would get among the space's own texts (projection, agreement and labels are per row).
        `tfidf_blocks`: the TF-IDF blocks an earlier pass gave, so the texts are not tokenised again."""
        for k, start in enumerate(range(0, self.n, ASSIGN_BLOCK)):
            col = {c: values[start:start + ASSIGN_BLOCK] for c, values in self.columns.items()}
            if tfidf_blocks is None:
                tfidf, sem = space.project(col["text"])
            else:
                tfidf = tfidf_blocks[k]
                sem = space.project_tfidf(tfidf)
            agree = trust.agreement(sem, col["final_intent"], cents)
            yield tfidf, sem, trust.weighted_labels(col["human_intent"], col["human_category"],
                                                    col["final_intent"], col["final_confidence"], agree, p)


def _fetch_rows(con, redact, shared: dict, sql: str, params: dict) -> list[WindowRow]:
    """The rows of `sql` over `COLUMNS` (`SELECT_COLUMNS`), their text redacted (before anything else sees it: no
    term or example carries PII), a value that repeats from row to row (an intent, a list of article ids) held
    once in `shared`. Lists are shared between rows, so nothing may change one in place."""
    out: list[WindowRow] = []
    for columns in _fetch_columns(con, redact, shared, sql, params):
        out.extend(map(WindowRow, zip(*columns)))
    return out


def _fetch_columns(con, redact, shared: dict, sql: str, params: dict):
    """The result of `sql` as Python columns, `FETCH_BLOCK` rows at a time (a whole result would be held twice,
    Arrow's and these). Read a column at a time: a text or a label is converted, redacted and looked up in
    `shared` once per distinct value in the block, not once per row."""
    import pyarrow as pa
    import pyarrow.compute as pc

    for batch in con.sql(sql, params=params).to_arrow_reader(FETCH_BLOCK):
        columns = []
        for name, col in zip(batch.schema.names, batch.columns):
            is_list = pa.types.is_list(col.type) or pa.types.is_large_list(col.type)
            if name == "text" or (name in SHARED_COLUMNS and not is_list):
                encoded = pc.dictionary_encode(col)
                once = encoded.dictionary.to_pylist()
                once = [redact(v) for v in once] if name == "text" else [shared.setdefault(v, v) for v in once]
                columns.append([None if i is None else once[i] for i in encoded.indices.to_pylist()])
            elif name in SHARED_COLUMNS:
                columns.append([None if v is None else shared.setdefault(tuple(v), v) for v in col.to_pylist()])
            else:
                columns.append(col.to_pylist())
        yield columns


def _article_centroids(published: list, cents: dict, dim: int) -> list:
    """Per published article: (answered-questions centroid of its intents, their median member similarity),
    or None when no answered conversation carried one of its intents."""
    out = []
    for a in published:
        vs = [cents[i] for i in (a[3] or []) if i in cents]
        if not vs:
            out.append(None)
            continue
        c = np.mean([v[0] for v in vs], axis=0)
        out.append((c / max(float(np.linalg.norm(c)), 1e-9), float(np.mean([v[1] for v in vs]))))
    return out


@dataclass
class _Searches:
    """Which articles each signal's KB searches returned, at any score (one column per article id)."""

    index: dict  # article id -> column
    returned: np.ndarray  # (n_signals, n_articles) uint8, 1 where the article came back (means: float32)
    background: np.ndarray  # share of all signals that got each article back


def _searched(sig: list[dict]) -> _Searches:
    ids = sorted({a for r in sig for a in (r.get("kb_articles") or [])})
    index = {a: i for i, a in enumerate(ids)}
    out = np.zeros((len(sig), len(ids)), dtype=np.uint8)  # a quarter of float32's size (1.3 M signals: 80 MB)
    for i, r in enumerate(sig):
        for a in r.get("kb_articles") or []:
            out[i, index[a]] = 1
    return _Searches(index, out, out.mean(axis=0, dtype=np.float32) if len(sig) else np.zeros(len(ids), dtype=np.float32))


def _describe(p: GapParams, sig, sig_tfidf, art_tfidf, sem, labels_of, art_cents, published, kb_vocab,
              searched: _Searches, assignment: np.ndarray) -> list[Topic]:
    out = []
    for t in range(int(assignment.max()) + 1 if assignment.size else 0):
        idx = np.flatnonzero(assignment == t)
        if idx.size == 0:
            continue
        tf = np.asarray(sig_tfidf[idx].mean(axis=0)).ravel()
        norm = np.linalg.norm(tf)
        text_cos = (np.asarray(art_tfidf @ (tf / norm)).ravel() if (norm > 0 and art_tfidf.shape[0])
                    else np.zeros(len(published)))
        member_sem = sem[idx]  # once: per article, a topic of 150,000 members copied 60 MB again
        centroid = member_sem.mean(axis=0)
        centroid /= max(float(np.linalg.norm(centroid)), 1e-9)
        answered_cos = np.array([np.nan if c is None else float(c[0] @ centroid) for c in art_cents])
        # How typical of each article's answered questions the topic's messages are (1 = as typical as
        # those questions themselves): size-independent, unlike the centroid cosine of a small topic.
        answered_rel = np.array([np.nan if c is None else float(np.mean(member_sem @ c[0])) / max(c[1], 1e-6)
                                 for c in art_cents])
        del member_sem
        members = [sig[i] for i in idx]
        # Retrieved = returned by a search that found something it scored as an answer (above low_kb_score):
        # low-score results are the KB saying it has nothing on the question.
        hits = Counter(a for m in members if (m.get("kb_max_score") or 0.0) >= p.low_kb_score
                       for a in set(m["kb_articles"] or []))
        retrieved = np.array([hits.get(a[0], 0) / len(members) for a in published])
        routed = trust.routed_shares(members)
        label_share = trust.label_shares([labels_of[i] for i in idx])
        anchors = trust.anchor_shares([labels_of[i] for i in idx])
        domain = 1.0
        if kb_vocab is not None and tf.sum() > 0:
            domain = float(tf[kb_vocab].sum() / tf.sum())
        human = {}
        for m in members:
            for h in {m.get("human_intent"), m.get("human_category")} - {None}:
                human[h] = human.get(h, 0) + 1 / len(members)
        tp = Topic(t, idx, text_cos, answered_cos, answered_rel, label_share, anchors, human, routed, retrieved, None,
                   centroid, float(np.mean([bool(m["sig_kb_empty"] or m["sig_kb_low"]) for m in members])), domain)
        tp.members = members
        found = searched.returned[idx]
        tp.n_searched = int((found.sum(axis=1) > 0).sum())
        # The near misses typical of this topic rather than of every failing search.
        tp.search_profile = found.mean(axis=0, dtype=np.float32) - searched.background if found.shape[1] else np.zeros(0)
        # Routing to an article is trusted when the label is (its messages read like what that label's
        # answered conversations said) *and* the customers' own searches returned the article, if at a low
        # score, for most of the topic: a look-alike intent the KB lacks ("verify my identity" sent to "why
        # verify identity") reads like the article's questions too, but its searches mostly return others.
        returned = np.array([found[:, searched.index[a[0]]].mean(dtype=np.float32) if a[0] in searched.index and idx.size else 0.0
                             for a in published])
        trusted_share = np.array([sum(label_share.get(i, 0.0) for i in (a[3] or [])) for a in published])
        tp.trusted_routing = (trusted_share >= p.trusted_cover_share) & (returned >= p.routed_share)
        tp.covering = _covering(p, tp, published)
        top = [published.index(a) for a in published if next(iter(routed), None) in (a[3] or [])]
        log.debug("topic %s: n=%d domain %.2f routed %s rel_routed %s trusted %s answered %.2f text %.2f covering %s",
                  t, idx.size, domain, next(iter(routed.items()), None),
                  round(float(answered_rel[top[0]]), 2) if top else None, next(iter(label_share.items()), None), float(np.nanmax(answered_cos)) if np.isfinite(answered_cos).any() else -1,
                  float(tp.text_cos.max()) if tp.text_cos.size else -1, tp.covering)
        out.append(tp)
    return out


def _covering(p: GapParams, tp: Topic, published: list) -> int | None:
    """The article that covers the topic: close in text *and* routed to or retrieved; else None."""
    if not published:
        return None
    rel = np.nan_to_num(tp.answered_rel, nan=-1.0)
    close = (rel >= p.answered_cover_rel) | (tp.text_cos >= p.text_cover_cos)
    intents_share = np.array([sum(tp.routed.get(i, 0.0) for i in (a[3] or [])) for a in published])
    human_share = np.array([sum(tp.human.get(i, 0.0) for i in (a[3] or [])) for a in published])
    # Routing alone is not use when retrieval, which searched with the customer's own words, mostly came back
    # empty or low: the KB then says nothing answers the question, whatever class the agent picked. Unless
    # the routing is trusted (tp.trusted_routing: a trusted label, and searches that returned the article).
    # (Nor when the article is newer than most of the topic's failures: they missed because it did not exist.)
    starts = sorted(m["started_at"] for m in tp.members if m["started_at"] is not None)
    newer = np.array([a[6] is not None and bisect.bisect_left(starts, a[6]) / len(tp.members) > 0.5
                      for a in published])
    routed_ok = (intents_share >= p.routed_share) & ((tp.miss < p.absorb_miss_share) | newer | tp.trusted_routing)
    used = routed_ok | (tp.retrieved >= p.retrieved_share)
    # A person's label is a person's reading of the text: it covers the topic by itself.
    ok = np.flatnonzero((close & used) | (human_share >= p.routed_share))
    if not ok.size:
        return None
    score = np.maximum(rel, tp.text_cos) + human_share
    return int(ok[np.argmax(score[ok])])


def _merge_uncovered(p: GapParams, topics: list[Topic], sig_topic: np.ndarray) -> int:
    """Join uncovered topics that are one gap split by clustering (text-only vectors, when no label can be
    trusted, cluster tighter than labelled ones): close centroids, or fairly close and routed by the agent
    to the same intent. Changes `sig_topic` in place; returns how many topics were merged away."""
    open_topics = [tp for tp in topics if tp.covering is None]
    if len(open_topics) < 2:
        return 0
    parent = {tp.t: tp.t for tp in open_topics}

    def root(t: int) -> int:
        while parent[t] != t:
            t = parent[t]
        return t

    merged = 0
    for a_i, a in enumerate(open_topics):
        ra, sa = next(iter(a.routed.items()), (None, 0.0))
        for b in open_topics[a_i + 1:]:
            rb, sb = next(iter(b.routed.items()), (None, 0.0))
            cos = float(a.centroid @ b.centroid)
            same_route = ra is not None and ra == rb and min(sa, sb) >= p.routed_share
            # The agent's classifier keeps them apart (each mostly sent to its own intent): not one question.
            apart = ra is not None and rb is not None and ra != rb and min(sa, sb) >= p.routed_share
            if (cos >= p.merge_cos or (same_route and cos >= p.merge_routed_cos)
                    or (not apart and _same_near_misses(p, a, b))):
                x, y = root(a.t), root(b.t)
                if x != y:
                    parent[max(x, y)] = min(x, y)
                    merged += 1
    for tp in open_topics:
        sig_topic[tp.idx] = root(tp.t)
    return merged


def _same_near_misses(p: GapParams, a: Topic, b: Topic) -> bool:
    """Two uncovered topics whose KB searches keep returning the same near-miss articles (beyond what every
    failing search returns) are one question in different words: a search engine matches meaning that a bag
    of words misses ("forgot my passcode" / "lost my password"). Needs enough searches on both sides."""
    if min(a.n_searched, b.n_searched) < p.merge_search_min or a.search_profile is None or not a.search_profile.size:
        return False
    if min(a.domain, b.domain) < p.domain_min_share:
        return False  # foreign words: out of scope, whatever the search returned for it
    na, nb = float(np.linalg.norm(a.search_profile)), float(np.linalg.norm(b.search_profile))
    return na > 0 and nb > 0 and float(a.search_profile @ b.search_profile) / (na * nb) >= p.merge_search_cos


def _merge_same_cover(topics: list[Topic], sig_topic: np.ndarray) -> int:
    """Topics covered by the same article are one article to revise, not several."""
    first: dict[int, int] = {}
    merged = 0
    for tp in topics:
        if tp.covering is None:
            continue
        if tp.covering in first:
            sig_topic[tp.idx] = first[tp.covering]
            merged += 1
        else:
            first[tp.covering] = tp.t
    return merged


def _absorb(p: GapParams, topics: list[Topic], sig: list, sem: np.ndarray, sig_topic: np.ndarray) -> int:
    """Failing conversations that read like a missing-article topic, and that retrieval could not answer,
    belong to that gap even when they were routed to a covered topic (classifier confusion): a covered topic
    whose text is close to a missing-article topic hands over its retrieval misses, each to the missing
    topic nearest its own text. Changes `sig_topic` in place; returns how many moved."""
    open_topics = [tp for tp in topics if tp.covering is None and tp.domain >= p.domain_min_share]
    if not open_topics:
        return 0
    missed = np.array([bool(r["sig_kb_empty"] or r["sig_kb_low"]) for r in sig])
    open_ids = np.array([tp.t for tp in open_topics])
    open_cents = np.vstack([tp.centroid for tp in open_topics])
    moved = 0
    for tp in topics:
        if tp.covering is None or tp.miss < p.absorb_miss_share:
            continue
        sims = open_cents @ tp.centroid
        if sims.max() >= p.absorb_cos:
            take = tp.idx[missed[tp.idx]]
            sig_topic[take] = open_ids[(sem[take] @ open_cents.T).argmax(axis=1)]
            moved += len(take)
    return moved


def _merge_same_anchor(topic: np.ndarray, labels: list, p: GapParams) -> np.ndarray:
    """Topics anchored on the same trusted intent are one gap, not several (clustering can split one)."""
    from feedback_loop.gaps.topics import NOISE, _renumber

    anchors: dict[str, int] = {}
    out = topic.copy()
    for t in range(int(topic.max()) + 1 if topic.size else 0):
        idx = np.flatnonzero(topic == t)
        main = next(iter(trust.anchor_shares([labels[i] for i in idx]).items()), (None, 0.0))
        if main[0] and main[1] >= p.label_anchor_share:
            if main[0] in anchors:
                out[idx] = anchors[main[0]]
            else:
                anchors[main[0]] = t
    out[topic == NOISE] = NOISE
    return _renumber(out, 1)


def signal_counts(members: list) -> str:
    return json.dumps({s: sum(map(bool, column_of(members, f"sig_{s}"))) for s in SIGNALS}, sort_keys=True)
