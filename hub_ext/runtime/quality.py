"""Data quality of a served model's inputs: each request checked against the signature and the training summary.

:class:`Expectations` is built once per replica from the model's signature (column
names, MLflow types, required or optional) and the training summary of
:mod:`.drift` (each numeric feature's training range, each categorical feature's
categories). :func:`check` then counts, for one DataFrame of inputs, the values with an
issue of each :data:`KINDS`, per feature:

- ``schema_violation``: a required column of the signature is absent (one per row),
  a column the signature does not name is present (one per row, feature
  :data:`OTHER`), or a value is not of its column's type (a string in a ``double``
  column, a fraction in a ``long`` one, a number in a ``string`` one);
- ``missing_value``: a value is missing (``None`` or NaN), or an optional column is
  absent (one per row);
- ``out_of_range``: a numeric value lies outside the training data's
  ``[min, max]``, widened on both sides by ``margin`` times its width;
- ``unseen_category``: a categorical value the training data never had.

The checks never refuse anything: what MLflow's schema enforcement refuses keeps its
400 answer, everything else is predicted as before and only counted. They are
vectorised over the batch (numpy comparisons, ``isna``, ``isin``); only an object
column under a non-string type is looked at value by value.

A summary written before training ranges and categories were recorded (its
features have no ``min``/``max`` or ``domain``) gets the schema and missing-value
checks only, and so does a model deployed without a summary. Feature labels are the
signature's columns and the summary's features, nothing a caller chooses, so the
number of series stays bounded. Only the standard library, numpy and pandas are
imported: this module runs inside the model server, on the model's environment.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: The kinds of issue, in the order they are reported.
KINDS = ("schema_violation", "missing_value", "out_of_range", "unseen_category")
#: The feature label of columns the signature does not name (whatever their names).
OTHER = "_other"

_NUMERIC = frozenset({"double", "float", "long", "integer"})
_INTEGRAL = frozenset({"long", "integer"})


@dataclass(frozen=True)
class Column:
    """One column of a model's signature: its name, MLflow type name and whether it is required."""

    name: str
    type: str
    required: bool = True


@dataclass
class Expectations:
    """What a replica checks its inputs against, built once (:meth:`build`).

    Attributes
    ----------
    columns : dict
        The signature's columns by name (empty without a column-based signature).
    ranges : dict
        ``{feature: (low, high)}``: the training range, widened by the margin.
    domains : dict
        ``{feature: frozenset of str}``: every category the training data had.
    features : tuple
        Every feature label a count may carry (bounded: the signature's columns,
        the summary's features and :data:`OTHER`).
    """

    columns: dict[str, Column] = field(default_factory=dict)
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    domains: dict[str, frozenset[str]] = field(default_factory=dict)
    features: tuple[str, ...] = ()

    def __post_init__(self):
        #: the features checked beyond the signature's columns (the summary's)
        self.labels = frozenset(self.features) - {OTHER}

    @classmethod
    def build(
        cls,
        columns: Iterable[Column] = (),
        summary: Mapping[str, Any] | None = None,
        margin: float = 0.0,
    ) -> Expectations:
        """Expectations from a signature's columns and a training summary.

        Parameters
        ----------
        columns : iterable of Column
            The signature's input columns; none for a tensor signature or none at all.
        summary : Mapping, optional
            A training summary from :func:`.drift.summarize`; an older one without
            ranges or categories is accepted (those checks are then off).
        margin : float
            How far outside the training range a value may lie before it counts as
            out of range, as a share of the range's width (0: the range itself).
        """
        if margin < 0:
            raise ValueError(f"margin must be at least 0, not {margin}")
        cols = {c.name: c for c in columns}
        ranges: dict[str, tuple[float, float]] = {}
        domains: dict[str, frozenset[str]] = {}
        features = (summary or {}).get("features") or {}
        for name, feature in features.items():
            if not isinstance(feature, Mapping):
                continue
            if feature.get("kind") == "numeric":
                low, high = feature.get("min"), feature.get("max")
                if isinstance(low, int | float) and isinstance(high, int | float) and low <= high:
                    pad = (float(high) - float(low)) * margin
                    ranges[str(name)] = (float(low) - pad, float(high) + pad)
            elif feature.get("kind") == "categorical":
                domain = feature.get("domain")
                if isinstance(domain, list):
                    domains[str(name)] = frozenset(str(v) for v in domain)
        labels = dict.fromkeys([*cols, *(str(n) for n in features)])
        if cols:
            labels[OTHER] = None
        return cls(cols, ranges, domains, tuple(labels))

    def pairs(self) -> list[tuple[str, str]]:
        """Every ``(kind, feature)`` a count may have: the series a replica exports."""
        signature = [*self.columns, OTHER] if self.columns else []
        return [
            *(("schema_violation", f) for f in signature),
            *(("missing_value", f) for f in self.features if f != OTHER),
            *(("out_of_range", f) for f in self.ranges),
            *(("unseen_category", f) for f in self.domains),
        ]

    @property
    def empty(self) -> bool:
        """True when there is nothing to check against."""
        return not self.columns and not self.ranges and not self.domains and not self.features


#: Object columns of at most this many rows are checked in one pass over their values
#: (faster than numpy and pandas calls for a few rows); longer ones with vectorised calls.
SMALL = 64


def _missing(v: Any) -> bool:
    """True for ``None``, NaN (float or numpy), ``pandas.NA`` and ``NaT``."""
    if v is None:
        return True
    try:
        return bool(v != v)  # NaN and NaT are the values not equal to themselves
    except TypeError:  # pandas.NA: comparisons with it are NA, which has no truth value
        return type(v).__name__ == "NAType"
    except ValueError:  # arrays: elementwise comparisons
        return False


def _accepts(type_name: str, v: Any) -> bool:
    """Whether the non-missing value ``v`` is of the MLflow type ``type_name``."""
    if type_name in _NUMERIC:
        if isinstance(v, bool | np.bool_):
            return False
        if isinstance(v, int | np.integer):
            return True
        return isinstance(v, float | np.floating) and (
            type_name not in _INTEGRAL or float(v).is_integer()
        )
    if type_name == "string":
        return isinstance(v, str)
    if type_name == "boolean":
        return isinstance(v, bool | np.bool_)
    return True  # binary, datetime, arrays, objects: presence only


#: what ``pandas.api.types.infer_dtype`` answers for object columns wholly of each type
_INFERRED_OK = {
    "double": ("integer", "floating", "mixed-integer-float", "empty"),
    "float": ("integer", "floating", "mixed-integer-float", "empty"),
    "long": ("integer", "empty"),
    "integer": ("integer", "empty"),
    "string": ("string", "empty"),
    "boolean": ("boolean", "empty"),
}


def _column_arrays(df) -> list[tuple[Any, Any]]:
    """``(name, array)`` per column: numpy arrays or pandas extension arrays, without copies."""
    arrays = getattr(df, "_iter_column_arrays", None)  # ~1 us a column, where df[name] is ~10
    if arrays is not None:
        try:
            return list(zip(df.columns.tolist(), arrays(), strict=True))
        except Exception:  # noqa: BLE001, S110 - a pandas without it: the public way below
            pass
    return [(name, df.iloc[:, i].array) for i, name in enumerate(df.columns.tolist())]


def _as_checked(arr) -> np.ndarray:
    """A column as a numpy array: float (NaN for missing) for nullable numbers, else as is
    or objects."""
    if isinstance(arr, np.ndarray):
        return arr
    if arr.dtype.kind in "iuf":
        return arr.to_numpy(dtype=float, na_value=np.nan)
    return np.asarray(arr, dtype=object)


def _check_few_numbers(
    values: list, type_name: str | None, bounds: tuple[float, float] | None, domain
) -> tuple[int, int, int, int]:
    """``(missing, type violations, out of range, unseen)`` of a short numeric column, in one
    pass (a numpy call costs a microsecond or more even on one value)."""
    missing = violations = out_of_range = unseen = 0
    integral = type_name in _INTEGRAL
    other_type = type_name is not None and type_name not in _NUMERIC and type_name in _INFERRED_OK
    low, high = bounds if bounds is not None else (None, None)
    for v in values:
        if v != v:  # NaN
            missing += 1
            continue
        if other_type or (integral and not float(v).is_integer() and abs(v) != float("inf")):
            violations += 1
        if low is not None and (v < low or v > high):
            out_of_range += 1
        if domain is not None and str(v) not in domain:
            unseen += 1
    return missing, violations, out_of_range, unseen


def _check_objects(
    values: np.ndarray, type_name: str | None, domain: frozenset[str] | None
) -> tuple[int, int, int]:
    """``(missing, type violations, unseen categories)`` of an object column."""
    if len(values) <= SMALL:
        missing = violations = unseen = 0
        for v in values.tolist():
            if _missing(v):
                missing += 1
                continue
            if type_name is not None and not _accepts(type_name, v):
                violations += 1
            if domain is not None and (v if type(v) is str else str(v)) not in domain:
                unseen += 1
        return missing, violations, unseen
    import pandas as pd

    isna = pd.isna(values)
    missing = int(np.count_nonzero(isna))
    violations = unseen = 0
    present = values[~isna] if missing else values
    if type_name is not None and type_name in _INFERRED_OK:
        inferred = pd.api.types.infer_dtype(present, skipna=True)
        if inferred not in _INFERRED_OK[type_name]:
            violations = sum(1 for v in present.tolist() if not _accepts(type_name, v))
    if domain is not None and len(present):
        known = pd.Series(present, dtype=object).isin(domain).to_numpy()
        unseen = int(np.count_nonzero(~known))
        if unseen:  # values of other types are compared as their str, as summarize() did
            unseen = sum(1 for v in present[~known].tolist() if str(v) not in domain)
    return missing, violations, unseen


def check(df, expect: Expectations) -> dict[tuple[str, str], int]:
    """Count the data-quality issues of one DataFrame of inputs.

    Parameters
    ----------
    df : pandas.DataFrame
        The inputs of one request or one batch, as the model receives them.
    expect : Expectations
        What they are checked against (:meth:`Expectations.build`).

    Returns
    -------
    dict
        ``{(kind, feature): count}`` for every non-zero count; ``kind`` is one of
        :data:`KINDS`, ``feature`` one of ``expect.features``.
    """
    out: dict[tuple[str, str], int] = {}
    n = len(df)
    if not n:
        return out

    def add(kind: str, feature: str, count: int) -> None:
        if count:
            key = (kind, feature)
            out[key] = out.get(key, 0) + int(count)

    columns = _column_arrays(df)
    signature = expect.columns
    if signature:
        given = {str(name) for name, _ in columns}
        for name, spec in signature.items():
            if name not in given:
                add("schema_violation" if spec.required else "missing_value", name, n)
    for name, arr in columns:
        label = str(name)
        col = signature.get(label)
        if col is None and label not in expect.labels:
            if signature:
                add("schema_violation", OTHER, n)
            continue
        type_name = col.type if col is not None else None
        domain = expect.domains.get(label)
        bounds = expect.ranges.get(label)
        values = _as_checked(arr)
        kind = values.dtype.kind
        missing = violations = unseen = 0
        if kind in "fiu" and n <= SMALL:
            missing, violations, out_of_range, unseen = _check_few_numbers(
                values.tolist(), type_name, bounds, domain
            )
            add("out_of_range", label, out_of_range)
        elif kind in "fiu":
            if kind == "f":
                isnan = np.isnan(values)
                missing = int(np.count_nonzero(isnan))
            if type_name in _INTEGRAL and kind == "f":
                finite = values[np.isfinite(values)]
                violations = int(np.count_nonzero(finite != np.floor(finite)))
            elif type_name is not None and type_name not in _NUMERIC and type_name in _INFERRED_OK:
                violations = n - missing
            if bounds is not None:
                # NaN compares False both ways: missing values are not out of range
                add(
                    "out_of_range",
                    label,
                    int(np.count_nonzero((values < bounds[0]) | (values > bounds[1]))),
                )
            if domain is not None:
                kept = values[~isnan] if kind == "f" and missing else values
                unseen = sum(1 for v in kept.tolist() if str(v) not in domain)
        elif kind == "b":
            if type_name is not None and type_name != "boolean" and type_name in _INFERRED_OK:
                violations = n
            if domain is not None:
                true = int(np.count_nonzero(values))
                unseen = (0 if "True" in domain else true) + (0 if "False" in domain else n - true)
        elif kind == "O":
            missing, violations, unseen = _check_objects(values, type_name, domain)
        else:  # fixed-width strings and bytes, datetimes, durations, complex
            import pandas as pd

            missing = int(np.count_nonzero(pd.isna(values)))
            if type_name is not None and type_name in _INFERRED_OK:
                if not (type_name == "string" and kind in "US"):
                    violations = n - missing
        add("missing_value", label, missing)
        add("schema_violation", label, violations)
        add("unseen_category", label, unseen)
    return out


class QualityTracker:
    """Totals of :func:`check` over every request a replica has seen.

    Thread-safe: :meth:`update` runs on the prediction thread, :meth:`totals` on
    the event loop. ``on_counts`` (optional) is called with each request's counts,
    on the prediction thread (the Prometheus counters).
    """

    def __init__(self, expect: Expectations, on_counts=None):
        self.expect = expect
        self.on_counts = on_counts
        self.rows_checked = 0
        self._lock = threading.Lock()
        self._totals: dict[tuple[str, str], int] = {}

    def update(self, df) -> dict[tuple[str, str], int]:
        """Check one DataFrame and add its counts; returns them."""
        counts = check(df, self.expect)
        with self._lock:
            self.rows_checked += len(df)
            for key, count in counts.items():
                self._totals[key] = self._totals.get(key, 0) + count
        if self.on_counts is not None:
            self.on_counts(counts, len(df))
        return counts

    def totals(self) -> dict[str, dict[str, int]]:
        """``{kind: {feature: count}}`` of the non-zero totals, every kind present."""
        with self._lock:
            items = sorted(self._totals.items())
        out: dict[str, dict[str, int]] = {kind: {} for kind in KINDS}
        for (kind, feature), count in items:
            out[kind][feature] = count
        return out
