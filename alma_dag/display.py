"""HTML views of runs, plans and results, for notebooks.

Each renderer takes a live object and returns a self-contained HTML string:
no scripts, no external style sheets, no dependency beyond the standard
library. Jupyter shows it when an object's ``_repr_html_`` returns it.

- ``dispatcher_html``: a ``Dispatcher``'s ``progress()`` — state, a
  ``<progress>`` bar, done / failed / running / total, elapsed, ETA — and
  the first few failures with the first line of their error.
- ``plan_html``: a ``Plan``'s size, makespan, lower bound and their ratio,
  and the first lanes with their task counts.
- ``results_html``: the first rows of a ``{node id: result}`` dict, an
  ``Err`` shown as its type and first line.

Invariant: every piece of text that comes from the user (node ids, results,
error messages, experiment names) goes through ``html.escape``, so a node id
such as ``"<script>"`` is shown, never run. Long lists are cut to a few
rows with a "… N more" line: a notebook cell should stay small whatever the
size of the graph.
"""

from __future__ import annotations

import html
from collections.abc import Collection, Hashable, Mapping
from typing import Any

from .dispatch import Dispatcher
from .errors import Err
from .plan import Plan

__all__ = ["dispatcher_html", "plan_html", "results_html"]

#: Longest text shown for one node id, value or error line; a repr of a big
#: array would otherwise fill the cell.
MAX_TEXT = 120

_TABLE = 'style="border-collapse:collapse;text-align:left;font-size:0.9em"'
_CELL = 'style="padding:1px 8px;text-align:left;vertical-align:top"'
_FAILED = 'style="padding:1px 8px;text-align:left;color:#b00020"'


def dispatcher_html(dispatcher: Dispatcher, *, max_failures: int = 5) -> str:
    """An HTML summary of a run: state, progress bar, counts and failures.

    Parameters
    ----------
    dispatcher : Dispatcher
        The run (an ``ExperimentRun`` counts earlier sessions too).
    max_failures : int
        At most this many failed node ids are listed, each with the first
        line of its error.

    Returns
    -------
    str
        An HTML fragment.

    Examples
    --------
    >>> from alma_dag import Dispatcher, TaskGraph
    >>> graph = TaskGraph()
    >>> _ = graph.add("a", abs, (-1,))
    >>> "pending" in dispatcher_html(Dispatcher(graph, backend="inline"))
    True
    """
    progress = dispatcher.progress()
    over = progress.done + progress.failed
    title = type(dispatcher).__name__
    experiment = getattr(dispatcher, "experiment", None)
    if experiment is not None:
        title += f" {experiment.name!r}"
    counts = (
        f"{progress.done} done, {progress.failed} failed, "
        f"{progress.running} running, {progress.total} total"
    )
    parts = [
        "<div>",
        f"<strong>{_text(title)}</strong> — {_text(progress.state.value)}<br>",
        f'<progress value="{over}" max="{max(progress.total, 1)}" '
        f'style="width:20em"></progress> {over}/{progress.total}<br>',
        f"{_text(counts)}<br>",
        f"elapsed {_duration(progress.elapsed)}, ETA {_duration(progress.eta)}",
    ]
    if progress.failed:
        # in memory: no store read, however many results the store holds
        failures = list(dispatcher._failures().items())
        rows = [(_node(n), _first_line(r)) for n, r in failures[:max_failures]]
        parts.append(_table(("failed task", "error"), rows, len(failures), failed=1))
    parts.append("</div>")
    return "\n".join(parts)


def plan_html(plan: Plan, *, max_lanes: int = 8, max_nodes: int = 5) -> str:
    """An HTML summary of a plan: size, makespan against its lower bound,
    and the first lanes.

    Parameters
    ----------
    plan : Plan
        The plan, from ``heft`` or ``Dispatcher.plan``.
    max_lanes : int
        At most this many lanes are listed.
    max_nodes : int
        At most this many node ids are shown per lane.

    Returns
    -------
    str
        An HTML fragment.

    Examples
    --------
    >>> from alma_dag import TaskGraph, heft
    >>> graph = TaskGraph()
    >>> _ = graph.add("a", abs, (-1,), cost=2)
    >>> "makespan 2" in plan_html(heft(graph, 2))
    True
    """
    bound = plan.lower_bound
    ratio = f"{plan.makespan / bound:.2f}" if bound > 0 else "—"
    summary = (
        f"{len(plan)} tasks on {plan.n_processes} lanes, "
        f"makespan {plan.makespan:g}, lower bound {bound:g} (ratio {ratio})"
    )
    rows = []
    for index, lane in enumerate(plan.lanes[:max_lanes]):
        shown = ", ".join(_node(node) for node in lane[:max_nodes])
        if len(lane) > max_nodes:
            shown += f", … {len(lane) - max_nodes} more"
        rows.append((str(index), str(len(lane)), shown))
    table = _table(("lane", "tasks", "order"), rows, len(plan.lanes))
    return "\n".join(
        ["<div>", f"<strong>Plan</strong> — {_text(summary)}", table, "</div>"]
    )


def results_html(results: Mapping[Hashable, Any], *, max_rows: int = 20) -> str:
    """An HTML table of the first ``max_rows`` results.

    Parameters
    ----------
    results : mapping
        ``{node id: result}``, as ``Dispatcher.results`` or ``map_sweep``
        give; an ``Err`` is shown as its type and first line.
    max_rows : int
        At most this many rows are shown.

    Returns
    -------
    str
        An HTML fragment.

    Examples
    --------
    >>> from alma_dag import Err
    >>> print(results_html({"a": 1, "b": Err(ValueError("bad\\nmore"))}))
    ... # doctest: +NORMALIZE_WHITESPACE
    <table style="border-collapse:collapse;text-align:left;font-size:0.9em">
    <tr><th style="padding:1px 8px;text-align:left;vertical-align:top">task</th><th style="padding:1px 8px;text-align:left;vertical-align:top">result</th></tr>
    <tr><td style="padding:1px 8px;text-align:left;vertical-align:top">a</td><td style="padding:1px 8px;text-align:left;vertical-align:top">1</td></tr>
    <tr><td style="padding:1px 8px;text-align:left;vertical-align:top">b</td><td style="padding:1px 8px;text-align:left;color:#b00020">ValueError: bad</td></tr>
    </table>
    """  # noqa: E501
    rows = []
    failed = set()
    for index, (node, result) in enumerate(list(results.items())[:max_rows]):
        if _is_err(result):
            failed.add(index)
            rows.append((_node(node), _first_line(result)))
        else:
            rows.append((_node(node), _short(repr(result))))
    return _table(("task", "result"), rows, len(results), failed_rows=failed)


# -- helpers ------------------------------------------------------------------


def _table(
    header: tuple[str, ...],
    rows: list[tuple[str, ...]],
    total: int,
    *,
    failed: int | None = None,
    failed_rows: Collection[int] = (),
) -> str:
    """An HTML table of plain-text ``rows`` (escaped here), then a
    "… N more" row when ``total`` exceeds them. Column ``failed`` of every
    row, and every column but the first of ``failed_rows``, is shown in red."""
    lines = [f"<table {_TABLE}>", "<tr>" + "".join(_th(h) for h in header) + "</tr>"]
    for index, row in enumerate(rows):
        cells = []
        for column, value in enumerate(row):
            text = _text(value)
            is_red = column == failed or (column > 0 and index in failed_rows)
            cells.append(f"<td {_FAILED if is_red else _CELL}>{text}</td>")
        lines.append("<tr>" + "".join(cells) + "</tr>")
    if total > len(rows):
        more = f"… {total - len(rows)} more"
        lines.append(f'<tr><td {_CELL} colspan="{len(header)}">{more}</td></tr>')
    lines.append("</table>")
    return "\n".join(lines)


def _th(text: str) -> str:
    return f"<th {_CELL}>{_text(text)}</th>"


def _text(text: str) -> str:
    return html.escape(text, quote=True)


def _short(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def _node(node: Hashable) -> str:
    """A node id as text: strings as they are, anything else as its repr."""
    return _short(node if isinstance(node, str) else repr(node))


def _is_err(result: Any) -> bool:
    return isinstance(result, Err)


def _first_line(err: Err) -> str:
    """``"ValueError: first line of the message"``."""
    lines = str(err).strip().splitlines()
    first = lines[0] if lines else ""
    name = err.err_type.__name__
    return _short(f"{name}: {first}" if first else name)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
