"""A deploy step's gate: the metrics it may compare, and the decision, as pure functions.

A pipeline's deploy step (``type: deploy`` in ``pipeline.yaml``) deploys its model only
when it beats the model in production on held-out data::

    gate:
      metric: rmse
      direction: minimize
      min_delta: 0.01
      data: steps.split.files.holdout

:data:`METRICS` is the table of metrics a gate may name, each a function of
``(y_true, y_pred)`` from :mod:`sklearn.metrics`; :func:`score` computes one and
:func:`decide` compares the candidate's figure with production's. Both run in the
deploy step's notebook (:mod:`hub_ext.runtime.deploy_step`), as the pipeline's owner;
the scheduler imports only the metric names, to refuse a file that names another
(the table is the one list, so the check and the step cannot disagree).

The metrics and what they mean
------------------------------

=========== ============================================================ ==========
metric      what it is (``sklearn.metrics``)                              better
=========== ============================================================ ==========
rmse        root of the mean squared error                               minimize
mae         mean absolute error                                          minimize
r2          coefficient of determination                                 maximize
accuracy    share of exact predictions                                   maximize
f1          F1 score (see below for binary or macro)                     maximize
precision   precision (binary or macro, as f1)                           maximize
recall      recall (binary or macro, as f1)                              maximize
=========== ============================================================ ==========

``f1``, ``precision`` and ``recall`` are **binary** (the positive class is ``1``,
or ``True``) when the held-out target's labels are within ``{0, 1}``, and the
**macro** average over the target's labels otherwise. The choice depends on the
data only, never on the predictions, so both models are scored the same way on
the same file. Rejected: always macro (on a binary problem it mixes in the
negative class, which hides a model that stopped finding positives) and always
binary (it refuses every multi-class target). A label never predicted scores 0
(``zero_division=0``) instead of warning.

The direction is the file's (a gate says ``direction`` explicitly); the table's
``better`` is documentation and the default a file's example uses.

The decision
------------

``passed`` when the candidate is better than production by at least
``min_delta`` in the gate's direction (``candidate - production >= min_delta``
for ``maximize``, ``production - candidate >= min_delta`` for ``minimize``);
``passed`` too when nothing is in production yet; else ``refused``. A candidate
whose figure is not a number (NaN: a model that predicts NaN) is refused, and
production's NaN lets any numeric candidate pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["METRICS", "Decision", "Metric", "check_metric", "decide", "score"]


@dataclass(frozen=True)
class Metric:
    """One metric a gate may compare."""

    #: What it is, for messages and docs.
    doc: str
    #: The direction in which it is better.
    better: str
    #: ``compute(y_true, y_pred)``.
    compute: Callable[[Any, Any], float]


def _labels_are_binary(y_true: Any) -> bool:
    values = {v.item() if hasattr(v, "item") else v for v in _unique(y_true)}
    return values <= {0, 1}


def _unique(values: Any) -> list[Any]:
    import numpy

    return list(numpy.unique(numpy.asarray(values)))


def _classification(name: str) -> Callable[[Any, Any], float]:
    def compute(y_true: Any, y_pred: Any) -> float:
        from sklearn import metrics

        fn = getattr(metrics, f"{name}_score")
        if _labels_are_binary(y_true):
            return float(fn(y_true, y_pred, average="binary", pos_label=1, zero_division=0))
        return float(fn(y_true, y_pred, average="macro", zero_division=0))

    return compute


def _rmse(y_true: Any, y_pred: Any) -> float:
    from sklearn.metrics import mean_squared_error

    return math.sqrt(float(mean_squared_error(y_true, y_pred)))


def _mae(y_true: Any, y_pred: Any) -> float:
    from sklearn.metrics import mean_absolute_error

    return float(mean_absolute_error(y_true, y_pred))


def _r2(y_true: Any, y_pred: Any) -> float:
    from sklearn.metrics import r2_score

    return float(r2_score(y_true, y_pred))


def _accuracy(y_true: Any, y_pred: Any) -> float:
    from sklearn.metrics import accuracy_score

    return float(accuracy_score(y_true, y_pred))


#: The metrics a gate may name (the module docstring says what each is).
METRICS: dict[str, Metric] = {
    "rmse": Metric("root mean squared error", "minimize", _rmse),
    "mae": Metric("mean absolute error", "minimize", _mae),
    "r2": Metric("coefficient of determination", "maximize", _r2),
    "accuracy": Metric("share of exact predictions", "maximize", _accuracy),
    "f1": Metric(
        "F1 score (binary for 0/1 targets, else macro)", "maximize", _classification("f1")
    ),
    "precision": Metric(
        "precision (binary for 0/1 targets, else macro)", "maximize", _classification("precision")
    ),
    "recall": Metric(
        "recall (binary for 0/1 targets, else macro)", "maximize", _classification("recall")
    ),
}


def check_metric(name: str) -> Metric:
    """The metric ``name``; a ``ValueError`` naming every metric there is for another."""
    try:
        return METRICS[name]
    except KeyError:
        raise ValueError(
            f"the gate's metric {name!r} is not one Shipyard computes: use one of "
            f"{', '.join(METRICS)}"
        ) from None


def score(name: str, y_true: Any, y_pred: Any) -> float:
    """Metric ``name`` of predictions ``y_pred`` against ``y_true``.

    Raises
    ------
    ValueError
        An unknown metric (the message lists the table), or predictions and target of
        different lengths.
    """
    metric = check_metric(name)
    if len(y_true) != len(y_pred):
        raise ValueError(
            f"the model made {len(y_pred)} predictions for {len(y_true)} rows: it must "
            "predict one value per row of the held-out data"
        )
    if len(y_true) == 0:
        raise ValueError("the held-out data has no rows: the gate needs at least one")
    return metric.compute(y_true, y_pred)


@dataclass(frozen=True)
class Decision:
    """What the gate decided, with the figures it compared."""

    #: ``passed`` or ``refused``.
    decision: str
    metric: str
    candidate: float
    #: Production's figure; None when nothing is in production.
    production: float | None
    #: Why, in a sentence with both figures.
    reason: str

    @property
    def passed(self) -> bool:
        return self.decision == "passed"


def decide(
    metric: str,
    direction: str,
    min_delta: float,
    candidate: float,
    production: float | None,
) -> Decision:
    """Whether the candidate may deploy (see the module docstring's "The decision").

    Raises
    ------
    ValueError
        ``direction`` is neither ``maximize`` nor ``minimize``, or ``min_delta`` is
        negative.
    """
    if direction not in ("maximize", "minimize"):
        raise ValueError(f"direction must be maximize or minimize, not {direction!r}")
    if min_delta < 0:
        raise ValueError(f"min_delta must be 0 or more, not {min_delta}")
    better = "larger" if direction == "maximize" else "smaller"
    if math.isnan(candidate):
        return Decision(
            "refused",
            metric,
            candidate,
            production,
            f"refused: the candidate's {metric} is not a number (does it predict NaN?)",
        )
    if production is None:
        return Decision(
            "passed",
            metric,
            candidate,
            None,
            f"passed: nothing in production; the candidate's {metric} is {candidate:.6g}",
        )
    if math.isnan(production):
        return Decision(
            "passed",
            metric,
            candidate,
            production,
            f"passed: production's {metric} is not a number; the candidate's is {candidate:.6g}",
        )
    gain = candidate - production if direction == "maximize" else production - candidate
    figures = (
        f"candidate {metric} {candidate:.6g}, production {production:.6g} "
        f"({better} is better, min_delta {min_delta:g})"
    )
    # a tolerance of a few ulps: 0.3 - 0.2 >= 0.1 must hold as written in the file
    if gain >= min_delta - 1e-12 * max(1.0, abs(candidate), abs(production)):
        return Decision("passed", metric, candidate, production, f"passed: {figures}")
    return Decision(
        "refused",
        metric,
        candidate,
        production,
        f"refused: {figures}: the candidate is not better by min_delta",
    )
