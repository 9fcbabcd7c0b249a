"""The ``inline`` backend: batches run in the dispatcher's own thread.

For debugging (a breakpoint in a task stops the whole run there, and
nothing is pickled) and as the test double of the other backends. Nothing
can be killed mid-task: a task that outlives its timeout is reported as
timed out once it returns.
"""

from __future__ import annotations

from collections import deque

from ..errors import Err, TaskTimeoutError
from .base import Backend, Batch, Outcome, execute_batch

__all__ = ["InlineBackend"]


class InlineBackend(Backend):
    """Run each batch in the thread that drives the dispatcher."""

    name = "inline"

    def open(self, n_workers, report, store=None) -> None:
        super().open(n_workers, report, store)
        self._pending: deque[Batch] = deque()

    def submit(self, batch: Batch) -> None:
        self._pending.append(batch)

    def drive(self, timeout: float | None) -> bool:
        if not self._pending:
            return False
        batch = self._pending.popleft()
        outcomes = execute_batch(batch.items, batch.inputs)
        if batch.timeout is not None:
            outcomes = [
                _late(node, o, batch.timeout)
                for (node, _), o in zip(batch.items, outcomes, strict=True)
            ]
        self._report(Outcome(batch.id, outcomes))
        return True

    def kill(self) -> None:
        self._pending.clear()


def _late(node, outcome, timeout):
    result, start, finish = outcome
    if finish - start <= timeout:
        return outcome
    error = TaskTimeoutError(
        f"task {node!r} ran {finish - start:.3g} s, past its timeout of {timeout} s",
        task=node,
        timeout=timeout,
    )
    return Err(error), start, finish
