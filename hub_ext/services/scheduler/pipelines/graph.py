"""The pipeline's graph: the checks that need every step at once, and the run order.

:class:`~.spec.Pipeline` checks each field; what it cannot see from one field is
here, as pure functions of a parsed pipeline:

- :func:`problems` lists what is wrong with the graph, each with the path of the
  node to fix (``("steps", "train", "needs", 1)``), which :mod:`.load` turns
  into a line and column: a ``needs`` entry that names no step, a cycle (its
  steps named in run order), an input, a deploy step's ``model`` or a gate's
  ``data`` that reads a step which does not run before the reader or an output
  or file that step does not declare, and a step without a profile.
- :func:`topological_order` is the order steps start in when run one at a time:
  among the steps whose ``needs`` have all ended, the one listed first in the
  file, so the order is stable across edits that do not touch the graph.
- :func:`downstream` is what a repair reruns: the given steps and every step
  that needs them, directly or through others, in run order.

A reference to a step that runs before counts whether the step is needed
directly or through others (``train`` needs ``features`` needs ``ingest``:
``train`` may read ``ingest``'s files). What "runs before" means is only
``needs``: an input does not add an edge of its own, so the order a reader
sees in the file is the whole order.

Rejected alternative: graphlib.TopologicalSorter. Its ``static_order`` breaks
ties by hash order, not by the file's order, and its CycleError names one cycle
without saying which ``needs`` entry closes it, the node a user has to edit.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass

from .spec import DeployStep, NotebookStep, Pipeline, split_reference

#: A path into the pipeline file: mapping keys and list indexes, from the top.
Path = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    """One thing to fix in a pipeline file: where (a path into it) and what to do."""

    path: Path
    message: str


def _suggest(name: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def upstream(pipeline: Pipeline) -> dict[str, set[str]]:
    """Return, for each step, every step that runs before it (its ``needs``, transitively).

    Needs that name no step are left out; a step on a cycle is upstream of itself.
    """
    direct = {
        step_id: [n for n in step.needs if n in pipeline.steps]
        for step_id, step in pipeline.steps.items()
    }
    closure: dict[str, set[str]] = {}
    for step_id in pipeline.steps:
        seen: set[str] = set()
        stack = list(direct[step_id])
        while stack:
            current = stack.pop()
            if current not in seen:
                seen.add(current)
                stack.extend(direct[current])
        closure[step_id] = seen
    return closure


def _unknown_needs(pipeline: Pipeline) -> list[Problem]:
    found = []
    ids = list(pipeline.steps)
    for step_id, step in pipeline.steps.items():
        for index, need in enumerate(step.needs):
            if need not in pipeline.steps:
                found.append(
                    Problem(
                        ("steps", step_id, "needs", index),
                        f"step {step_id!r} needs {need!r}, which is not a step of this "
                        f"pipeline{_suggest(need, ids)}: name one of {', '.join(ids)}",
                    )
                )
    return found


def _cycles(pipeline: Pipeline) -> list[Problem]:
    # Tarjan's strongly connected components over the "needs" edges; one problem per
    # component that loops, naming one cycle through it from its first-listed step.
    order = {step_id: i for i, step_id in enumerate(pipeline.steps)}
    edges = {
        step_id: [n for n in step.needs if n in order] for step_id, step in pipeline.steps.items()
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        # iterative, so a long chain of steps cannot exhaust Python's recursion limit
        work = [(node, iter(edges[node]))]
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        while work:
            current, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges[child])))
                    break
                if child in on_stack:
                    low[current] = min(low[current], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[current])
                if low[current] == index[current]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == current:
                            break
                    components.append(component)

    for step_id in pipeline.steps:
        if step_id not in index:
            visit(step_id)

    found = []
    for component in components:
        members = set(component)
        start = min(component, key=order.__getitem__)
        if len(component) == 1 and start not in edges[start]:
            continue
        # the shortest path back to ``start`` along "needs" inside the component
        previous: dict[str, str] = {}
        frontier = [start]
        while start not in previous:
            following = []
            for node in frontier:
                for need in edges[node]:
                    if need in members and need not in previous:
                        previous[need] = node
                        following.append(need)
            frontier = following
        needs_chain = [start]
        node = previous[start]
        while node != start:
            needs_chain.append(node)
            node = previous[node]
        # each step of the chain is needed by the next (runs before it), and start needs
        # the last one: that entry of start's needs closes the loop
        run_order = needs_chain
        closing = run_order[-1]
        where = ("steps", start, "needs", pipeline.steps[start].needs.index(closing))
        if len(run_order) == 1:
            message = f"step {start!r} needs itself: remove {start!r} from its needs"
        else:
            loop = " -> ".join([*run_order, start])
            message = (
                f"the steps form a cycle: {loop} (each must run before the next); remove "
                f"one of these needs, e.g. {closing!r} from the needs of {start!r}"
            )
        found.append(Problem(where, message))
    found.sort(key=lambda p: order[str(p.path[1])])
    return found


def _references(pipeline: Pipeline) -> list[tuple[Path, str, str]]:
    # (path of the reference, the reading step, the reference) for every reference
    found: list[tuple[Path, str, str]] = []
    for step_id, step in pipeline.steps.items():
        if isinstance(step, NotebookStep):
            for name, ref in step.inputs.items():
                found.append((("steps", step_id, "inputs", name), step_id, ref))
        elif isinstance(step, DeployStep):
            found.append((("steps", step_id, "model"), step_id, step.model))
            if step.gate is not None:
                found.append((("steps", step_id, "gate", "data"), step_id, step.gate.data))
    return found


def _reference_problems(pipeline: Pipeline, before: dict[str, set[str]]) -> list[Problem]:
    # a step with a need that names no step may have meant the step it reads: say only
    # the unknown need (reported apart) for it and the steps after it
    broken = {s for s, step in pipeline.steps.items() if set(step.needs) - set(pipeline.steps)}
    found = []
    for path, reader, ref in _references(pipeline):
        source, kind, name = split_reference(ref)
        step = pipeline.steps.get(source)
        if step is None:
            found.append(
                Problem(
                    path,
                    f"{ref} names step {source!r}, which is not a step of this pipeline"
                    f"{_suggest(source, pipeline.steps)}",
                )
            )
            continue
        if source not in before[reader] or source == reader:
            if reader in broken or before[reader] & broken:
                continue
            found.append(
                Problem(
                    path,
                    f"step {reader!r} reads {ref}, but {source!r} does not run before "
                    f"{reader!r}: add {source!r} to the needs of {reader!r} (or of a step "
                    "it needs)",
                )
            )
            continue
        declared = getattr(step, kind)
        if name not in declared:
            what = "output" if kind == "outputs" else "file"
            listed = ", ".join(declared) or "none"
            found.append(
                Problem(
                    path,
                    f"step {source!r} declares no {what} {name!r}{_suggest(name, declared)}: "
                    f"declare it under steps.{source}.{kind} or fix the name (its {kind}: "
                    f"{listed})",
                )
            )
    return found


def _profiles(pipeline: Pipeline) -> list[Problem]:
    if pipeline.profile is not None:
        return []
    return [
        Problem(
            ("steps", step_id),
            f"step {step_id!r} has no profile: set its profile, or a profile for the "
            "whole pipeline at the top of the file",
        )
        for step_id, step in pipeline.steps.items()
        if step.profile is None
    ]


def problems(pipeline: Pipeline) -> list[Problem]:
    """Return what is wrong with ``pipeline``'s graph, in the file's order; empty when it is fine."""
    found = _unknown_needs(pipeline) + _cycles(pipeline)
    found += _reference_problems(pipeline, upstream(pipeline))
    found += _profiles(pipeline)
    return found


def topological_order(pipeline: Pipeline) -> list[str]:
    """Return the step ids so that each comes after every step it needs.

    Among the steps ready at once, the one listed first in the file comes first.

    Raises
    ------
    ValueError
        The graph has a cycle or an unknown need (:func:`problems` says where).
    """
    position = {step_id: i for i, step_id in enumerate(pipeline.steps)}
    waiting = {step_id: set(step.needs) for step_id, step in pipeline.steps.items()}
    unknown = {n for needs in waiting.values() for n in needs} - set(position)
    if unknown:
        raise ValueError(f"needs name steps that do not exist: {', '.join(sorted(unknown))}")
    done: list[str] = []
    ready = [s for s in pipeline.steps if not waiting[s]]
    needed_by: dict[str, list[str]] = {s: [] for s in pipeline.steps}
    for step_id, needs in waiting.items():
        for need in needs:
            needed_by[need].append(step_id)
    while ready:
        ready.sort(key=position.__getitem__)
        current = ready.pop(0)
        done.append(current)
        for follower in needed_by[current]:
            waiting[follower].discard(current)
            if not waiting[follower]:
                ready.append(follower)
    if len(done) != len(position):
        stuck = [s for s in pipeline.steps if s not in done]
        raise ValueError(f"the steps {', '.join(stuck)} are on or after a cycle of needs")
    return done


def downstream(pipeline: Pipeline, step_ids: Iterable[str]) -> list[str]:
    """Return ``step_ids`` and every step that needs one of them, transitively, in run order.

    What a repair reruns: the failed or changed steps and everything that used what they
    made; steps before them keep their results.

    Raises
    ------
    KeyError
        One of ``step_ids`` is not a step of the pipeline.
    """
    wanted = list(step_ids)
    missing = [s for s in wanted if s not in pipeline.steps]
    if missing:
        raise KeyError(
            f"not steps of pipeline {pipeline.name!r}: {', '.join(missing)} "
            f"(its steps: {', '.join(pipeline.steps)})"
        )
    before = upstream(pipeline)
    chosen = set(wanted)
    return [
        step_id
        for step_id in topological_order(pipeline)
        if step_id in chosen or before[step_id] & chosen
    ]
