"""Input drift of a served model: a training summary and the population stability index.

:func:`summarize` turns the training data into a small JSON-serialisable summary
that travels with a deployment (the notebook side sends it, the deployer hands it
to every replica as ``--training-summary PATH``):

- a numeric feature keeps its decile edges (the 10 %, 20 %, …, 90 % quantiles,
  duplicates dropped) and the share of training rows in each of the bins they cut,
  plus the share of missing values and the training range (``min``, ``max``);
- any other feature (strings, categories, booleans) keeps its most frequent
  categories with their shares, and the share of everything else (``"other"``,
  missing values included), the share of missing values, and every category the
  training data had (``domain``) when there are at most :data:`MAX_DOMAIN` of them.

The ranges and categories are what :mod:`.quality` checks each request against
(summary version 2); a version 1 summary, written before they were recorded, still
gives drift.

:class:`DriftTracker` counts the rows the model server has seen into the same
bins, one batch at a time (``numpy.searchsorted`` on the batch's column, so a
batch of 64 rows costs microseconds), and :func:`psi` compares the two
distributions per feature:

.. math:: PSI = \\sum_i (a_i - e_i) \\ln(a_i / e_i)

with ``e`` the training shares and ``a`` the shares seen, both floored at
:data:`EPSILON` so an empty bin does not make it infinite. The usual reading is
below 0.1 stable, 0.1-0.25 moderate shift, above 0.25 a large shift.

Rejected: keeping the rows seen and recomputing quantiles (memory grows with
traffic, and every ``/stats`` call would sort them); a KS test per feature
(needs the training data itself, not a summary, and says nothing for
categories). Only the standard library, numpy and pandas are imported: this
module runs inside the model server, on the model's environment.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np

#: version of the summary format written by :func:`summarize` (2: ``min``, ``max``,
#: ``domain`` and the categorical ``missing`` added; readers accept 1)
SUMMARY_VERSION = 2
#: a categorical feature with more categories than this keeps no ``domain``
MAX_DOMAIN = 500
#: shares below this count as this, in both distributions, when computing PSI
EPSILON = 1e-4
#: PSI is reported once at least this many rows were seen
MIN_ROWS = 100


def _is_numeric(series) -> bool:
    import pandas as pd

    return pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(
        series.dtype
    )


def summarize(df, bins: int = 10, top: int = 10) -> dict:
    """Summarise training data for drift detection.

    Parameters
    ----------
    df : pandas.DataFrame
        The training inputs, one column per model input (the columns the
        signature names).
    bins : int
        Number of quantile bins for numeric features (10: deciles).
    top : int
        Number of most frequent categories kept for the other features.

    Returns
    -------
    dict
        ``{"version": 2, "rows": N, "features": {name: feature}}`` where a numeric
        feature is ``{"kind": "numeric", "edges": [...], "proportions": [...],
        "missing": share, "min": x, "max": y}`` (``len(proportions) == len(edges) +
        1``; no ``min``/``max`` without values) and another is ``{"kind":
        "categorical", "categories": [...], "proportions": [...], "missing": share,
        "domain": [...]}`` whose last proportion is the share of ``"other"``
        (``domain``: every category, sorted, absent past :data:`MAX_DOMAIN`).
        Plain JSON types only.
    """
    features: dict[str, dict] = {}
    n = len(df)
    for name in df.columns:
        col = df[name]
        if _is_numeric(col):
            values = col.to_numpy(dtype=float, na_value=np.nan)
            present = values[~np.isnan(values)]
            if len(present):
                qs = np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1])
                edges = np.unique(qs)
            else:
                edges = np.array([], dtype=float)
            counts = np.bincount(
                np.searchsorted(edges, present, side="right"), minlength=len(edges) + 1
            )
            numeric: dict[str, Any] = {
                "kind": "numeric",
                "edges": [float(e) for e in edges],
                "proportions": [float(c) / n if n else 0.0 for c in counts],
                "missing": float(n - len(present)) / n if n else 0.0,
            }
            if len(present):
                numeric["min"] = float(present.min())
                numeric["max"] = float(present.max())
            features[str(name)] = numeric
        else:
            freq = col.astype(str).where(col.notna(), None).value_counts(dropna=True)
            cats = [str(c) for c in freq.index[:top]]
            shares = [float(v) / n if n else 0.0 for v in freq.iloc[:top]]
            categorical: dict[str, Any] = {
                "kind": "categorical",
                "categories": cats,
                "proportions": [*shares, max(0.0, 1.0 - sum(shares))],
                "missing": float(col.isna().sum()) / n if n else 0.0,
            }
            if len(freq) <= MAX_DOMAIN:
                categorical["domain"] = sorted(str(c) for c in freq.index)
            features[str(name)] = categorical
    return {"version": SUMMARY_VERSION, "rows": int(n), "features": features}


def _psi_one(expected, actual) -> float:
    e = np.maximum(np.asarray(expected, dtype=float), EPSILON)
    a = np.maximum(np.asarray(actual, dtype=float), EPSILON)
    return float(np.sum((a - e) * np.log(a / e)))


def psi(summary: Mapping[str, Any], counts: Mapping[str, Any]) -> dict[str, float]:
    """Population stability index per feature.

    Parameters
    ----------
    summary : Mapping
        A training summary from :func:`summarize`.
    counts : Mapping
        Per feature, the counts of rows seen in each of the summary's bins, in the
        order of its ``proportions`` (numeric features: one more for missing
        values), as :meth:`DriftTracker.counts` returns them.

    Returns
    -------
    dict
        ``{feature: psi}`` for the features present in both; a feature with no
        rows counted is left out.
    """
    out: dict[str, float] = {}
    for name, feature in summary.get("features", {}).items():
        seen = counts.get(name)
        if seen is None:
            continue
        seen = np.asarray(seen, dtype=float)
        total = seen.sum()
        if total <= 0:
            continue
        expected = list(feature["proportions"])
        if feature["kind"] == "numeric":
            expected.append(feature.get("missing", 0.0))
        if len(expected) != len(seen):
            continue
        value = _psi_one(expected, seen / total)
        out[name] = round(value, 6) if math.isfinite(value) else value
    return out


class DriftTracker:
    """Counts the rows a model server has seen into a training summary's bins.

    Thread-safe: :meth:`update` runs on the prediction thread, :meth:`psi` on
    the event loop.

    Parameters
    ----------
    summary : Mapping
        A training summary from :func:`summarize` (read from ``--training-summary``).
    """

    def __init__(self, summary: Mapping[str, Any]):
        if not isinstance(summary, Mapping) or not isinstance(summary.get("features"), Mapping):
            raise ValueError("a training summary is a JSON object with a 'features' object")
        self.summary = summary
        self._lock = threading.Lock()
        self.rows_seen = 0
        self._edges: dict[str, np.ndarray] = {}
        self._categories: dict[str, dict[str, int]] = {}
        self._counts: dict[str, np.ndarray] = {}
        for name, feature in summary["features"].items():
            if feature.get("kind") == "numeric":
                edges = np.asarray(feature["edges"], dtype=float)
                self._edges[name] = edges
                # one bin per gap between edges, plus one for missing values
                self._counts[name] = np.zeros(len(edges) + 2, dtype=np.int64)
            elif feature.get("kind") == "categorical":
                cats = list(feature["categories"])
                self._categories[name] = {c: i for i, c in enumerate(cats)}
                self._counts[name] = np.zeros(len(cats) + 1, dtype=np.int64)
            else:
                raise ValueError(f"feature {name!r}: unknown kind {feature.get('kind')!r}")

    def update(self, df) -> None:
        """Count the rows of one batch.

        Parameters
        ----------
        df : pandas.DataFrame
            The rows just predicted; features missing from it are not counted.
        """
        n = len(df)
        if not n:
            return
        partial: dict[str, np.ndarray] = {}
        for name, edges in self._edges.items():
            if name not in df.columns:
                continue
            try:
                values = np.asarray(df[name].to_numpy(dtype=float, na_value=np.nan), dtype=float)
            except (TypeError, ValueError):
                continue
            missing = np.isnan(values)
            idx = np.searchsorted(edges, values[~missing], side="right")
            counts = np.bincount(idx, minlength=len(edges) + 1)
            partial[name] = np.append(counts, int(missing.sum()))
        for name, index in self._categories.items():
            if name not in df.columns:
                continue
            counts = np.zeros(len(index) + 1, dtype=np.int64)
            other = len(index)
            for value in df[name].tolist():
                counts[index.get(str(value), other) if value is not None else other] += 1
            partial[name] = counts
        with self._lock:
            self.rows_seen += n
            for name, counts in partial.items():
                self._counts[name] += counts

    def counts(self) -> dict[str, list[int]]:
        """Rows seen per bin and feature (a copy), as :func:`psi` takes them."""
        with self._lock:
            return {name: c.tolist() for name, c in self._counts.items()}

    def psi(self) -> dict[str, float]:
        """PSI per feature, or ``{}`` while fewer than :data:`MIN_ROWS` rows were seen."""
        if self.rows_seen < MIN_ROWS:
            return {}
        return psi(self.summary, self.counts())
