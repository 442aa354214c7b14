"""Metrics for a split, and the naive baselines every number is compared with."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn import metrics as skm


def to_predictions(out: Any, classes: list[str] | None,
                   target: dict[str, float] | None) -> tuple[np.ndarray, np.ndarray | None]:
    """(predictions, probabilities or None) from a model's raw outputs (a CPU tensor), in the
    target's own units (`target`: the training split's scaling of a regression target)."""
    import torch

    if classes is not None:
        proba = torch.softmax(out, dim=1).numpy()
        return proba.argmax(axis=1), proba
    pred = out[:, 0].numpy().astype(np.float64)
    if target:
        pred = pred * target["scale"] + target["center"]
    return pred, None


def split_metrics(y_true: np.ndarray, pred: np.ndarray, proba: np.ndarray | None,
                  classes: list[str] | None) -> dict[str, Any]:
    """A split's metrics: classification's with `classes`, else regression's."""
    if classes is not None:
        return classification_metrics(y_true, pred, classes, proba)
    return regression_metrics(y_true.astype(np.float64), pred)


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str],
                           proba: np.ndarray | None = None) -> dict[str, Any]:
    if len(y_true) == 0:
        return {}
    labels = list(range(len(classes)))
    p, r, f, support = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0)
    out: dict[str, Any] = {
        "n": int(len(y_true)),
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(y_true, y_pred))
        if len(np.unique(y_true)) > 1 else float(skm.accuracy_score(y_true, y_pred)),
        "precision_macro": float(np.mean(p)),
        "recall_macro": float(np.mean(r)),
        "f1_macro": float(np.mean(f)),
        "per_class": {c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                          "support": int(support[i])} for i, c in enumerate(classes)},
    }
    if len(classes) == 2:
        out["f1_positive"] = float(f[1])
        if proba is not None and len(np.unique(y_true)) == 2:
            out["roc_auc"] = float(skm.roc_auc_score(y_true, proba[:, 1]))
    if proba is not None:
        eps = 1e-12
        out["log_loss"] = float(-np.mean(np.log(proba[np.arange(len(y_true)), y_true] + eps)))
    return out


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
    mask = ~(np.isnan(y_true) | np.isnan(y_pred))
    y_true, y_pred = y_true[mask], y_pred[mask]
    if len(y_true) == 0:
        return {}
    return {
        "n": int(len(y_true)),
        "rmse": float(np.sqrt(skm.mean_squared_error(y_true, y_pred))),
        "mae": float(skm.mean_absolute_error(y_true, y_pred)),
        "r2": float(skm.r2_score(y_true, y_pred)) if len(y_true) > 1 else float("nan"),
    }


def baseline(task: str, y_train: np.ndarray, y_test: np.ndarray, classes: list[str] | None,
             today: np.ndarray | None) -> dict[str, Any]:
    """Majority class / training mean; for a shifted target, today's value as tomorrow's."""
    if len(y_test) == 0:
        return {}
    if task == "classification":
        if today is not None and (today >= 0).all():
            pred, kind = today, "persistence (today's label as tomorrow's)"
        else:
            majority = int(np.bincount(y_train).argmax())
            pred, kind = np.full_like(y_test, majority), f"majority class ({classes[majority]})"
        return {"kind": kind, **classification_metrics(y_test, pred, classes)}
    if today is not None and not np.isnan(today).all():
        return {"kind": "persistence (today's value as tomorrow's)",
                **regression_metrics(y_test.astype(np.float64), today)}
    mean = float(np.mean(y_train))
    return {"kind": f"training mean ({mean:.4g})",
            **regression_metrics(y_test.astype(np.float64), np.full(len(y_test), mean))}


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    return skm.confusion_matrix(y_true, y_pred, labels=list(range(n_classes)))
