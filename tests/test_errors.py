"""Tests for alma_dag.errors: the exception tree and ``Err``.

Errors raised in a worker process reach the dispatcher through cloudpickle,
so every exception class must survive a round trip whole: type, arguments,
message and attributes.
"""

from __future__ import annotations

import errno
import pickle
import threading

import cloudpickle
import pytest

from alma_dag import errors
from alma_dag.errors import (
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


def round_trip(obj):
    return cloudpickle.loads(cloudpickle.dumps(obj))


#: One instance per exception class, with every attribute it documents set.
EXAMPLES = {
    AlmaDagError: lambda: AlmaDagError("something went wrong"),
    DefinitionError: lambda: DefinitionError(
        "field 'iterations' must be a positive integer, got -2",
        path="example.batch",
        field="iterations",
    ),
    CycleError: lambda: CycleError(["a", ("b", 1), "a"], path="graph.json"),
    InvalidStateError: lambda: InvalidStateError(
        "cannot pause a run that is finished; allowed from: running"
    ),
    StoreError: lambda: StoreError("run directory is writable by others"),
    TaskFailure: lambda: TaskFailure("no result", task="t"),
    DependencyError: lambda: DependencyError(
        "task 'b' was not run: 'a' failed", task="b", dependency="a"
    ),
    TaskTimeoutError: lambda: TaskTimeoutError(
        "task ('x', 1) ran past its timeout of 2.5 s", task=("x", 1), timeout=2.5
    ),
    WorkerDied: lambda: WorkerDied("worker died", task="t", exitcode=-11),
    TaskCancelled: lambda: TaskCancelled("cancelled", task="t", reason="stop"),
    SerializationError: lambda: SerializationError("cannot pickle lock", task="t"),
}

#: The attributes each class documents.
ATTRIBUTES = {
    AlmaDagError: {},
    DefinitionError: {"path": "example.batch", "field": "iterations"},
    CycleError: {"path": "graph.json", "field": None, "cycle": ["a", ("b", 1), "a"]},
    InvalidStateError: {},
    StoreError: {},
    TaskFailure: {"task": "t"},
    DependencyError: {"task": "b", "dependency": "a"},
    TaskTimeoutError: {"task": ("x", 1), "timeout": 2.5},
    WorkerDied: {"task": "t", "exitcode": -11},
    TaskCancelled: {"task": "t", "reason": "stop"},
    SerializationError: {"task": "t"},
}

EXCEPTION_CLASSES = sorted(EXAMPLES, key=lambda cls: cls.__name__)


def _public_exception_classes():
    return {
        obj
        for obj in (getattr(errors, name) for name in errors.__all__)
        if isinstance(obj, type) and issubclass(obj, BaseException)
    }


class TestExceptionTree:
    def test_examples_cover_every_exception_class(self):
        assert set(EXAMPLES) == set(ATTRIBUTES) == _public_exception_classes()

    @pytest.mark.parametrize("cls", EXCEPTION_CLASSES, ids=lambda c: c.__name__)
    def test_every_class_is_an_alma_dag_error_with_a_docstring(self, cls):
        assert issubclass(cls, AlmaDagError)
        assert cls.__doc__

    @pytest.mark.parametrize(
        "cls, builtin",
        [
            (DefinitionError, ValueError),
            (CycleError, ValueError),
            (CycleError, DefinitionError),
            (InvalidStateError, RuntimeError),
            (StoreError, OSError),
            (TaskFailure, RuntimeError),
            (DependencyError, TaskFailure),
            (TaskTimeoutError, TimeoutError),
            (TaskTimeoutError, TaskFailure),
            (WorkerDied, TaskFailure),
            (TaskCancelled, TaskFailure),
            (SerializationError, TaskFailure),
        ],
        ids=lambda c: c.__name__,
    )
    def test_families_subclass_the_builtin_a_caller_catches(self, cls, builtin):
        assert issubclass(cls, builtin)
        with pytest.raises(builtin):
            raise EXAMPLES[cls]()

    def test_families_are_separate(self):
        assert not issubclass(DefinitionError, RuntimeError)
        assert not issubclass(InvalidStateError, TaskFailure)
        assert not issubclass(StoreError, TaskFailure)

    def test_attribute_defaults(self):
        assert (DefinitionError("bad").path, DefinitionError("bad").field) == (
            None,
            None,
        )
        assert TaskFailure("x").task is None
        assert DependencyError("x").dependency is None
        assert TaskTimeoutError("x").timeout is None
        assert WorkerDied("x").exitcode is None
        assert TaskCancelled("x").reason == ""


class TestRoundTrip:
    @pytest.mark.parametrize("cls", EXCEPTION_CLASSES, ids=lambda c: c.__name__)
    def test_cloudpickle_keeps_type_message_and_attributes(self, cls):
        exc = EXAMPLES[cls]()
        copy = round_trip(exc)
        assert type(copy) is cls
        assert copy.args == exc.args
        assert str(copy) == str(exc)
        assert vars(copy) == vars(exc)
        for name, value in ATTRIBUTES[cls].items():
            assert getattr(copy, name) == value

    @pytest.mark.parametrize("cls", EXCEPTION_CLASSES, ids=lambda c: c.__name__)
    def test_plain_pickle_too(self, cls):
        exc = EXAMPLES[cls]()
        copy = pickle.loads(pickle.dumps(exc))
        assert type(copy) is cls
        assert (copy.args, vars(copy)) == (exc.args, vars(exc))

    @pytest.mark.parametrize("cls", EXCEPTION_CLASSES, ids=lambda c: c.__name__)
    def test_a_raised_exception_with_notes(self, cls):
        try:
            raise EXAMPLES[cls]()
        except AlmaDagError as exc:
            exc.add_note("while running batch 3")
            caught = exc
        copy = round_trip(caught)
        assert type(copy) is cls
        assert copy.__notes__ == ["while running batch 3"]

    def test_store_error_keeps_errno_strerror_and_filename(self):
        exc = StoreError(errno.EACCES, "Permission denied", "/runs/x/store.sqlite")
        copy = round_trip(exc)
        assert type(copy) is StoreError
        assert (copy.errno, copy.strerror, copy.filename) == (
            errno.EACCES,
            "Permission denied",
            "/runs/x/store.sqlite",
        )
        assert str(copy) == str(exc)

    def test_timeout_error_is_still_a_timeout_error(self):
        copy = round_trip(EXAMPLES[TaskTimeoutError]())
        assert isinstance(copy, TimeoutError)
        assert isinstance(copy, TaskFailure)

    def test_a_user_subclass_with_its_own_init(self):
        class BadField(DefinitionError):
            def __init__(self, name, value):
                super().__init__(f"field {name!r}: got {value!r}", field=name)
                self.value = value

        copy = round_trip(BadField("iterations", -2))
        assert str(copy) == "field 'iterations': got -2"
        assert (copy.field, copy.value) == ("iterations", -2)
        assert isinstance(copy, DefinitionError)


class TestDefinitionError:
    def test_path_prefixes_the_message(self):
        exc = DefinitionError("field 'x' must be positive", path="example.batch")
        assert str(exc) == "example.batch: field 'x' must be positive"

    def test_path_is_not_added_twice(self):
        exc = DefinitionError("example.batch: bad", path="example.batch")
        assert str(exc) == "example.batch: bad"
        assert str(round_trip(exc)) == "example.batch: bad"

    def test_cycle_message_and_attribute(self):
        exc = CycleError(["a", "b", "a"])
        assert str(exc).startswith("cycle: 'a' -> 'b' -> 'a'")
        assert exc.cycle == ["a", "b", "a"]
        assert exc.path is None

    def test_cycle_is_a_copy(self):
        path = ["a", "a"]
        exc = CycleError(path)
        path.append("b")
        assert exc.cycle == ["a", "a"]

    def test_cycle_with_a_file(self):
        exc = CycleError(["a", "a"], path="g.json")
        assert str(exc).startswith("g.json: cycle: 'a' -> 'a'")


# -- Err -----------------------------------------------------------------------


def _divide_by_zero():
    return 1 / 0


def _caught(function):
    try:
        function()
    except BaseException as exc:
        return exc
    raise AssertionError("no exception raised")


class TestErr:
    def test_fields(self):
        exc = ZeroDivisionError("division by zero")
        err = Err(exc, "tb text")
        assert err.exception is exc
        assert err.traceback == "tb text"
        assert err.err_type is ZeroDivisionError
        assert err.args == ("division by zero",)
        assert str(err) == "division by zero"
        assert repr(err) == "Err(ZeroDivisionError('division by zero'))"

    def test_equal_by_type_and_args(self):
        assert Err(ValueError("x"), "one traceback") == Err(ValueError("x"), "another")
        assert hash(Err(ValueError("x"))) == hash(Err(ValueError("x")))

    @pytest.mark.parametrize(
        "other",
        [Err(ValueError("y")), Err(TypeError("x")), Err(ValueError("x", 2))],
        ids=["args", "type", "more-args"],
    )
    def test_unequal(self, other):
        assert Err(ValueError("x")) != other

    def test_subclass_is_a_different_type(self):
        assert Err(DefinitionError("x")) != Err(ValueError("x"))

    def test_not_equal_to_other_objects(self):
        err = Err(ValueError("x"))
        assert err != ValueError("x")
        assert err != "x"

    def test_message_with_traceback(self):
        assert Err(ValueError("x")).message_with_traceback == "x"
        assert Err(ValueError("x"), "Traceback ...").message_with_traceback == (
            "x\nTraceback ..."
        )

    def test_from_current_captures_the_traceback(self):
        exc = _caught(_divide_by_zero)
        err = Err.from_current(exc)
        assert err.exception is exc
        assert err.err_type is ZeroDivisionError
        assert err.traceback.startswith("Traceback (most recent call last):")
        assert "_divide_by_zero" in err.traceback
        assert "ZeroDivisionError: division by zero" in err.traceback
        assert err.message_with_traceback.startswith("division by zero\nTraceback")

    def test_from_current_of_a_chained_exception(self):
        def fail():
            try:
                _divide_by_zero()
            except ZeroDivisionError as exc:
                raise DefinitionError("bad input", field="x") from exc

        err = Err.from_current(_caught(fail))
        assert "ZeroDivisionError" in err.traceback
        assert "DefinitionError: bad input" in err.traceback
        assert round_trip(err) == err

    def test_round_trip(self):
        err = Err.from_current(_caught(_divide_by_zero))
        copy = round_trip(err)
        assert copy == err
        assert copy.traceback == err.traceback
        assert copy.err_type is ZeroDivisionError

    @pytest.mark.parametrize("cls", EXCEPTION_CLASSES, ids=lambda c: c.__name__)
    def test_round_trip_of_each_alma_dag_error(self, cls):
        err = Err(EXAMPLES[cls](), "tb")
        copy = round_trip(err)
        assert copy == err
        assert vars(copy.exception) == vars(err.exception)

    def test_exception_whose_init_needs_two_arguments(self):
        class Picky(Exception):
            def __init__(self, code, detail):
                super().__init__(f"{code}: {detail}")

        def fail():
            raise Picky(7, "broken")

        exc = _caught(fail)
        with pytest.raises(TypeError):
            round_trip(exc)
        err = Err.from_current(exc)
        copy = round_trip(err)
        assert copy == err
        assert "Picky" in str(copy)
        assert "7: broken" in str(copy)
        assert "Picky: 7: broken" in copy.traceback
        assert copy.err_type.__name__ != "Picky"

    def test_exception_holding_a_lock(self):
        class Locked(Exception):
            def __init__(self, message):
                super().__init__(message)
                self.lock = threading.Lock()

        def fail():
            raise Locked("held")

        exc = _caught(fail)
        with pytest.raises(TypeError):
            cloudpickle.dumps(exc)
        err = Err.from_current(exc)
        copy = round_trip(err)
        assert copy == err
        assert "Locked" in str(copy)
        assert "held" in str(copy)
        assert copy.traceback == err.traceback

    def test_alma_dag_error_holding_something_unpicklable(self):
        exc = WorkerDied("died", task="t", exitcode=threading.Lock())
        err = Err.from_current(exc)
        copy = round_trip(err)
        assert copy == err
        assert "WorkerDied" in str(copy)
