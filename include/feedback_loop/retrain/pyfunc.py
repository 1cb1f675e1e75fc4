"""The intent classifier as the agent loads it from the registry: an MLflow pyfunc model.

    import mlflow
    model = mlflow.pyfunc.load_model("models:/acsr-intent-classifier@champion")
    model.predict(pd.DataFrame({"text": ["I lost my card"]}))   # -> DataFrame: intent, confidence

Why a pyfunc wrapper and not the sklearn flavour: the sklearn flavour's predict returns labels only, and the
agent needs the calibrated confidence too (to ask, escalate or act). Input: a DataFrame with a `text`
column, a Series or a list of strings. Output: one row per text, `intent` and `confidence` (the
temperature-scaled probability of that intent). Imported only where MLflow is (registering, loading).
"""

from __future__ import annotations

import mlflow.pyfunc


class IntentClassifierModel(mlflow.pyfunc.PythonModel):
    """Wraps the fitted pipeline stored as the artifact `model` (a joblib file)."""

    def load_context(self, context):
        import joblib

        self.model = joblib.load(context.artifacts["model"])

    def predict(self, context, model_input, params=None):
        import pandas as pd

        from feedback_loop.retrain import intent_model

        if isinstance(model_input, pd.DataFrame):
            texts = model_input["text"] if "text" in model_input.columns else model_input.iloc[:, 0]
        else:
            texts = model_input
        texts = [str(t) for t in list(texts)]
        if not texts:
            return pd.DataFrame({"intent": pd.Series([], dtype=str), "confidence": pd.Series([], dtype=float)})
        labels, conf = intent_model.predict(self.model, texts)
        return pd.DataFrame({"intent": [str(x) for x in labels], "confidence": [float(c) for c in conf]})
