"""Experiment files: pyalma's front end, on a durable checkpoint store.

In: ``example.experiment``, a JSON object::

    {"load": "example.py",        the run module, relative to this file
     "workers": 3,                processes running run() at once (>= 1)
     "iterations": 100,           calls of run() per instance (>= 0)
     "batch": "example.batch",    the batch file, relative to this file
     "parameters": {...},         optional: a sweep (see alma_dag.sweep)
     "memory": 512,               optional: MiB each run declares (>= 0)
     "scheduler": {"name": "max_memory", "max_memory_percentage": 0.5},
                                  optional: admission control, see below
     "name": "example"}           optional: defaults to the file's stem

and ``example.batch``, ``{"instances": ["file1", ...]}``, whose relative
instance paths resolve against the batch file's folder.

The run module defines ``run(instance)`` or ``run(instance, save, state)``
and optionally ``done()``; its folder is on ``sys.path`` (here and in the
workers), so it may import modules beside it. With ``parameters``, each
combination of the sweep is its own set of nodes, and reaches ``run`` as a
dict in its ``parameters`` argument, so ``run`` must accept one:
``run(instance, parameters)`` or ``run(instance, save, state, parameters)``.

Out: a ``ExperimentRun`` (a ``Dispatcher``) over one node per (instance,
[combination,] iteration) not yet recorded done, plus a node calling
``done()`` after all of them. Node ids are stable strings --
``"data/a.txt#3"``, or ``'data/a.txt {"k": 2}#3'`` with parameters -- so the
same definition compiles to the same ids, and adding instances or
iterations later runs only the new nodes (and ``done()`` again after them).

With a ``scheduler``, a run starts only when the scheduler admits it (see
``alma_dag.schedulers``): ``{"name": "laxist"}``, ``{"name": "max_threads",
"max_threads": 2}`` or ``{"name": "max_memory", "max_memory_percentage":
0.5, "total_system_memory": 4096}`` (MiB; this machine's memory when
omitted), the other keys being the scheduler's arguments. ``memory`` is
each run's ``Task.memory``, what ``max_memory`` counts; a run that could
never fit the budget is refused with the file.

Checkpoints live in ``<experiment folder>/<experiment stem>.alma/``. Every
file and field is checked before anything is written; a bad one raises
``ExperimentError`` naming the file and the field.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import inspect
import json
import math
import os
import shutil
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cloudpickle

from .backends import Backend
from .dispatch import Callbacks, Dispatcher, Progress
from .errors import DefinitionError
from .graph import TaskGraph
from .schedulers import (
    BaseScheduler,
    LaxistScheduler,
    MaxMemoryScheduler,
    MaxThreadsScheduler,
)
from .store import Store, run_lock, state_route
from .sweep import sweep

__all__ = [
    "Experiment",
    "ExperimentError",
    "ExperimentRun",
    "ExperimentStatus",
    "load",
    "read_experiment",
    "reset",
    "status",
]

#: The node id of the call to ``done()``; run node ids always end in "#n".
DONE_NODE = "done()"

_FIELDS = {
    "load",
    "workers",
    "iterations",
    "batch",
    "parameters",
    "memory",
    "scheduler",
    "name",
}

#: The schedulers an experiment file may name, with their arguments.
_SCHEDULERS: dict[str, tuple[type[BaseScheduler], tuple[str, ...]]] = {
    "laxist": (LaxistScheduler, ()),
    "max_threads": (MaxThreadsScheduler, ("max_threads",)),
    "max_memory": (
        MaxMemoryScheduler,
        ("max_memory_percentage", "total_system_memory"),
    ),
}


class ExperimentError(DefinitionError):
    """An experiment file, batch file or run module is invalid. ``path``
    names the file and ``field`` the field."""


@dataclass(frozen=True, slots=True)
class Experiment:
    """A validated experiment definition; nothing written yet."""

    #: The experiment file.
    path: Path
    #: The experiment's name.
    name: str
    #: The run module's file.
    module: Path
    #: The batch file.
    batch: Path
    #: Processes running ``run()`` at once.
    workers: int
    #: Calls of ``run()`` per instance and combination.
    iterations: int
    #: Instances as written in the batch file (they name the nodes).
    instances: tuple[str, ...]
    #: Parameter combinations, or None when the experiment has none.
    combinations: tuple[dict, ...] | None
    #: Memory each run declares, in MiB (``Task.memory`` of its node).
    memory: float = 0.0
    #: The admission scheduler, or None to start runs as workers free up.
    scheduler: BaseScheduler | None = None

    @property
    def run_dir(self) -> Path:
        """Where the checkpoint store lives: ``<folder>/<stem>.alma``."""
        return self.path.with_name(self.path.stem + ".alma")

    def instance_path(self, instance: str) -> str:
        """The path ``run()`` receives for ``instance``."""
        return str((self.batch.parent / instance).resolve())

    def node_ids(self) -> list[str]:
        """Every run node's id, in order: instance, combination, iteration."""
        combos = [None] if self.combinations is None else self.combinations
        return [
            node_id(instance, combo, i)
            for instance in self.instances
            for combo in combos
            for i in range(self.iterations)
        ]


def node_id(instance: str, combination: Mapping | None, iteration: int) -> str:
    """The stable id of one call of ``run()``."""
    if combination is None:
        return f"{instance}#{iteration}"
    text = json.dumps(combination, sort_keys=True, default=repr)
    return f"{instance} {text}#{iteration}"


# -- reading the files -----------------------------------------------------------


def _read_json(path: Path, what: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ExperimentError(f"{what} not found", path=str(path)) from None
    except OSError as exc:
        raise ExperimentError(
            f"cannot read the {what}: {exc}", path=str(path)
        ) from None
    except UnicodeDecodeError as exc:
        raise ExperimentError(
            f"the {what} is not UTF-8 text (byte {exc.start}); save it as UTF-8 JSON",
            path=str(path),
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ExperimentError(
            f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}",
            path=str(path),
        ) from None
    except ValueError as exc:  # an integer too long to convert
        raise ExperimentError(f"malformed JSON: {exc}", path=str(path)) from None


def _field(data: Mapping, name: str, path: Path, kind: type, check, wanted: str):
    value = data.get(name)
    ok = isinstance(value, kind) and not isinstance(value, bool) and check(value)
    if not ok:
        raise ExperimentError(
            f"field {name!r} must be {wanted}, got {value!r}",
            path=str(path),
            field=name,
        )
    return value


def read_experiment(path: str | os.PathLike) -> Experiment:
    """Read and validate an experiment file and its batch file.

    Raises
    ------
    ExperimentError
        A file is missing or malformed, or a field is missing or invalid;
        the message names the file and the field.
    """
    try:
        path = Path(path).resolve()
    except (OSError, ValueError) as exc:  # a NUL byte, a symlink loop
        raise ExperimentError(f"not a usable path: {exc}", path=str(path)) from None
    data = _read_json(path, "experiment file")
    if not isinstance(data, dict):
        raise ExperimentError("must hold a JSON object", path=str(path))
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise ExperimentError(
            f"unknown field {unknown[0]!r}; the fields are "
            + ", ".join(sorted(_FIELDS)),
            path=str(path),
            field=unknown[0],
        )
    text = (str, lambda v: bool(v.strip()), "a non-empty string (a path)")
    module = path.parent / _field(data, "load", path, *text)
    batch = path.parent / _field(data, "batch", path, *text)
    workers = _field(data, "workers", path, int, lambda v: v >= 1, "an integer >= 1")
    iterations = _field(
        data, "iterations", path, int, lambda v: v >= 0, "an integer >= 0"
    )
    name = data.get("name", path.stem)
    if not isinstance(name, str) or not name:
        raise ExperimentError(
            f"field 'name' must be a non-empty string, got {name!r}",
            path=str(path),
            field="name",
        )
    combinations = None
    if "parameters" in data:
        combinations = _combinations(data["parameters"], path)
    memory = 0.0
    if "memory" in data:
        memory = _field(
            data,
            "memory",
            path,
            (int, float),
            _is_finite_non_negative,
            "a non-negative number (MiB per run)",
        )
    scheduler = None
    if "scheduler" in data:
        scheduler = _scheduler(data["scheduler"], path)
    try:
        found = batch.is_file()
    except OSError:  # a name too long for the file system
        found = False
    if not found:
        raise ExperimentError(
            f"batch file {str(batch)!r} not found; field 'batch' names it, "
            "relative to the experiment file",
            path=str(path),
            field="batch",
        )
    experiment = Experiment(
        path,
        name,
        module,
        batch,
        workers,
        iterations,
        _instances(batch),
        combinations,
        memory,
        scheduler,
    )
    _check_admission(experiment)
    return experiment


def _is_finite_non_negative(value: float) -> bool:
    try:
        return math.isfinite(value) and value >= 0
    except OverflowError:  # an int too large for a float
        return False


def _scheduler(spec: Any, path: Path) -> BaseScheduler:
    """The scheduler a ``scheduler`` field describes."""
    names = ", ".join(repr(n) for n in sorted(_SCHEDULERS))
    name = spec.get("name") if isinstance(spec, dict) else None
    if not isinstance(name, str) or name not in _SCHEDULERS:
        got = f"name {name!r}" if isinstance(spec, dict) else repr(spec)
        raise ExperimentError(
            'field \'scheduler\' must be an object such as {"name": "max_threads", '
            f'"max_threads": 2}} whose name is one of {names}, got {got}',
            path=str(path),
            field="scheduler",
        )
    cls, arguments = _SCHEDULERS[name]
    unknown = sorted(set(spec) - {"name", *arguments})
    if unknown:
        known = ", ".join(repr(a) for a in arguments) or "none"
        raise ExperimentError(
            f"field 'scheduler': {name!r} takes no argument {unknown[0]!r}; "
            f"its arguments are {known}",
            path=str(path),
            field="scheduler",
        )
    try:
        return cls(**{a: spec[a] for a in arguments if a in spec})
    except DefinitionError as exc:
        raise ExperimentError(
            f"field 'scheduler': {exc}", path=str(path), field="scheduler"
        ) from None


def _check_admission(experiment: Experiment) -> None:
    """Refuse runs that the scheduler could never start."""
    if experiment.scheduler is None or not (
        experiment.instances and experiment.iterations
    ):
        return
    combination = (experiment.combinations or [None])[0]
    # Every run declares the same memory: checking the first checks them all.
    first = node_id(experiment.instances[0], combination, 0)
    try:
        experiment.scheduler.validate({"name": first, "memory": experiment.memory})
    except DefinitionError as exc:
        raise ExperimentError(
            f"field 'memory': {exc}", path=str(experiment.path), field="memory"
        ) from None


def _combinations(parameters: Any, path: Path) -> tuple[dict, ...]:
    if not isinstance(parameters, dict) or not parameters:
        raise ExperimentError(
            "field 'parameters' must be a non-empty object of factor -> levels, "
            f"got {parameters!r}",
            path=str(path),
            field="parameters",
        )
    try:
        return tuple(sweep(parameters))
    except (DefinitionError, TypeError) as exc:
        raise ExperimentError(
            f"field 'parameters': {exc}", path=str(path), field="parameters"
        ) from None


def _instances(batch: Path) -> tuple[str, ...]:
    data = _read_json(batch, "batch file")
    instances = data.get("instances") if isinstance(data, dict) else None
    if not isinstance(instances, list) or not all(
        isinstance(i, str) and i for i in instances
    ):
        raise ExperimentError(
            'must be {"instances": [...]}, a list of non-empty strings',
            path=str(batch),
            field="instances",
        )
    if len(set(instances)) != len(instances):
        seen: set[str] = set()
        twice = next(i for i in instances if i in seen or seen.add(i))
        raise ExperimentError(
            f"field 'instances': instance {twice!r} is listed twice",
            path=str(batch),
            field="instances",
        )
    return tuple(instances)


# -- the run module ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _RunModule:
    run: Callable
    done: Callable | None
    takes_state: bool
    takes_parameters: bool


def _load_module(experiment: Experiment) -> _RunModule:
    path = experiment.module
    if not path.is_file():
        raise ExperimentError(
            f"run module {str(path)!r} not found; field 'load' names it, relative "
            "to the experiment file",
            path=str(experiment.path),
            field="load",
        )
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
    name = f"alma_dag_run_{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    folder = str(path.parent)
    if folder not in sys.path:  # so the run module's own imports work
        sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise ExperimentError(
            f"importing the run module failed: {type(exc).__name__}: {exc}",
            path=str(path),
        ) from exc
    # Workers cannot import a module by file path: its functions travel
    # by value.
    cloudpickle.register_pickle_by_value(module)
    return _inspect_module(module, path, experiment.combinations is not None)


def _inspect_module(module: Any, path: Path, swept: bool) -> _RunModule:
    run = getattr(module, "run", None)
    if not callable(run):
        raise ExperimentError(
            "the run module defines no run(instance) function",
            path=str(path),
            field="run",
        )
    done = getattr(module, "done", None)
    if done is not None and not callable(done):
        raise ExperimentError("done must be a function", path=str(path), field="done")
    try:
        params = inspect.signature(run).parameters
    except (TypeError, ValueError):
        params = {}
    names = [
        n
        for n, p in params.items()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    takes_parameters = "parameters" in params or any(
        p.kind is p.VAR_KEYWORD for p in params.values()
    )
    positional = [n for n in names if n != "parameters"]
    if len(positional) not in (1, 3):
        raise ExperimentError(
            f"run{inspect.signature(run)} has an unusable signature: it must be "
            "run(instance) or run(instance, save, state), each with an optional "
            "'parameters' argument",
            path=str(path),
            field="run",
        )
    if swept and not takes_parameters:
        raise ExperimentError(
            "the experiment has 'parameters', so run() must take a "
            "'parameters' argument to receive each combination",
            path=str(path),
            field="run",
        )
    wanted = params.get("parameters")
    if not swept and wanted is not None and wanted.default is wanted.empty:
        raise ExperimentError(
            "run() requires a 'parameters' argument but the experiment has no "
            "'parameters' field; add one, or give the argument a default",
            path=str(path),
            field="run",
        )
    return _RunModule(run, done, len(positional) == 3, takes_parameters)


class _Beside:
    """A run module's function on its way to a worker: it travels by value
    and is unpickled there only once the module's folder is on sys.path,
    so the names the module imported (a helper module beside it) resolve."""

    __slots__ = ("function", "folder")

    def __init__(self, function: Callable, folder: str) -> None:
        self.function = function
        self.folder = folder

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.function(*args, **kwargs)

    def __reduce__(self):
        return (_unpickle_beside, (self.folder, cloudpickle.dumps(self.function)))


def _unpickle_beside(folder: str, payload: bytes) -> Callable:
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return cloudpickle.loads(payload)


def call_run(
    run: Callable,
    instance: str,
    node: str,
    database: str,
    takes_state: bool,
    parameters: dict | None,
    folder: str,
) -> Any:
    """What a run node does in its worker: read the node's last saved
    state, then call ``run``, with ``save`` committing new states."""
    if folder not in sys.path:  # so the run module's own imports work
        sys.path.insert(0, folder)
    kwargs = {} if parameters is None else {"parameters": dict(parameters)}
    if not takes_state:
        return run(instance, **kwargs)
    route = state_route()  # taken now: threads the run starts have none

    def save(state: str) -> None:
        route.save(database, node, state)

    return run(instance, save, route.load(database, node), **kwargs)


def call_done(done: Callable, folder: str) -> Any:
    """What the last node does: call the run module's ``done()``."""
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return done()


# -- compiling ----------------------------------------------------------------------


def compile_graph(
    experiment: Experiment,
    module: _RunModule,
    done: set[str],
    durations: Mapping[str, float],
    database: str,
) -> TaskGraph:
    """The graph of what is left: a node per run not recorded done, and the
    ``done()`` node after them. Planned costs are measured durations of
    the same instance when there are some, else the mean of all."""
    graph = TaskGraph()
    folder = str(experiment.module.parent)
    run = _Beside(module.run, folder)
    costs = _cost_model(durations)
    combos = [None] if experiment.combinations is None else experiment.combinations
    for instance in experiment.instances:
        path = experiment.instance_path(instance)
        for combo in combos:
            for i in range(experiment.iterations):
                node = node_id(instance, combo, i)
                if node in done:
                    continue
                args = (
                    run,
                    path,
                    node,
                    database,
                    module.takes_state,
                    combo,
                    folder,
                )
                graph.add(
                    node,
                    call_run,
                    args,
                    cost=costs(instance),
                    memory=experiment.memory,
                )
    if module.done is not None and (len(graph) or DONE_NODE not in done):
        graph.add(
            DONE_NODE,
            call_done,
            (_Beside(module.done, folder), folder),
            cost=0.0,
            after=list(graph),
        )
    return graph


def _cost_model(durations: Mapping[str, float]) -> Callable[[str], float]:
    per_instance: dict[str, list[float]] = {}
    for node, seconds in durations.items():
        if node != DONE_NODE:
            instance = node.rsplit("#", 1)[0].split(" {", 1)[0]
            per_instance.setdefault(instance, []).append(seconds)
    means = {k: sum(v) / len(v) for k, v in per_instance.items()}
    overall = sum(means.values()) / len(means) if means else 1.0
    return lambda instance: means.get(instance, overall)


# -- running ------------------------------------------------------------------------


class ExperimentRun(Dispatcher):
    """A ``Dispatcher`` over an experiment's remaining work.

    ``progress()`` counts the whole experiment: runs recorded done by
    earlier sessions are part of ``total`` and ``done``.
    """

    def __init__(
        self,
        experiment: Experiment,
        graph: TaskGraph,
        store: Store,
        prior: int,
        **options: Any,
    ) -> None:
        super().__init__(graph, store=store, **options)
        #: The experiment's definition.
        self.experiment = experiment
        self._prior = prior

    def _prepare(self) -> None:
        # The store is written only under the run lock, which is held now.
        self.store.set_meta("experiment", str(self.experiment.path))
        if DONE_NODE in self.graph and DONE_NODE not in self._results:
            self.store.forget([DONE_NODE])  # runs were added since it ran
        super()._prepare()

    def progress(self) -> Progress:
        progress = super().progress()
        return dataclasses.replace(
            progress,
            total=progress.total + self._prior,
            done=progress.done + self._prior,
        )

    progress.__doc__ = Dispatcher.progress.__doc__

    def result(self, node: str) -> Any:
        """The recorded result of ``node``, whichever session ran it.

        Raises
        ------
        KeyError
            ``node`` has not finished.
        """
        with self._lock:
            if node in self._results:
                return self._result(node)
        return self.store.result(node)

    def __repr__(self) -> str:
        p = self.progress()
        return (
            f"<ExperimentRun {self.experiment.name!r} {p.state.value}: "
            f"{p.done}/{p.total} done, {p.failed} failed>"
        )


def load(
    path: str | os.PathLike,
    *,
    workers: int | None = None,
    backend: str | Backend = "loky",
    callbacks: Iterable[Callbacks] = (),
) -> ExperimentRun:
    """Load an experiment; ``start()`` the result to run what is left.

    Reads and checks the experiment file, its batch and its run module,
    then opens (or creates) the checkpoint store beside the experiment file
    and compiles the runs not recorded done.

    Parameters
    ----------
    path : path
        The ``.experiment`` file.
    workers : int, optional
        Overrides the file's ``workers``.
    backend : str or Backend
        ``"loky"`` (default), ``"inline"``, ``"dask"`` or a ``Backend`` such
        as a ``DaskBackend`` on a ``distributed.Client`` (its workers must
        share this machine's disk: ``save()`` writes the store directly).
    callbacks : iterable of Callbacks
        Progress hooks.

    Raises
    ------
    ExperimentError
        A file, field or the run module is invalid (nothing is written).
    StoreError
        The store exists but cannot be used.
    """
    experiment = read_experiment(path)
    if workers is not None:
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise ExperimentError(
                f"workers must be an integer >= 1, got {workers!r}", field="workers"
            )
        experiment = dataclasses.replace(experiment, workers=workers)
    module = _load_module(experiment)
    store = Store(experiment.run_dir)
    done = store.done_ids()
    graph = compile_graph(experiment, module, done, store.durations(), str(store.path))
    if DONE_NODE in graph:
        done.discard(DONE_NODE)  # new runs since: done() runs again after them
    every = set(experiment.node_ids())
    if module.done is not None:
        every.add(DONE_NODE)
    prior = len(done & every)
    return ExperimentRun(
        experiment,
        graph,
        store,
        prior,
        workers=experiment.workers,
        backend=backend,
        callbacks=callbacks,
        scheduler=experiment.scheduler,
    )


# -- status and reset ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExperimentStatus:
    """Where an experiment stands, read from its store."""

    #: The experiment's definition.
    experiment: Experiment
    #: Runs of the definition (the done() node not counted).
    total: int
    #: Runs recorded done.
    done: int
    #: First error line of each run recorded failed, by node id.
    failures: dict[str, str]
    #: Whether done() has run since the last run finished.
    finished: bool
    #: Who is running it now (pid, host, since), or None.
    holder: dict[str, Any] | None


def status(path: str | os.PathLike) -> ExperimentStatus:
    """Read an experiment's progress from its store, read-only; works while
    another process runs it.

    Raises
    ------
    ExperimentError
        The experiment or batch file is invalid.
    StoreError
        The store cannot be read.
    """
    experiment = read_experiment(path)
    ids = experiment.node_ids()
    if not (experiment.run_dir / "store.sqlite").exists():
        return ExperimentStatus(experiment, len(ids), 0, {}, False, None)
    store = Store(experiment.run_dir, readonly=True)
    try:
        wanted = set(ids)
        done = store.done_ids()
        failures = {n: e for n, e in store.failures().items() if n in wanted}
        finished = DONE_NODE in done and wanted <= done
        return ExperimentStatus(
            experiment,
            len(ids),
            len(done & wanted),
            failures,
            finished,
            store.holder(),
        )
    finally:
        store.close()


def reset(path: str | os.PathLike) -> bool:
    """Forget an experiment's checkpoints (its run directory); returns
    whether there was one.

    Raises
    ------
    ExperimentError
        The experiment file is invalid.
    LockedError
        A dispatcher is running it.
    """
    experiment = read_experiment(path)
    if not experiment.run_dir.exists():
        return False
    # The lock, not the store: one too damaged to open is one to reset.
    with run_lock(experiment.run_dir):
        shutil.rmtree(experiment.run_dir)
    return True
