"""A small but real local trainer for the command backend (and its tests): TRL-format files in, a fitted
model out.

    python -m feedback_loop.retrain.train_command --train trl/train.jsonl [--validation trl/validation.jsonl]
        --output DIR [--base-model NAME]

It fits a retrieval response model: TF-IDF over each example's conversation so far (the prompt) and a
nearest-neighbour index that answers a new prompt with the target response of the closest training
prompt (the assistant turn of an SFT example, the chosen response of a preference pair). It reports the
tokens it trained on (cl100k_base, like the datasets' budget), and on the validation file the mean TF-IDF
cosine between the retrieved and the reference response. Output: `model.joblib` and `result.json`
({model, trained_tokens, examples, metrics}). It stands in for a real trainer (TRL's SFTTrainer /
DPOTrainer behind the same command line) where there is no GPU.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys


def _text(messages) -> str:
    return "\n".join(m.get("content") or "" for m in messages if m.get("role") != "system")


def examples(path: str) -> list[tuple[str, str]]:
    """(prompt, target response) pairs from TRL messages or TRL preference records."""
    out = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            r = json.loads(line)
            if "messages" in r:
                msgs = r["messages"]
                last = max(i for i, m in enumerate(msgs) if m["role"] == "assistant")
                out.append((_text(msgs[:last]), msgs[last]["content"]))
            elif "chosen" in r:
                out.append((_text(r["prompt"]), r["chosen"][-1]["content"]))
            else:
                raise ValueError(f"{path}: neither TRL messages nor TRL preference records")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--train", required=True)
    ap.add_argument("--validation", default="")
    ap.add_argument("--output", required=True)
    ap.add_argument("--base-model", default="local")
    args = ap.parse_args(argv)

    import joblib
    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.neighbors import NearestNeighbors

    from feedback_loop.datasets import tokens

    train = examples(args.train)
    if not train:
        print("no training examples", file=sys.stderr)
        return 2
    prompts, responses = zip(*train)
    vec = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2)).fit(list(prompts) + list(responses))
    index = NearestNeighbors(n_neighbors=1, metric="cosine").fit(vec.transform(prompts))
    trained_tokens = sum(tokens.count(p) + tokens.count(r) for p, r in train)
    metrics = {"train_examples": len(train), "vocabulary": len(vec.vocabulary_)}
    if args.validation and os.path.exists(args.validation):
        val = examples(args.validation)
        if val:
            vp, vr = zip(*val)
            _, nn = index.kneighbors(vec.transform(vp))
            got = vec.transform([responses[i] for i in nn[:, 0]])
            want = vec.transform(vr)
            cos = np.asarray(got.multiply(want).sum(axis=1)).ravel()
            metrics.update(validation_examples=len(val), validation_response_cosine=round(float(cos.mean()), 4))
    os.makedirs(args.output, exist_ok=True)
    joblib.dump({"vectorizer": vec, "index": index, "responses": list(responses)}, os.path.join(args.output, "model.joblib"))
    with open(args.train, "rb") as fh:
        digest = hashlib.sha256(fh.read()).hexdigest()[:12]
    result = {"model": f"local:{args.base_model}:acsr-{digest}", "trained_tokens": trained_tokens,
              "examples": len(train), "metrics": metrics, "model_file": os.path.join(args.output, "model.joblib")}
    with open(os.path.join(args.output, "result.json"), "w") as fh:
        json.dump(result, fh, indent=2)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
