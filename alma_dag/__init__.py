"""alma_dag: plan, run, pause and resume DAGs of Python tasks.

Everything public is importable from here; the submodules are the stages
(``graph`` -> ``plan`` -> ``dispatch`` -> ``backends``) and the front ends.
"""

from __future__ import annotations

from .dispatch import Callbacks, Dispatcher, Progress, RunState
from .errors import (
    AlmaDagError,
    CycleError,
    DefinitionError,
    DependencyError,
    Err,
    InvalidStateError,
    SerializationError,
    StoreError,
    TaskCancelled,
    TaskFailure,
    TaskTimeoutError,
    WorkerDied,
)
from .graph import Dependency, Task, TaskGraph, prefix, remove_duplicates, to_dot
from .plan import Plan, PlannedTask, heft
from .tasklists import (
    Position,
    TaskLists,
    earliest_finish_time,
    execute_task_lists,
    run,
)

__version__ = "0.1.0"

__all__ = [
    "AlmaDagError",
    "Callbacks",
    "CycleError",
    "DefinitionError",
    "Dependency",
    "DependencyError",
    "Dispatcher",
    "Err",
    "InvalidStateError",
    "Plan",
    "PlannedTask",
    "Position",
    "Progress",
    "RunState",
    "SerializationError",
    "StoreError",
    "Task",
    "TaskCancelled",
    "TaskFailure",
    "TaskGraph",
    "TaskLists",
    "TaskTimeoutError",
    "WorkerDied",
    "earliest_finish_time",
    "execute_task_lists",
    "heft",
    "prefix",
    "remove_duplicates",
    "run",
    "to_dot",
]
