"""Kubernetes quantities: exact values, errors that say what to write, JupyterHub units."""

from decimal import Decimal

import pytest
from jupyterhub.traitlets import ByteSpecification

from hub_ext.profiles.quantities import (
    CPU_HINT,
    MEMORY_HINT,
    QuantityError,
    format_cpu,
    format_memory,
    parse_cpu,
    parse_memory,
    parse_quantity,
    to_jupyterhub_bytes,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("512Mi", Decimal(512 * 2**20)),
        ("1Ki", Decimal(1024)),
        ("1.5Gi", Decimal(1610612736)),
        ("1Ei", Decimal(2**60)),
        ("2G", Decimal(2_000_000_000)),
        ("2k", Decimal(2000)),
        ("1E", Decimal(10**18)),  # exa, not an exponent
        ("500m", Decimal("0.5")),
        ("1m", Decimal("0.001")),
        ("2", Decimal(2)),
        ("0.5", Decimal("0.5")),
        (".5", Decimal("0.5")),
        ("2.", Decimal(2)),
        ("1e3", Decimal(1000)),
        ("1E3", Decimal(1000)),
        ("1e-3", Decimal("0.001")),
        (" 2 ", Decimal(2)),
        ("0", Decimal(0)),
        (2, Decimal(2)),
        (0.5, Decimal("0.5")),
    ],
)
def test_parse_quantity(text, expected):
    assert parse_quantity(text) == expected


@pytest.mark.parametrize(
    "value, message",
    [
        ("2GB", "'2GB' is not a Kubernetes quantity"),
        ("-1", "'-1' is not a Kubernetes quantity"),
        ("", "'' is not a Kubernetes quantity"),
        ("abc", "'abc' is not a Kubernetes quantity"),
        ("5 Mi", "'5 Mi' is not a Kubernetes quantity"),
        ("1e", "'1e' is not a Kubernetes quantity"),
        ("0x10", "'0x10' is not a Kubernetes quantity"),
        ("1.2.3", "'1.2.3' is not a Kubernetes quantity"),
        (-1, "-1 is negative"),
        (True, "True is not a quantity"),
        (float("nan"), "nan is not a finite number"),
        (float("inf"), "inf is not a finite number"),
    ],
)
def test_parse_quantity_refuses(value, message):
    with pytest.raises(QuantityError) as e:
        parse_quantity(value)
    assert str(e.value) == message


@pytest.mark.parametrize(
    "text, expected",
    [
        ("512Mi", 536870912),
        ("2Gi", 2147483648),
        ("2G", 2000000000),
        ("1.5Gi", 1610612736),
        ("1e3", 1000),
        ("1000", 1000),
        (1024, 1024),
        ("0.5", 1),  # rounded up to a whole byte, as Kubernetes does
        ("1500m", 2),
    ],
)
def test_parse_memory(text, expected):
    assert parse_memory(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("500m", 0.5),
        ("2", 2.0),
        ("0.5", 0.5),
        ("1e3", 1000.0),
        ("250m", 0.25),
        ("1m", 0.001),
        (4, 4.0),
    ],
)
def test_parse_cpu(text, expected):
    assert parse_cpu(text) == expected


@pytest.mark.parametrize(
    "value, message",
    [
        ("2GB", f"'2GB' is not a Kubernetes quantity; {MEMORY_HINT}"),
        ("-1", f"'-1' is not a Kubernetes quantity; {MEMORY_HINT}"),
        ("", f"'' is not a Kubernetes quantity; {MEMORY_HINT}"),
        ("abc", f"'abc' is not a Kubernetes quantity; {MEMORY_HINT}"),
        ("0", f"'0' must be more than zero; {MEMORY_HINT}"),
        (-5, f"-5 is negative; {MEMORY_HINT}"),
        (float("nan"), f"nan is not a finite number; {MEMORY_HINT}"),
        (float("inf"), f"inf is not a finite number; {MEMORY_HINT}"),
    ],
)
def test_parse_memory_errors_carry_the_hint(value, message):
    with pytest.raises(QuantityError) as e:
        parse_memory(value)
    assert str(e.value) == message
    assert MEMORY_HINT == "use a number with a suffix such as 512Mi, 2Gi or 2G"


@pytest.mark.parametrize(
    "value, message",
    [
        ("2GB", f"'2GB' is not a Kubernetes quantity; {CPU_HINT}"),
        ("-1", f"'-1' is not a Kubernetes quantity; {CPU_HINT}"),
        ("", f"'' is not a Kubernetes quantity; {CPU_HINT}"),
        ("abc", f"'abc' is not a Kubernetes quantity; {CPU_HINT}"),
        ("0", f"'0' must be more than zero; {CPU_HINT}"),
        ("0m", f"'0m' must be more than zero; {CPU_HINT}"),
        ("0.0001", f"'0.0001' is below the 1m that Kubernetes can express; {CPU_HINT}"),
        (float("inf"), f"inf is not a finite number; {CPU_HINT}"),
    ],
)
def test_parse_cpu_errors_carry_the_hint(value, message):
    with pytest.raises(QuantityError) as e:
        parse_cpu(value)
    assert str(e.value) == message
    assert CPU_HINT == "use a number of CPUs such as 2, 0.5 or 500m"


def test_quantity_error_is_a_value_error():
    # pydantic turns ValueErrors from validators into located field errors
    assert issubclass(QuantityError, ValueError)


@pytest.mark.parametrize(
    "n_bytes, expected",
    [
        (2**30, "1G"),
        (16 * 2**30, "16G"),
        (512 * 2**20, "512M"),
        (1610612736, "1536M"),  # 1.5Gi: not whole GiB, so MiB
        (3 * 2**10, "3K"),
        (2**40, "1024G"),
        (1536, 1536),
        (2_000_000_000, "1953125K"),  # 2G (decimal) is 1953125 KiB exactly
        (10**9 + 1, 10**9 + 1),  # no binary multiple: exact bytes, never rounded
        (1, 1),
    ],
)
def test_to_jupyterhub_bytes(n_bytes, expected):
    assert to_jupyterhub_bytes(n_bytes) == expected


@pytest.mark.parametrize(
    "quantity", ["512Mi", "1.5Gi", "2G", "2Gi", "1Ti", "1000", "1Ki", "1500m", "3e9", "123456789"]
)
def test_to_jupyterhub_bytes_round_trips_through_byte_specification(quantity):
    """What KubeSpawner's ByteSpecification traits read back is the profile's exact bytes."""
    n_bytes = parse_memory(quantity)
    assert ByteSpecification().validate(None, to_jupyterhub_bytes(n_bytes)) == n_bytes


@pytest.mark.parametrize(
    "n_bytes, expected",
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1 KiB"),
        (1536, "1.5 KiB"),
        (2**20, "1 MiB"),
        (1610612736, "1.5 GiB"),
        (2**40, "1 TiB"),
        (2**50, "1024 TiB"),
    ],
)
def test_format_memory(n_bytes, expected):
    assert format_memory(n_bytes) == expected


@pytest.mark.parametrize("cores, expected", [(0.5, "0.5"), (2.0, "2"), (0.25, "0.25"), (16, "16")])
def test_format_cpu(cores, expected):
    assert format_cpu(cores) == expected
