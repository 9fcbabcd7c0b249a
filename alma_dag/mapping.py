"""Running a function over a ParamSweeper's combinations on the engine.

``map_sweep(function, sweeper)`` claims the sweeper's remaining
combinations a chunk at a time (they turn *inprogress*, so other processes
sharing the sweeper's directory take others), runs ``function(combination)``
for each on the dispatcher's process pool, and marks each combination
*done* as soon as its result is back: the sweeper is the checkpoint, so a
script relaunched after a crash runs only what is not done. A combination
whose call raises is marked *skipped* (retried by the next launch, not by
this one). Ctrl-C cancels the claimed combinations that did not finish, so
they go back to *todo*.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from .backends import Backend
from .dispatch import Callbacks, Dispatcher
from .errors import DefinitionError, Err
from .graph import TaskGraph
from .sweeper import ParamSweeper

__all__ = ["map_sweep"]


class _Marker(Callbacks):
    """Marks each combination in the sweeper as its task finishes."""

    def __init__(self, sweeper: ParamSweeper, chunk: dict[str, Any], bar: Any):
        self.sweeper, self.chunk, self.bar = sweeper, chunk, bar
        self.marked: set[str] = set()

    def on_task_done(self, node: Hashable, result: Any) -> None:
        combination = self.chunk[node]
        if isinstance(result, Err):
            self.sweeper.skip(combination)
        else:
            self.sweeper.done(combination)
        self.marked.add(node)
        self.bar.update(1)


def map_sweep(
    function: Callable[[Any], Any],
    sweeper: ParamSweeper,
    *,
    workers: int = 2,
    backend: str | Backend = "loky",
    chunk: int | None = None,
    progress: bool = True,
) -> dict[Any, Any]:
    """Run ``function(combination)`` for every remaining combination.

    Parameters
    ----------
    function : callable
        Called with one combination; lambdas and closures are fine (they
        travel to the workers with cloudpickle).
    sweeper : ParamSweeper
        Where the combinations come from and their states are kept.
    workers : int
        Worker processes.
    backend : str or Backend
        ``"loky"`` (default) or ``"inline"``.
    chunk : int, optional
        Combinations claimed at a time; defaults to 16 per worker, so
        processes sharing the sweeper share the work.
    progress : bool
        Show a progress bar (a widget in Jupyter).

    Returns
    -------
    dict
        ``{combination: result}`` for the combinations run by this call; a
        failed one's result is an ``Err``.

    Raises
    ------
    DefinitionError
        ``workers`` or ``chunk`` is not a positive integer.
    """
    for name, value in (("workers", workers), ("chunk", chunk or 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise DefinitionError(
                f"{name} must be a positive integer, got {value!r}", field=name
            )
    from tqdm.auto import tqdm  # a widget in Jupyter, a bar in a terminal

    size = chunk or 16 * workers
    results: dict[Any, Any] = {}
    with tqdm(
        total=len(sweeper.get_remaining()), unit="combination", disable=not progress
    ) as bar:
        while True:
            claimed = sweeper.get_next_batch(size)
            if not claimed:
                return results
            results.update(
                _run_chunk(function, sweeper, claimed, workers, backend, bar)
            )


def _run_chunk(function, sweeper, claimed, workers, backend, bar) -> dict[Any, Any]:
    chunk = {str(i): combination for i, combination in enumerate(claimed)}
    graph = TaskGraph()
    for node, combination in chunk.items():
        graph.add(node, function, (combination,))
    marker = _Marker(sweeper, chunk, bar)
    dispatcher = Dispatcher(graph, workers, backend, callbacks=[marker])
    dispatcher.start()
    try:
        while not dispatcher.wait(0.1):  # a wait Ctrl-C can interrupt
            pass
    except BaseException:
        dispatcher.stop()
        raise
    finally:
        unfinished = [c for node, c in chunk.items() if node not in marker.marked]
        if unfinished:
            sweeper.cancel_batch(unfinished)
    finished = dispatcher.results
    return {chunk[node]: result for node, result in finished.items()}
