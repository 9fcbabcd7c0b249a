"""alma_dag: plan, run, pause and resume DAGs of Python tasks.

Everything public is importable from here; the submodules are the stages
(``graph`` -> ``plan`` -> ``dispatch`` -> ``backends``) and the front ends.
"""

from __future__ import annotations

from . import experiment
from .dispatch import Callbacks, Dispatcher, Progress, RunState
from .engine import (
    Engine,
    OutputCapture,
    copy_outputs,
    logger,
    redirect_outputs,
    slugify,
)
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
from .experiment import ExperimentError, ExperimentRun
from .graph import (
    Dependency,
    Task,
    TaskGraph,
    extract,
    prefix,
    remove_duplicates,
    resolve,
    to_dot,
)
from .mapping import map_sweep
from .plan import (
    Plan,
    PlannedTask,
    critical_path_length,
    heft,
    plan_from_lanes,
    upward_ranks,
)
from .schedulers import (
    BaseScheduler,
    LaxistScheduler,
    MaxMemoryScheduler,
    MaxThreadsScheduler,
)
from .store import LockedError, NodeStatus, Store
from .sweep import HashableDict, geom, igeom, sweep, sweep_stats
from .sweeper import ParamSweeper
from .tasklists import (
    Position,
    TaskLists,
    earliest_finish_time,
    execute_task_lists,
    run,
)
from .workers import Boss, BossState, Worker, batch_main, hire_worker, run_as_server

__version__ = "0.1.0"

__all__ = [
    "AlmaDagError",
    "BaseScheduler",
    "Boss",
    "BossState",
    "Callbacks",
    "CycleError",
    "DefinitionError",
    "Dependency",
    "DependencyError",
    "Dispatcher",
    "Engine",
    "Err",
    "ExperimentError",
    "ExperimentRun",
    "HashableDict",
    "InvalidStateError",
    "LaxistScheduler",
    "LockedError",
    "MaxMemoryScheduler",
    "MaxThreadsScheduler",
    "NodeStatus",
    "OutputCapture",
    "ParamSweeper",
    "Plan",
    "PlannedTask",
    "Position",
    "Progress",
    "RunState",
    "SerializationError",
    "Store",
    "StoreError",
    "Task",
    "TaskCancelled",
    "TaskFailure",
    "TaskGraph",
    "TaskLists",
    "TaskTimeoutError",
    "Worker",
    "WorkerDied",
    "batch_main",
    "copy_outputs",
    "critical_path_length",
    "earliest_finish_time",
    "execute_task_lists",
    "experiment",
    "extract",
    "geom",
    "heft",
    "hire_worker",
    "igeom",
    "logger",
    "map_sweep",
    "plan_from_lanes",
    "prefix",
    "redirect_outputs",
    "remove_duplicates",
    "resolve",
    "run",
    "run_as_server",
    "slugify",
    "sweep",
    "sweep_stats",
    "to_dot",
    "upward_ranks",
]
