"""Classification metrics, all from scikit-learn, in one JSON-ready shape."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from fer_core.labels import EMOTIONS


def summary_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Accuracy and macro-F1: the two numbers training logs every epoch.

    Macro-F1 averages over the classes that occur in the labels or the predictions (scikit-learn's default): a
    class absent from both, as `disgust` can be from a small `--val-limit` or custom set, has no F1 to count as 0.
    """
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
    }


def classification_report(y_true: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix."""
    labels = list(range(len(EMOTIONS)))
    y_pred = probs.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    report: dict[str, Any] = summary_metrics(y_true, y_pred)
    report["per_class"] = {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(EMOTIONS)
    }
    report["confusion"] = confusion_matrix(y_true, y_pred, labels=labels).tolist()
    return report
