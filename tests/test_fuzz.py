"""Fuzzing the front ends: any input works or raises the documented error.

Each front end takes user data -- experiment and batch files
(``read_experiment``), the ampeg dict format (``TaskGraph.from_dict``),
sweep parameters (``sweep``) and Boss instructions
(``Boss.set_instructions``) -- and hypothesis feeds it arbitrary values and
near-valid ones with a field mutated. The allowed outcomes are a result or
the project's documented exception (``ExperimentError`` naming the file,
``DefinitionError``, ...); never a raw ``KeyError``, ``TypeError`` or
``AttributeError``, never a hang.

The CI profile runs 200 examples per test (``database=None``, no deadline).
For a long run by hand, 10,000 examples per test::

    ALMA_DAG_FUZZ=1 python -m pytest tests/test_fuzz.py
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alma_dag import Boss, Dependency, TaskGraph, Worker, sweep
from alma_dag.errors import DefinitionError, InvalidStateError
from alma_dag.experiment import Experiment, ExperimentError, read_experiment
from alma_dag.schedulers import MaxMemoryScheduler, MaxThreadsScheduler
from alma_dag.sweep import HashableDict

settings.register_profile(
    "ci",
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "fuzz",
    max_examples=10_000,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("fuzz" if os.environ.get("ALMA_DAG_FUZZ") == "1" else "ci")

# -- shared strategies -----------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(),
    st.text(max_size=20),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(max_size=10), inner, max_size=4),
    ),
    max_leaves=12,
)

# -- experiment and batch files --------------------------------------------------

FIELDS = ["load", "workers", "iterations", "batch", "parameters", "memory"]
FIELDS += ["scheduler", "name"]

path_texts = st.one_of(
    st.sampled_from(
        ["run.py", "x.batch", "missing.batch", "", " ", ".", "..", "sub/x.batch"]
    ),
    st.just("a" * 300),  # a name too long for the file system
    st.just("nul\x00byte"),
    st.text(max_size=12),
)
numbers = st.one_of(
    st.integers(min_value=-3, max_value=5),
    st.integers(),
    st.floats(),
    st.just(10**400),
    st.booleans(),
)
schedulers = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"name": st.sampled_from(["laxist", "max_threads", "max_memory", "other"])},
        optional={
            "max_threads": numbers | json_values,
            "max_memory_percentage": numbers | json_values,
            "total_system_memory": numbers | json_values,
            "extra": json_values,
        },
    ),
)
parameter_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.text(max_size=4), inner, max_size=3),
    ),
    max_leaves=8,
)
field_values = {
    "load": path_texts | json_values,
    "batch": path_texts | json_values,
    "workers": numbers | json_values,
    "iterations": numbers | json_values,
    "memory": numbers | json_values,
    "name": st.text(max_size=10) | json_values,
    "parameters": parameter_values,
    "scheduler": schedulers,
}


@st.composite
def near_valid_experiments(draw) -> dict:
    """A valid experiment dict with some fields replaced, removed or added."""
    data = {"load": "run.py", "workers": 2, "iterations": 3, "batch": "x.batch"}
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=4, unique=True)):
        data[name] = draw(field_values[name])
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=2, unique=True)):
        data.pop(name, None)
    data.update(draw(st.dictionaries(st.text(max_size=6), json_values, max_size=2)))
    return data


def _dump(value) -> bytes:
    return json.dumps(value).encode()


garbage = st.one_of(
    st.binary(max_size=40),
    st.sampled_from(
        [b"", b"{", b'{"load": ', b"\xff\xfe{}", b"[1, 2", b"nul\x00", b"1" * 5000]
    ),
    st.text(max_size=30).map(str.encode),
)
experiment_files = st.one_of(
    near_valid_experiments().map(_dump), json_values.map(_dump), garbage
)
batch_files = st.one_of(
    st.just(_dump({"instances": ["a", "b"]})),
    st.fixed_dictionaries({"instances": json_values}).map(_dump),
    st.lists(st.text(max_size=5), max_size=4).map(lambda i: _dump({"instances": i})),
    json_values.map(_dump),
    garbage,
    st.none(),  # no batch file at all
)


@given(experiment=experiment_files, batch=batch_files)
def test_read_experiment_works_or_names_the_file(experiment, batch):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp).resolve()
        path = folder / "example.experiment"
        path.write_bytes(experiment)
        (folder / "run.py").write_text("def run(instance):\n    return 1\n")
        if batch is not None:
            (folder / "x.batch").write_bytes(batch)
        try:
            result = read_experiment(path)
        except ExperimentError as exc:
            assert isinstance(exc, DefinitionError) and isinstance(exc, ValueError)
            assert exc.path is not None and exc.path in str(exc)
            try:
                data = json.loads(experiment)
            except ValueError:
                data = None
            named = {str(path)}
            if isinstance(data, dict) and isinstance(data.get("batch"), str):
                named.add(str(path.parent / data["batch"]))
            assert exc.path in named, (exc.path, named)
        else:
            assert isinstance(result, Experiment)
        assert not list(folder.glob("*.alma")), "read_experiment wrote a run dir"


@given(name=path_texts)
def test_read_experiment_of_a_missing_or_unusable_path(name):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp).resolve() / "absent" / (name or "x")
        try:
            read_experiment(path)
        except ExperimentError as exc:
            named = str(path) if "\x00" in str(path) else str(path.resolve())
            assert exc.path == named and named in str(exc)
        else:
            raise AssertionError("a missing experiment file was read")


# -- the ampeg dict format ---------------------------------------------------------

node_ids = st.one_of(
    st.integers(min_value=0, max_value=6),
    st.sampled_from(["a", "b", "c", ("t", 1), 2.5, frozenset({1})]),
)
costs = st.one_of(
    st.integers(), st.floats(), st.none(), st.text(max_size=3), st.booleans()
)
dependencies = st.builds(
    Dependency,
    node_ids,
    st.one_of(st.none(), st.integers(), st.text(max_size=3)),
    costs,
)
arguments = st.recursive(
    st.one_of(scalars, dependencies),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.tuples(inner, inner),
        st.dictionaries(st.one_of(st.text(max_size=3), st.integers()), inner),
        st.frozensets(st.integers(), max_size=2),
    ),
    max_leaves=8,
)
functions = st.sampled_from([len, print, sum, lambda *a, **k: None, None, 3, "f"])
entries = st.one_of(
    st.tuples(functions, arguments),
    st.tuples(functions, arguments, costs),
    st.lists(st.one_of(functions, arguments, costs), max_size=4),
    arguments,
)


@given(
    graph=st.one_of(
        st.dictionaries(node_ids | st.none(), entries, max_size=6), json_values
    )
)
def test_from_dict_works_or_raises_definition_error(graph):
    try:
        built = TaskGraph.from_dict(graph)
        built.validate()
    except DefinitionError:
        pass
    else:
        assert len(built) == len(graph)
        assert set(built.topological_order()) == set(graph)


# -- sweep parameters ----------------------------------------------------------------

levels = st.recursive(
    st.one_of(scalars, st.binary(max_size=3)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.tuples(inner),
        st.frozensets(st.integers(), max_size=2),
        st.sets(st.text(max_size=2), max_size=2),
        st.dictionaries(
            st.one_of(st.text(max_size=3), st.integers()), inner, max_size=3
        ),
    ),
    max_leaves=10,
)


@given(parameters=st.one_of(levels, st.dictionaries(st.text(max_size=3), levels)))
def test_sweep_works_or_raises_documented_errors(parameters):
    try:
        combinations = sweep(parameters)
    except (DefinitionError, TypeError):
        return
    assert all(isinstance(c, HashableDict) for c in combinations)
    assert len(set(combinations)) == len(combinations)


# -- Boss instructions ---------------------------------------------------------------

# Their instruction names are this module's own: a Worker subclass stays
# hirable for the whole session, and must not tie with another module's.


class FuzzAdder(Worker):
    fuzz_left: int
    fuzz_right: int = 0

    def _task(self):
        return self.fuzz_left + self.fuzz_right


class FuzzLabeller(Worker):
    fuzz_label: str
    fuzz_colour: str = "red"

    def _task(self):
        return f"{self.fuzz_colour} {self.fuzz_label}"


instruction_keys = st.one_of(
    st.sampled_from(
        ["fuzz_left", "fuzz_right", "fuzz_label", "fuzz_colour", "name", "memory"]
    ),
    st.text(max_size=4),
    st.integers(min_value=0, max_value=3),
)
instruction_values = st.one_of(
    json_values, st.sampled_from([1, "a", 0.5, -1, float("nan"), 10**400])
)
individual_values = st.one_of(
    st.lists(instruction_values, min_size=0, max_size=3),
    st.tuples(instruction_values),
    instruction_values,
)
instruction_dicts = st.one_of(
    st.none(), st.dictionaries(instruction_keys, instruction_values, max_size=4)
)
individual_dicts = st.one_of(
    st.none(),
    st.dictionaries(instruction_keys, individual_values, max_size=4),
    json_values,
)
boss_schedulers = st.sampled_from(
    [None, MaxThreadsScheduler(2), MaxMemoryScheduler(0.5, total_system_memory=100)]
)


@given(
    common=instruction_dicts | json_values,
    individual=individual_dicts,
    scheduler=boss_schedulers,
    ended=st.booleans(),
)
def test_set_instructions_works_or_raises_documented_errors(
    common, individual, scheduler, ended
):
    boss = Boss(scheduler, backend="inline")
    try:
        if ended:
            boss.end()
        try:
            boss.set_instructions(common, individual)
        except (DefinitionError, InvalidStateError):
            pass
        else:
            assert not ended, "an ended Boss took instructions"
            report = boss.get_report()
            assert report is not None
    finally:
        boss.end()
