"""The type checker runs with the suite: no type error beyond the committed baseline.

See tests/typecheck.py for the baseline's rules (it may only shrink).
"""

from __future__ import annotations

from .typecheck import Finding, compare, read_baseline, report, run_mypy, write_baseline


def finding(path: str, line: int, message: str, code: str = "arg-type") -> Finding:
    return Finding({"file": path, "line": line, "message": message, "code": code})


def test_no_type_error_beyond_the_baseline():
    new, gone = compare(run_mypy(), read_baseline())
    assert not (new or gone), report(new, gone)


def test_the_baseline_ignores_line_numbers_counts_repeats_and_only_shrinks(tmp_path):
    known = [finding("a.py", 3, "x"), finding("a.py", 9, "x"), finding("b.py", 1, "y")]
    path = tmp_path / "baseline.txt"
    write_baseline(known, path)
    baseline = read_baseline(path)
    assert baseline == {"a.py: [arg-type] x": 2, "b.py: [arg-type] y": 1}

    moved = [finding("a.py", 30, "x"), finding("a.py", 90, "x"), finding("b.py", 7, "y")]
    assert compare(moved, baseline) == ([], [])  # an edit above moved the lines: still known

    third = finding("a.py", 50, "x")
    new, gone = compare([*moved, third], baseline)
    assert new == [third] and not gone  # one more of a known error is a new one
    assert "a.py:50: [arg-type] x" in report(new, gone)

    new, gone = compare(moved[:2], baseline)
    assert not new and gone == ["1 b.py: [arg-type] y"]  # fixed: the baseline must shrink
    assert "--update" in report(new, gone)
