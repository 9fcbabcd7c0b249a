"""The exception tree of alma_dag, and ``Err``, the result of a failed task.

Every exception alma_dag raises is an ``AlmaDagError``; each family also
subclasses the builtin a caller would already catch::

    AlmaDagError
    ├── DefinitionError (ValueError)   bad graph, file or field, found before
    │   └── CycleError                 anything runs; ``.cycle`` holds the path
    ├── InvalidStateError (RuntimeError)   start/pause/resume/stop out of turn
    ├── StoreError (OSError)           a checkpoint store that cannot be used
    └── TaskFailure (RuntimeError)     why a task produced no result; found
        │                              inside an ``Err``, never raised by a run
        ├── DependencyError            a task it depends on failed
        ├── TaskTimeoutError (TimeoutError)  it ran past its timeout
        ├── WorkerDied                 its worker process died under it
        ├── TaskCancelled              the run was stopped before it finished
        └── SerializationError         its function, arguments or result
                                       could not be pickled

A task that raises does not raise out of a run: its result is an ``Err``
holding the exception and the worker's traceback text, and each of its
dependents gets an ``Err(DependencyError)`` naming it.

Every exception here survives a cloudpickle round trip with its attributes,
so an error raised in a worker process arrives whole in the dispatcher.
"""

from __future__ import annotations

import traceback as _traceback
from collections.abc import Hashable
from typing import Any

import cloudpickle

__all__ = [
    "AlmaDagError",
    "CycleError",
    "DefinitionError",
    "DependencyError",
    "Err",
    "InvalidStateError",
    "SerializationError",
    "StoreError",
    "TaskCancelled",
    "TaskFailure",
    "TaskTimeoutError",
    "WorkerDied",
]


def _rebuild(cls: type, args: tuple, state: dict) -> BaseException:
    # Not cls.__new__: for TaskTimeoutError that finds RuntimeError.__new__,
    # which refuses a subclass of OSError. The __base__ line follows the
    # instance layout, so its first __new__ is the one that fits.
    base = cls
    while "__new__" not in vars(base):
        base = base.__base__
    exc = base.__new__(cls)
    exc.args = args
    exc.__dict__.update(state)
    return exc


class AlmaDagError(Exception):
    """Base class of every exception alma_dag raises."""

    def __reduce__(self):  # keeps attributes whatever __init__'s signature
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))


class DefinitionError(AlmaDagError, ValueError):
    """A task graph, experiment file or field is invalid.

    Raised before anything is created or run. ``path`` names the file and
    ``field`` the field or task, when known.
    """

    def __init__(
        self, message: str, *, path: str | None = None, field: str | None = None
    ) -> None:
        if path is not None and not message.startswith(f"{path}:"):
            message = f"{path}: {message}"
        super().__init__(message)
        self.path = path
        self.field = field


class CycleError(DefinitionError):
    """The task graph has a cycle; ``cycle`` lists its node ids in order,
    the first repeated at the end."""

    def __init__(self, cycle: list[Hashable], *, path: str | None = None) -> None:
        text = " -> ".join(repr(node) for node in cycle)
        super().__init__(
            f"cycle: {text}; a task cannot depend on itself, even indirectly",
            path=path,
        )
        self.cycle = list(cycle)


class InvalidStateError(AlmaDagError, RuntimeError):
    """An operation was asked of a run in a state that does not allow it."""


class StoreError(AlmaDagError, OSError):
    """A checkpoint store cannot be created, opened, trusted or written."""

    def __reduce__(self):  # errno, strerror and filename live outside args
        return OSError.__reduce__(self)


class TaskFailure(AlmaDagError, RuntimeError):
    """Why a task gave no result. ``task`` is the failed task's node id."""

    def __init__(self, message: str, *, task: Hashable = None) -> None:
        super().__init__(message)
        self.task = task


class DependencyError(TaskFailure):
    """A task was not run because a task it depends on failed.

    ``dependency`` is the node id of the failed task, ``task`` the one not run.
    """

    def __init__(
        self, message: str, *, task: Hashable = None, dependency: Hashable = None
    ) -> None:
        super().__init__(message, task=task)
        self.dependency = dependency


class TaskTimeoutError(TaskFailure, TimeoutError):
    """A task ran longer than its ``timeout`` and its worker was stopped."""

    def __init__(
        self, message: str, *, task: Hashable = None, timeout: float | None = None
    ) -> None:
        super().__init__(message, task=task)
        self.timeout = timeout


class WorkerDied(TaskFailure):
    """The worker process running a task died (a crash, ``os._exit``, a kill
    for memory); ``exitcode`` is the worker's exit code when known."""

    def __init__(
        self, message: str, *, task: Hashable = None, exitcode: Any = None
    ) -> None:
        super().__init__(message, task=task)
        self.exitcode = exitcode


class TaskCancelled(TaskFailure):
    """A task did not finish because the run was stopped; ``reason`` says
    what stopped it."""

    def __init__(
        self, message: str, *, task: Hashable = None, reason: str = ""
    ) -> None:
        super().__init__(message, task=task)
        self.reason = reason


class SerializationError(TaskFailure):
    """A task's function, arguments or result could not be pickled, so it
    could not travel between the dispatcher and a worker process."""


class _RemoteException(Exception):
    """Stands in for a worker's exception that cannot itself be pickled."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name

    def __reduce__(self):  # args hold one string, __init__ wants two
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))


def portable_exception(exc: BaseException) -> BaseException:
    """Return ``exc`` if it survives a cloudpickle round trip, else a
    stand-in that keeps its type name and message."""
    try:
        cloudpickle.loads(cloudpickle.dumps(exc))
    except Exception:
        return _RemoteException(type(exc).__qualname__, str(exc))
    return exc


class Err:
    """The result of a task that failed.

    Parameters
    ----------
    exception : BaseException
        What the task raised, or a ``TaskFailure`` saying why it gave no
        result (a failed dependency, a timeout, a dead worker, a stop).
    traceback : str, optional
        The worker's formatted traceback text; empty when there is none.

    Examples
    --------
    >>> err = Err(ZeroDivisionError("division by zero"))
    >>> err.err_type.__name__, str(err)
    ('ZeroDivisionError', 'division by zero')
    >>> err == Err(ZeroDivisionError("division by zero"))
    True
    """

    __slots__ = ("exception", "traceback")

    def __init__(self, exception: BaseException, traceback: str = "") -> None:
        self.exception = exception
        self.traceback = traceback

    @classmethod
    def from_current(cls, exc: BaseException) -> Err:
        """An ``Err`` for ``exc`` being handled now, with its traceback text."""
        text = "".join(_traceback.format_exception(type(exc), exc, exc.__traceback__))
        return cls(portable_exception(exc), text)

    @property
    def err_type(self) -> type[BaseException]:
        """The type of the exception."""
        return type(self.exception)

    @property
    def args(self) -> tuple:
        """The exception's arguments."""
        return self.exception.args

    @property
    def message_with_traceback(self) -> str:
        """The message followed by the worker's traceback text."""
        if not self.traceback:
            return str(self)
        return f"{self}\n{self.traceback}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Err):
            return NotImplemented
        return self.err_type is other.err_type and self.args == other.args

    def __hash__(self) -> int:
        return hash((self.err_type, repr(self.args)))

    def __repr__(self) -> str:
        return f"Err({self.exception!r})"

    def __str__(self) -> str:
        return str(self.exception)

    def __reduce__(self):
        return (Err, (self.exception, self.traceback))
