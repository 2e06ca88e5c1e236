"""The two probes on frozen features, from scikit-learn.

Linear: features standardised on the training split, multinomial logistic regression
(lbfgs) for each C, the C with the best validation accuracy kept, as the MAE and CLIP
papers select their probe's regularisation. k-NN: the k training examples with the
highest cosine similarity vote (scikit-learn's brute-force search), as DINO reports it
(DINO weighs the votes by similarity; a plain majority keeps this one reproducible by
anyone with scikit-learn). Both are deterministic.
"""
from __future__ import annotations

import warnings
from typing import Any


def linear_probe(x: dict[str, Any], y: dict[str, Any], c_values: list[float], max_iter: int) -> dict[str, Any]:
    """{'C', 'validation_accuracy', 'test_accuracy' (when a test split exists),
    'validation_accuracy_by_C', 'converged'}."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x["train"])
    scaled = {split: scaler.transform(values) for split, values in x.items()}
    by_c, models, converged = {}, {}, {}
    for c in sorted(c_values):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            model = LogisticRegression(C=c, max_iter=max_iter).fit(scaled["train"], y["train"])
        converged[c] = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
        by_c[c] = float(accuracy_score(y["validation"], model.predict(scaled["validation"])))
        models[c] = model
    best = max(by_c, key=lambda c: (by_c[c], -c))  # ties: the stronger regularisation
    out = {"C": best, "validation_accuracy": by_c[best], "converged": converged[best],
           "validation_accuracy_by_C": {str(c): v for c, v in by_c.items()}}
    if "test" in scaled:
        out["test_accuracy"] = float(accuracy_score(y["test"], models[best].predict(scaled["test"])))
    return out


def knn_probe(x: dict[str, Any], y: dict[str, Any], k: int) -> dict[str, Any]:
    """{'k', 'validation_accuracy', 'test_accuracy' (when a test split exists)}."""
    from sklearn.metrics import accuracy_score
    from sklearn.neighbors import KNeighborsClassifier

    k = min(k, len(y["train"]))
    model = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute").fit(x["train"], y["train"])
    out = {"k": k, "validation_accuracy": float(accuracy_score(y["validation"], model.predict(x["validation"])))}
    if "test" in x:
        out["test_accuracy"] = float(accuracy_score(y["test"], model.predict(x["test"])))
    return out
