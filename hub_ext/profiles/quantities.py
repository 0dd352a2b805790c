"""Kubernetes resource quantities: ``500m`` CPUs, ``512Mi`` or ``2G`` bytes.

Profiles are written in the units Kubernetes admins already use, so the same
file drives pods and local cgroups. The grammar follows
https://kubernetes.io/docs/reference/kubernetes-api/common-definitions/quantity/
(binary suffixes Ki..Ei, decimal k..E, milli ``m``, and exponents ``1e3``).

JupyterHub's ``ByteSpecification`` is not used for parsing: it reads ``G`` as
GiB and refuses ``Mi``, which would silently change what an admin wrote for a
pod. :func:`to_jupyterhub_bytes` converts the other way when a KubeSpawner
trait needs a value.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "m": Decimal("0.001"),
    "": Decimal(1),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "E": Decimal(10**18),
}
_QUANTITY = re.compile(
    r"^(?P<number>[0-9]+(\.[0-9]*)?|\.[0-9]+)(?P<suffix>[KMGTPE]i|[mkMGTPE]|[eE][-+]?[0-9]+)?$"
)

MEMORY_HINT = "use a number with a suffix such as 512Mi, 2Gi or 2G"
CPU_HINT = "use a number of CPUs such as 2, 0.5 or 500m"


class QuantityError(ValueError):
    """A value that is not a Kubernetes quantity, with a hint on what to write."""


def parse_quantity(value: str | int | float) -> Decimal:
    """Return the exact value of a Kubernetes quantity.

    Raises
    ------
    QuantityError
        if ``value`` is not a quantity.
    """
    if isinstance(value, bool):
        raise QuantityError(f"{value!r} is not a quantity")
    if isinstance(value, int | float):
        # NaN and infinity are floats but no quantity; without this check they
        # escaped as decimal.InvalidOperation / OverflowError (or an infinite CPU).
        if not math.isfinite(value):
            raise QuantityError(f"{value!r} is not a finite number")
        if value < 0:
            raise QuantityError(f"{value!r} is negative")
        return Decimal(str(value))
    text = str(value).strip()
    match = _QUANTITY.match(text)
    if not match:
        raise QuantityError(f"{value!r} is not a Kubernetes quantity")
    try:
        number = Decimal(match["number"])
    except InvalidOperation as e:  # pragma: no cover - the regex admits only decimals
        raise QuantityError(f"{value!r} is not a Kubernetes quantity") from e
    suffix = match["suffix"] or ""
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    if suffix in _DECIMAL:
        return number * _DECIMAL[suffix]
    return number * Decimal(10) ** int(suffix[1:])


def parse_memory(value: str | int | float) -> int:
    """Return a memory quantity in bytes (rounded up, as Kubernetes does)."""
    try:
        amount = parse_quantity(value)
    except QuantityError as e:
        raise QuantityError(f"{e}; {MEMORY_HINT}") from None
    if amount <= 0:
        raise QuantityError(f"{value!r} must be more than zero; {MEMORY_HINT}")
    return int(amount.to_integral_value(rounding="ROUND_CEILING"))


def parse_cpu(value: str | int | float) -> float:
    """Return a CPU quantity in cores (``500m`` is 0.5)."""
    try:
        amount = parse_quantity(value)
    except QuantityError as e:
        raise QuantityError(f"{e}; {CPU_HINT}") from None
    if amount <= 0:
        raise QuantityError(f"{value!r} must be more than zero; {CPU_HINT}")
    if amount < Decimal("0.001"):
        raise QuantityError(f"{value!r} is below the 1m that Kubernetes can express; {CPU_HINT}")
    return float(amount)


def format_memory(n_bytes: int) -> str:
    """Human-readable binary size, for forms and CLI tables (``2 GiB``)."""
    size = float(n_bytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            text = f"{size:.1f}".rstrip("0").rstrip(".")
            return f"{text} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def format_cpu(cores: float) -> str:
    """CPUs for display: ``0.5``, ``2``."""
    return f"{cores:g}"


def to_jupyterhub_bytes(n_bytes: int) -> str | int:
    """Express bytes in JupyterHub's ``ByteSpecification`` units (K/M/G are powers of 1024).

    Exact binary multiples keep a readable suffix; anything else stays a plain
    integer so no rounding ever changes a limit.
    """
    for suffix, factor in (("G", 2**30), ("M", 2**20), ("K", 2**10)):
        if n_bytes % factor == 0:
            return f"{n_bytes // factor}{suffix}"
    return n_bytes
