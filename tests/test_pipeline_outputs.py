"""What a pipeline step hands on: output() in the kernel, and the scheduler reading it back.

Both ends of the contract: :mod:`hub_ext.runtime.outputs` (the notebook side, run
in-process, in a subprocess with the variables a step's run gets, and in a real
papermill run of a notebook) and :mod:`hub_ext.services.scheduler.pipelines.outputs`
(the scheduler side, whose every refusal is checked with its message, since the
message is what tells the owner what to fix).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

from hub_ext.runtime import outputs as runtime_outputs
from hub_ext.services.scheduler.executors.base import papermill_args
from hub_ext.services.scheduler.pipelines import outputs as scheduler_outputs
from hub_ext.services.scheduler.pipelines.outputs import (
    MAX_OUTPUTS_BYTES,
    OutputError,
    check_files,
    file_digest,
    read_outputs,
)
from hub_ext.services.scheduler.pipelines.spec import NotebookStep, OutputType
from hub_ext.services.scheduler.validation import PARAMETER_NAME_PATTERN

from .runspecs import write_notebook

REPO = Path(__file__).resolve().parent.parent
NOT_IN_PIPELINE = "only when the notebook runs as a pipeline step"


@pytest.fixture
def kernel_side(monkeypatch):
    """A fresh notebook-side module (nothing recorded, not warned yet), outside a pipeline."""
    monkeypatch.delenv("SHIPYARD_OUTPUTS", raising=False)
    monkeypatch.delenv("SHIPYARD_WORKSPACE", raising=False)
    module = importlib.reload(runtime_outputs)
    yield module
    importlib.reload(runtime_outputs)


@pytest.fixture
def in_step(kernel_side, monkeypatch, tmp_path):
    """The notebook side as a pipeline step's run sees it: both variables set."""
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    target = tmp_path / "outputs.jsonl"
    monkeypatch.setenv("SHIPYARD_OUTPUTS", str(target))
    monkeypatch.setenv("SHIPYARD_WORKSPACE", str(workspace))
    return kernel_side, target, workspace


def lines_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def write_lines(path: Path, *records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def run_python(code: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
    environment.update(PYTHONPATH=str(REPO), **env)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=environment,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


# the shared rules: the notebook side keeps copies, and they must stay equal


def test_the_notebook_side_copies_the_schedulers_rules():
    assert runtime_outputs.NAME_PATTERN == PARAMETER_NAME_PATTERN
    assert runtime_outputs.MAX_FILE_BYTES == MAX_OUTPUTS_BYTES
    assert runtime_outputs.OUTPUTS_ENV == scheduler_outputs.OUTPUTS_ENV == "SHIPYARD_OUTPUTS"
    assert runtime_outputs.WORKSPACE_ENV == scheduler_outputs.WORKSPACE_ENV
    assert runtime_outputs.MAX_VALUE_BYTES == 64 * 1024
    # the pipeline file's output types are the ones the reader checks
    assert {t.value for t in OutputType} == {"string", "number", "integer", "boolean", "json"}


def test_the_notebook_side_imports_only_the_standard_library(tmp_path):
    result = run_python(
        """\
        import sys
        before = set(sys.modules)
        import hub_ext.runtime.outputs
        new = sorted(m.split(".")[0] for m in set(sys.modules) - before)
        print(sorted(set(new) - set(sys.stdlib_module_names)))
        print(sorted(m for m in sys.modules if m.startswith("hub_ext")))
        """,
        {},
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    third_party, ours = result.stdout.splitlines()
    assert third_party == "['hub_ext']"
    assert set(eval(ours)) <= {
        "hub_ext",
        "hub_ext._version",
        "hub_ext.runtime",
        "hub_ext.runtime.outputs",
    }


# the notebook side in a step's run: the environment contract, end to end


def test_a_step_run_appends_json_lines_that_the_scheduler_reads_back(tmp_path):
    workspace = tmp_path / "ws"
    workspace.mkdir()
    target = tmp_path / "outputs.jsonl"
    result = run_python(
        """\
        import os
        from hub_ext.runtime.outputs import output, recorded, workspace
        print(workspace())
        output("rows", 10)
        output("auc", 0.75)
        output("uri", "runs:/abc/model")
        output("ok", True)
        output("meta", {"cols": ("a", "b"), 1: None})
        output("rows", 12)  # the last one wins
        print(recorded()["meta"])
        os._exit(3)  # the kernel dies at once: what output() returned from is on disk
        """,
        {"SHIPYARD_OUTPUTS": str(target), "SHIPYARD_WORKSPACE": str(workspace)},
        tmp_path,
    )
    assert result.returncode == 3, result.stderr
    assert NOT_IN_PIPELINE not in result.stderr  # no warning inside a step
    printed_workspace, meta = result.stdout.splitlines()
    assert printed_workspace == str(workspace)
    assert meta == "{'cols': ['a', 'b'], '1': None}"  # as a later step gets it
    assert [line["name"] for line in lines_of(target)] == [
        "rows",
        "auc",
        "uri",
        "ok",
        "meta",
        "rows",
    ]
    declared = {
        "rows": OutputType.integer,
        "auc": OutputType.number,
        "uri": OutputType.string,
        "ok": OutputType.boolean,
        "meta": OutputType.json,
    }
    assert read_outputs(target, declared) == {
        "rows": 12,
        "auc": 0.75,
        "uri": "runs:/abc/model",
        "ok": True,
        "meta": {"cols": ["a", "b"], "1": None},
    }


def test_outside_a_pipeline_it_warns_once_and_keeps_the_values(tmp_path):
    result = run_python(
        """\
        import warnings
        warnings.simplefilter("always")  # every warning the module gives is shown
        from hub_ext.runtime.outputs import output, recorded, workspace
        output("a", 1)
        output("a", 2)
        output("b", [1, 2])
        print(workspace())
        print(recorded())
        """,
        {},
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.count(NOT_IN_PIPELINE) == 1, result.stderr
    assert "SHIPYARD_OUTPUTS" in result.stderr
    assert result.stdout.splitlines() == [str(tmp_path), "{'a': 2, 'b': [1, 2]}"]
    assert list(tmp_path.iterdir()) == []  # no file written


def test_outside_a_pipeline_the_warning_points_at_the_caller(kernel_side):
    with pytest.warns(UserWarning, match=NOT_IN_PIPELINE) as caught:
        kernel_side.output("x", 1)
    assert len(caught) == 1 and caught[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second warning would raise here
        kernel_side.output("x", 2)
        kernel_side.output("y", "text")
        assert kernel_side.workspace() == Path.cwd()
    assert kernel_side.recorded() == {"x": 2, "y": "text"}


def test_workspace_alone_warns_once_too(kernel_side):
    with pytest.warns(UserWarning, match=NOT_IN_PIPELINE):
        assert kernel_side.workspace() == Path.cwd()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kernel_side.workspace()


def test_recorded_is_a_copy(kernel_side):
    with pytest.warns(UserWarning):
        kernel_side.output("m", {"k": [1]})
    kernel_side.recorded()["m"]["k"].append(2)
    assert kernel_side.recorded() == {"m": {"k": [1]}}


def test_in_a_step_each_call_is_one_synced_line_and_the_last_wins(in_step):
    module, target, workspace = in_step
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        module.output("loss", 0.5)
        module.output("loss", 0.25)
        assert module.workspace() == workspace
    assert target.read_text() == (
        '{"name": "loss", "value": 0.5}\n{"name": "loss", "value": 0.25}\n'
    )
    assert module.recorded() == {"loss": 0.25}
    assert read_outputs(target, {"loss": OutputType.number}) == {"loss": 0.25}


# the notebook side's refusals, with what they tell the user to do


@pytest.mark.parametrize("name", ["1abc", "a-b", "", "a b", "é", "a" * 101, "x.y"])
def test_a_name_that_is_not_an_identifier_is_refused(in_step, name):
    module, target, _ = in_step
    with pytest.raises(ValueError, match="use letters, digits and underscores") as info:
        module.output(name, 1)
    assert "outputs: in pipeline.yaml" in str(info.value)
    assert not target.exists() and module.recorded() == {}


def test_a_name_that_is_not_a_string_is_refused(in_step):
    module, _, _ = in_step
    with pytest.raises(TypeError, match="an output name must be a string, not int"):
        module.output(3, 1)


def test_the_longest_name_is_accepted(in_step):
    module, target, _ = in_step
    module.output("a" * 100, 1)
    assert lines_of(target) == [{"name": "a" * 100, "value": 1}]


@pytest.mark.parametrize(
    "value, kind",
    [(object(), "object"), ({1, 2}, "set"), (b"bytes", "bytes"), ({(1, 2): 3}, "keys must be")],
)
def test_a_value_that_is_not_json_is_refused_with_what_to_do(in_step, value, kind):
    module, target, _ = in_step
    with pytest.raises(TypeError) as info:
        module.output("v", value)
    message = str(info.value)
    assert message.startswith("output 'v': ") and kind in message
    assert ".item()" in message and ".tolist()" in message and "files:" in message
    assert not target.exists()


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, {"a": [1, math.nan]}])
def test_nan_and_infinity_are_refused(in_step, value):
    module, target, _ = in_step
    with pytest.raises(ValueError, match="JSON has no NaN or infinity: record None or a string"):
        module.output("v", value)
    assert not target.exists()


def test_text_is_written_as_utf8_and_read_back_as_sent(in_step):
    module, target, _ = in_step
    text = 'é 😀 \u2028 \x00 "quoted" \\'
    module.output("t", {"k": text})
    written = '{"name": "t", "value": {"k": "é 😀 \u2028 \\u0000 \\"quoted\\" \\\\"}}\n'
    assert target.read_bytes() == written.encode("utf-8")
    assert read_outputs(target, {"t": "json"}) == {"t": {"k": text}}


def test_a_lone_surrogate_is_refused(in_step):
    module, target, _ = in_step
    broken = b"caf\xe9".decode("utf-8", "surrogateescape")
    with pytest.raises(ValueError, match=r"not valid Unicode \(a lone surrogate"):
        module.output("t", {"k": [broken]})
    assert not target.exists()


def test_a_value_that_contains_itself_is_refused(in_step):
    module, _, _ = in_step
    loop: list = []
    loop.append(loop)
    with pytest.raises(ValueError, match="Circular reference"):
        module.output("v", loop)


def test_a_value_nested_too_deeply_is_refused(in_step):
    module, _, _ = in_step
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(ValueError, match="nested too deeply"):
        module.output("v", deep)


def test_one_value_is_at_most_64_kib(in_step):
    module, target, _ = in_step
    limit = module.MAX_VALUE_BYTES
    module.output("fits", "x" * (limit - 2))  # two quotes: exactly the limit
    with pytest.raises(ValueError) as info:
        module.output("big", "x" * (limit - 1))
    assert f"is {limit + 1} bytes as JSON, over the limit of {limit} bytes" in str(info.value)
    assert "declare it under the step's files:" in str(info.value)
    # measured as written, in UTF-8: "é" is two bytes
    module.output("wide", "é" * ((limit - 2) // 2))
    with pytest.raises(ValueError, match="over the limit"):
        module.output("wider", "é" * (limit // 2))
    assert [line["name"] for line in lines_of(target)] == ["fits", "wide"]
    assert list(module.recorded()) == ["fits", "wide"]


def test_the_outputs_of_a_step_are_at_most_1_mib_in_all(in_step):
    module, target, _ = in_step
    chunk = "x" * (module.MAX_VALUE_BYTES - 2)
    with pytest.raises(ValueError) as info:
        for _ in range(20):
            module.output("again", chunk)  # recorded again: the file still grows
    assert "would take this step's outputs past 1048576 bytes in all" in str(info.value)
    assert "record each output once" in str(info.value)
    size = target.stat().st_size
    assert 1024 * 1024 - module.MAX_VALUE_BYTES < size <= 1024 * 1024
    assert read_outputs(target, {"again": OutputType.string}) == {"again": chunk}


# the scheduler side: values, types, last wins


def test_nothing_declared_and_no_file_is_no_outputs(tmp_path):
    assert read_outputs(tmp_path / "missing.jsonl", {}) == {}
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert read_outputs(empty, {}) == {}


def test_a_declared_output_never_recorded_is_named(tmp_path):
    with pytest.raises(OutputError) as info:
        read_outputs(tmp_path / "missing.jsonl", {"model_uri": OutputType.string})
    assert info.value.message == (
        "step declared output 'model_uri' but the notebook never called output('model_uri', ...)"
    )
    path = write_lines(tmp_path / "o.jsonl", {"name": "a", "value": 1})
    with pytest.raises(OutputError) as info:
        read_outputs(path, {"a": "integer", "b": "string", "c": "json"})
    assert str(info.value) == (
        "step declared output 'b' but the notebook never called output('b', ...); "
        "step declared output 'c' but the notebook never called output('c', ...)"
    )


GOOD = [
    ("string", ""),
    ("string", "runs:/1/model"),
    ("number", 0),
    ("number", -2.5),
    ("number", 10**30),
    ("integer", 0),
    ("integer", -(10**30)),
    ("boolean", False),
    ("json", None),
    ("json", {"a": [1, "b", None, True, 2.5]}),
    ("json", "text"),
    ("json", []),
]


@pytest.mark.parametrize("kind, value", GOOD)
def test_a_value_of_its_declared_type_is_read(tmp_path, kind, value):
    path = write_lines(tmp_path / "o.jsonl", {"name": "v", "value": value})
    result = read_outputs(path, {"v": OutputType(kind)})
    assert result == {"v": value} and type(result["v"]) is type(value)


BAD = [
    ("string", 1, "1 (int)"),
    ("string", None, "null (null)"),
    ("number", True, "true (bool)"),
    ("number", "1.5", '"1.5" (str)'),
    ("number", None, "null (null)"),
    ("integer", 1.5, "1.5 (float)"),
    ("integer", 2.0, "2.0 (float)"),
    ("integer", False, "false (bool)"),
    ("integer", "3", '"3" (str)'),
    ("boolean", 1, "1 (int)"),
    ("boolean", "true", '"true" (str)'),
]


@pytest.mark.parametrize("kind, value, shown", BAD)
def test_a_value_of_another_type_is_refused(tmp_path, kind, value, shown):
    path = write_lines(tmp_path / "o.jsonl", {"name": "v", "value": value})
    with pytest.raises(OutputError) as info:
        read_outputs(path, {"v": OutputType(kind)})
    assert str(info.value) == (
        f"output 'v' is declared as {kind} but the notebook recorded {shown}: change the "
        "value passed to output('v', ...) or the type under the step's outputs: in pipeline.yaml"
    )


def test_a_long_value_is_cut_in_the_message(tmp_path):
    path = write_lines(tmp_path / "o.jsonl", {"name": "v", "value": "x" * 1000})
    with pytest.raises(OutputError) as info:
        read_outputs(path, {"v": OutputType.integer})
    assert '"' + "x" * 76 + "... (str)" in str(info.value)


def test_the_last_value_of_a_name_wins_and_only_it_is_checked(tmp_path):
    path = write_lines(
        tmp_path / "o.jsonl",
        {"name": "n", "value": "not yet"},
        {"name": "m", "value": [1]},
        {"name": "n", "value": 3},
        {"name": "m", "value": {"final": True}},
    )
    assert read_outputs(path, {"n": "integer", "m": "json"}) == {"n": 3, "m": {"final": True}}
    path = write_lines(tmp_path / "p.jsonl", {"name": "n", "value": 3}, {"name": "n", "value": "x"})
    with pytest.raises(OutputError, match='recorded "x"'):
        read_outputs(path, {"n": "integer"})


def test_type_problems_and_missing_outputs_come_in_one_message(tmp_path):
    path = write_lines(tmp_path / "o.jsonl", {"name": "a", "value": "1"})
    with pytest.raises(OutputError) as info:
        read_outputs(path, {"a": "integer", "b": "boolean"})
    first, second = str(info.value).split("; step declared")
    assert first.startswith("output 'a' is declared as integer")
    assert second == " output 'b' but the notebook never called output('b', ...)"


def test_an_undeclared_output_is_named_with_the_declared_ones(tmp_path):
    path = write_lines(
        tmp_path / "o.jsonl",
        {"name": "auc", "value": 0.9},
        {"name": "zeta", "value": 1},
        {"name": "extra", "value": 2},
    )
    with pytest.raises(OutputError) as info:
        read_outputs(path, {"auc": "number", "rows": "integer"})
    assert str(info.value) == (
        "the notebook recorded 'extra', 'zeta', not declared under the step's outputs: in "
        "pipeline.yaml (declared: 'auc', 'rows'): declare each with its type (string, "
        "number, integer, boolean or json), or remove its output() call"
    )
    with pytest.raises(OutputError, match=r"\(declared: none\)"):
        read_outputs(path, {})


def test_only_declared_names_come_back_in_declared_order(tmp_path):
    path = write_lines(tmp_path / "o.jsonl", {"name": "b", "value": 1}, {"name": "a", "value": 2})
    assert list(read_outputs(path, {"a": "integer", "b": "integer"})) == ["a", "b"]


def test_the_declared_outputs_of_a_loaded_step_are_what_it_reads(tmp_path):
    step = NotebookStep(notebook="train.ipynb", outputs={"auc": "number", "uri": "string"})
    path = write_lines(
        tmp_path / "o.jsonl", {"name": "auc", "value": 1}, {"name": "uri", "value": "u"}
    )
    assert read_outputs(path, step.outputs) == {"auc": 1, "uri": "u"}


# the scheduler side: lines that output() would never write


BAD_LINES = [
    (b"not json\n", "line 1 of the step's outputs file is not valid JSON"),
    (
        b'{"name": "v", "value": 1}\n{"name": "v", "val',
        "line 2 of the step's outputs file is not valid JSON",
    ),
    (b'{"name": "v", "value": NaN}\n', "NaN is not a JSON number"),
    (b'{"name": "v", "value": -Infinity}\n', "-Infinity is not a JSON number"),
    (b'{"name": "v", "value": [1e999]}\n', "the number 1e999 is out of range"),
    (b'{"name": "v", "value": 1, "value": 2}\n', "the key 'value' appears twice"),
    (b'{"name": "v", "value": "\xff"}\n', "is not valid JSON ('utf-8' codec"),
    (b"[" * 100_000 + b"]" * 100_000 + b"\n", "is not valid JSON"),
    (b'{"name": "v", "value": "\\udc80"}\n', "holds text that is not valid Unicode"),
    (b'{"name": "v", "value": {"\\ud800": 1}}\n', "holds text that is not valid Unicode"),
    (b"[1, 2]\n", "is not an object with exactly 'name' and 'value'"),
    (b'"v"\n', "is not an object with exactly 'name' and 'value'"),
    (b'{"name": "v"}\n', "is not an object with exactly 'name' and 'value'"),
    (b'{"name": "v", "value": 1, "type": "int"}\n', "is not an object with exactly"),
    (
        b'{"name": "v", "value": 1}\n\n{"name": "v", "value": 2}\n',
        "line 2 of the step's outputs file is not valid JSON",
    ),
    (
        b'{"name": 1, "value": 1}\n',
        "line 1 of the step's outputs file names 1, which is not an output name",
    ),
    (b'{"name": "../x", "value": 1}\n', 'names "../x", which is not an output name'),
]


@pytest.mark.parametrize("content, message", BAD_LINES)
def test_a_line_that_output_would_not_write_is_refused(tmp_path, content, message):
    path = tmp_path / "o.jsonl"
    path.write_bytes(content)
    with pytest.raises(OutputError) as info:
        read_outputs(path, {"v": OutputType.json})
    assert message in str(info.value)
    assert "record values only with output() from hub_ext.runtime.outputs" in str(info.value)


def test_a_last_line_without_its_newline_is_read(tmp_path):
    path = tmp_path / "o.jsonl"
    path.write_bytes(b'{"name": "v", "value": 1}\n{"name": "v", "value": 2}')
    assert read_outputs(path, {"v": "integer"}) == {"v": 2}


# the scheduler side: the file itself is untrusted


def test_the_file_is_read_up_to_its_limit(tmp_path):
    line = json.dumps({"name": "v", "value": "x" * 80}) + "\n"
    path = tmp_path / "o.jsonl"
    path.write_text(line * 10)
    limit = len(line) * 10
    assert read_outputs(path, {"v": "string"}, limit_bytes=limit) == {"v": "x" * 80}
    with pytest.raises(OutputError) as info:
        read_outputs(path, {"v": "string"}, limit_bytes=limit - 1)
    assert str(info.value).startswith(
        f"the step's outputs file is over the limit of {limit - 1} bytes: record each output once"
    )
    assert "declared under the step's files: in pipeline.yaml" in str(info.value)


def test_the_default_limit_is_1_mib(tmp_path):
    path = tmp_path / "o.jsonl"
    path.write_bytes(b" " * (MAX_OUTPUTS_BYTES + 1))
    with pytest.raises(OutputError, match="over the limit of 1048576 bytes"):
        read_outputs(path, {})


def test_a_symlink_at_the_path_is_never_followed(tmp_path):
    real = write_lines(tmp_path / "real.jsonl", {"name": "v", "value": 1})
    link = tmp_path / "outputs.jsonl"
    link.symlink_to(real)
    with pytest.raises(OutputError) as info:
        read_outputs(link, {"v": "integer"})
    assert "is a symbolic link, which is not read: the notebook must not replace" in str(info.value)
    # a link to a secret elsewhere: not read, and its content never shows
    secret = tmp_path / "secret"
    secret.write_text("hub-secret-token\n")
    link.unlink()
    link.symlink_to(secret)
    with pytest.raises(OutputError) as info:
        read_outputs(link, {})
    assert "hub-secret-token" not in str(info.value)
    link.unlink()
    link.symlink_to(tmp_path / "nowhere")  # a dangling link is refused too, not "missing"
    with pytest.raises(OutputError, match="symbolic link"):
        read_outputs(link, {})


def test_a_fifo_or_a_folder_at_the_path_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(OutputError, match="is not a regular file: the notebook must not replace"):
        read_outputs(fifo, {})
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(OutputError, match="is not a regular file"):
        read_outputs(folder, {})


def test_an_unreadable_path_is_refused(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputError, match=r"cannot be opened \(Not a directory\)"):
        read_outputs(tmp_path / "file" / "outputs.jsonl", {})


# the scheduler side: declared files


@pytest.fixture
def workspace(tmp_path):
    folder = tmp_path / "run1"
    (folder / "out").mkdir(parents=True)
    return folder


def test_declared_files_come_back_as_absolute_paths(workspace):
    (workspace / "out" / "table.csv").write_text("a\n1\n")
    (workspace / "model.pkl").write_bytes(b"\x80")
    found = check_files(workspace, {"table": "out/table.csv", "model": "model.pkl"})
    assert found == {
        "table": str(workspace / "out" / "table.csv"),
        "model": str(workspace / "model.pkl"),
    }
    assert check_files(workspace, {}) == {}


def test_a_symlink_inside_the_workspace_is_followed_to_its_file(workspace):
    (workspace / "out" / "v2.csv").write_text("x")
    (workspace / "latest.csv").symlink_to("out/v2.csv")
    assert check_files(workspace, {"t": "latest.csv"}) == {"t": str(workspace / "out" / "v2.csv")}


def test_a_workspace_reached_through_a_symlink_is_resolved(workspace, tmp_path):
    (workspace / "f").write_text("x")
    alias = tmp_path / "alias"
    alias.symlink_to(workspace)
    assert check_files(alias, {"f": "f"}) == {"f": str(workspace / "f")}


def test_missing_files_are_all_named(workspace):
    (workspace / "there.csv").write_text("x")
    with pytest.raises(OutputError) as info:
        check_files(workspace, {"a": "out/a.csv", "there": "there.csv", "b": "b.parquet"})
    assert str(info.value) == (
        "the notebook did not write the declared files 'a' ('out/a.csv'), 'b' ('b.parquet'): "
        "write each under workspace() at the path the step's files: in pipeline.yaml gives, "
        "or correct the path there"
    )


def test_symlinks_out_of_the_workspace_are_refused(workspace, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    (workspace / "abs").symlink_to(secret)
    (workspace / "rel").symlink_to("../secret.txt")
    (workspace / "dir").symlink_to(tmp_path)  # a folder link: the path goes out in the middle
    sibling = tmp_path / "run10"  # shares the workspace's name as a string prefix
    sibling.mkdir()
    (sibling / "f").write_text("x")
    (workspace / "prefix").symlink_to(sibling / "f")
    (workspace / "gone").symlink_to(tmp_path / "nowhere")
    declared = {
        "abs": "abs",
        "rel": "rel",
        "dir": "dir/secret.txt",
        "prefix": "prefix",
        "gone": "gone",
    }
    with pytest.raises(OutputError) as info:
        check_files(workspace, declared)
    message = str(info.value)
    for name, path in declared.items():
        assert f"{name!r} ({path!r} is a symbolic link out of the workspace)" in message
    assert message.endswith("write each as a regular file inside workspace()")
    assert "secret" not in message.replace("secret.txt", "")  # never what it pointed to


def test_what_is_not_a_regular_file_is_refused(workspace):
    os.mkfifo(workspace / "fifo")
    (workspace / "loop").symlink_to("loop")
    declared = {"folder": "out", "fifo": "fifo", "loop": "loop"}
    with pytest.raises(OutputError) as info:
        check_files(workspace, declared)
    for name, path in declared.items():
        assert f"{name!r} ({path!r} is not a regular file)" in str(info.value)


@pytest.mark.parametrize("path", ["/etc/passwd", "../run10/f", "a/../../x", ""])
def test_a_path_that_leaves_the_workspace_is_refused_before_any_lookup(workspace, path):
    with pytest.raises(OutputError, match=r"is not a path inside the workspace\)"):
        check_files(workspace, {"f": path})


def test_missing_and_refused_files_come_in_one_message(workspace, tmp_path):
    (workspace / "out.lnk").symlink_to(tmp_path)
    with pytest.raises(OutputError) as info:
        check_files(workspace, {"a": "a.csv", "b": "out.lnk"})
    missing, refused = str(info.value).split("; declared files that cannot be handed on: ")
    assert "'a' ('a.csv')" in missing and refused.startswith("'b' ('out.lnk' is a symbolic")


# file digests


def test_the_digest_is_sha256_read_in_chunks(tmp_path):
    data = os.urandom(2 * 1024 * 1024 + 17)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    assert file_digest(path) == hashlib.sha256(data).hexdigest()
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert file_digest(str(empty)) == hashlib.sha256(b"").hexdigest()


def test_the_digest_never_follows_a_symlink_or_reads_a_fifo(tmp_path):
    (tmp_path / "f").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "f")
    with pytest.raises(OSError):
        file_digest(tmp_path / "link")
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(OutputError, match="is not a regular file"):
        file_digest(tmp_path / "fifo")


# a real papermill run: a notebook records values, the scheduler reads them back


NOTEBOOK_CELLS = (
    "from hub_ext.runtime.outputs import output, workspace",
    "table = workspace() / 'out' / 'table.csv'\n"
    "table.parent.mkdir(parents=True, exist_ok=True)\n"
    "table.write_text('a\\n' + '\\n'.join(map(str, range(rows))) + '\\n')",
    "output('rows', rows)\noutput('auc', 0.5)",
    "output('auc', 0.875)  # recorded again: this one wins\n"
    "output('summary', {'region': region, 'columns': ['a']})",
    "if fail:\n    raise RuntimeError('the training diverged')",
    "output('done', True)",
)


def papermill_run(tmp_path: Path, **parameters) -> tuple[subprocess.CompletedProcess, Path, Path]:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    notebook = write_notebook(
        tmp_path / "train.ipynb",
        *NOTEBOOK_CELLS,
        parameters="rows = 0\nregion = 'us'\nfail = False",
    )
    parameters_file = tmp_path / "parameters.yaml"
    parameters_file.write_text(json.dumps(parameters))  # JSON is YAML
    target = tmp_path / "outputs.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
    env.update(
        PYTHONPATH=str(REPO),
        SHIPYARD_OUTPUTS=str(target),
        SHIPYARD_WORKSPACE=str(workspace),
        PYTHONWARNINGS="always",
    )
    args = papermill_args(notebook, tmp_path / "out.ipynb", parameters_file, workspace)
    result = subprocess.run(
        [sys.executable, "-m", "papermill", "--kernel", "python3", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    return result, target, workspace


DECLARED = {
    "rows": OutputType.integer,
    "auc": OutputType.number,
    "summary": OutputType.json,
    "done": OutputType.boolean,
}


def test_a_papermill_run_records_values_the_scheduler_reads_back(tmp_path):
    result, target, workspace = papermill_run(tmp_path, rows=3, region="eu")
    assert result.returncode == 0, result.stderr[-4000:]
    assert NOT_IN_PIPELINE not in result.stderr
    assert read_outputs(target, DECLARED) == {
        "rows": 3,
        "auc": 0.875,
        "summary": {"region": "eu", "columns": ["a"]},
        "done": True,
    }
    files = check_files(workspace, {"table": "out/table.csv"})
    assert files == {"table": str(workspace / "out" / "table.csv")}
    assert file_digest(files["table"]) == hashlib.sha256(b"a\n0\n1\n2\n").hexdigest()


def test_values_recorded_before_a_failing_cell_are_kept(tmp_path):
    result, target, _ = papermill_run(tmp_path, rows=1, fail=True)
    assert result.returncode != 0 and "the training diverged" in result.stderr
    # what was recorded is on disk; the output after the failure is reported missing
    with pytest.raises(OutputError) as info:
        read_outputs(target, DECLARED)
    assert str(info.value) == (
        "step declared output 'done' but the notebook never called output('done', ...)"
    )
    assert read_outputs(target, {k: v for k, v in DECLARED.items() if k != "done"})["auc"] == 0.875
