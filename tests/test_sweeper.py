"""ParamSweeper: the states and their transitions, persistence, threads,
instances and processes sharing a directory, killed and interrupted
processes, and damaged files.

Crash tests run the sweeper in fresh interpreters (``subprocess``): a child
prints ``G <i>`` once ``get_next`` returned element ``i`` and ``D <i>`` once
``done`` returned, one flushed line each, and is killed with SIGKILL (or
interrupted with SIGINT) at a random moment. What the children printed,
and what the database holds between trials, gives the accounting: nothing
reported done is lost, and no element is handed out after it was done.

Every wait is bounded: children dump their stacks and exit after ``WAIT``
seconds (``faulthandler``), and every poll has a deadline.
"""

from __future__ import annotations

import enum
import os
import pickle
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from conftest import WAIT
from hypothesis import given, settings
from hypothesis import strategies as st

import alma_dag.sweeper as sweeper_module
from alma_dag.errors import InvalidStateError, StoreError
from alma_dag.sweep import HashableDict, sweep, sweep_stats
from alma_dag.sweeper import (
    _TRANSITIONS,
    DATABASE,
    ParamSweeper,
    _decode,
    _encode,
    _encode_value,
    _guarded,
    _State,
)

posix_only = pytest.mark.skipif(
    sys.platform == "win32", reason="SIGKILL, SIGINT and file modes are POSIX"
)


def combinations(n: int) -> list[HashableDict]:
    return sweep({"i": range(n)})


def numbers(elements) -> set[int]:
    return {element["i"] for element in elements}


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    return tmp_path / "sweeps"


def state_names(sweeper: ParamSweeper) -> dict[int, str]:
    """Each element's state, by its number, after checking that the states
    partition the elements."""
    stats = sweeper.stats()
    total = numbers(stats["total"])
    names = {}
    for state in ("remaining", "skipped", "inprogress", "done"):
        for i in numbers(stats[state]):
            assert i not in names, f"{i} is both {names[i]} and {state}"
            names[i] = state
    assert set(names) == total, "an element is in no state"
    return names


# -- encoding ---------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=4)
    | st.binary(max_size=4)
)
hashables = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3).map(tuple)
        | st.frozensets(inner, max_size=3)
        | st.dictionaries(
            st.text(max_size=3), inner | st.lists(inner, max_size=2), max_size=3
        ).map(HashableDict)
        | st.dictionaries(inner, inner, max_size=2).map(HashableDict)
    ),
    max_leaves=12,
)


def shape(value):
    """``value`` with each container replaced by its kind and each number by
    its type, so that equal values of other types differ."""
    if isinstance(value, dict):  # dicts come back as HashableDicts
        return ("map", [(shape(k), shape(v)) for k, v in value.items()])
    if isinstance(value, (set, frozenset)):
        return (type(value).__name__, sorted(map(repr, map(shape, value))))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [shape(item) for item in value])
    return (type(value).__name__, value)


def variant(value, rng: random.Random):
    """A value equal to ``value`` that may differ in types and order: ints as
    equal floats or bools, dicts reordered, frozensets as sets inside dicts."""
    if type(value) is int and rng.random() < 0.5:
        if value in (0, 1) and rng.random() < 0.5:
            return bool(value)
        if float(value) == value:
            return float(value)
    if type(value) is float and value.is_integer() and rng.random() < 0.5:
        return int(value)
    if type(value) is tuple:
        return tuple(variant(item, rng) for item in value)
    if type(value) is list:
        return [variant(item, rng) for item in value]
    if type(value) is frozenset:
        return frozenset(variant(item, rng) for item in value)
    if isinstance(value, dict):
        items = [(variant(k, rng), variant(v, rng)) for k, v in value.items()]
        rng.shuffle(items)
        return HashableDict(items)
    return value


class TestEncoding:
    @settings(max_examples=300, deadline=None)
    @given(hashables)
    def test_saved_elements_come_back_exactly(self, element):
        back = _decode(_encode_value(element))
        assert back == element
        assert shape(back) == shape(element)
        hash(back)

    @settings(max_examples=300, deadline=None)
    @given(hashables, st.randoms(use_true_random=False))
    def test_equal_elements_have_one_key(self, element, rng):
        other = variant(element, rng)
        assert other == element
        assert _encode(other) == _encode(element)

    @settings(max_examples=300, deadline=None)
    @given(hashables, hashables)
    def test_unequal_elements_have_other_keys(self, one, two):
        assert (one == two) == (_encode(one) == _encode(two))

    @settings(max_examples=200, deadline=None)
    @given(
        st.dictionaries(
            st.text(max_size=3),
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
            max_size=5,
        )
    )
    def test_fast_path_agrees_with_the_general_one(self, items):
        element = HashableDict(items)
        assert _encode(element) == sweeper_module._dumps_key(
            _guarded(element, canonical=True)
        )

    @pytest.mark.parametrize(
        "one, two",
        [
            (HashableDict(a=1), HashableDict(a=1.0)),
            (HashableDict(a=1), HashableDict(a=True)),
            (HashableDict(a=1, b=2), HashableDict(b=2, a=1)),
            (HashableDict(a={1, 2}), HashableDict(a=frozenset({2, 1}))),
            (HashableDict(a={"x": 1, "y": 2}), HashableDict(a={"y": 2, "x": 1})),
            (HashableDict({1: "a"}), HashableDict({1.0: "a"})),
        ],
    )
    def test_equal_pairs(self, one, two):
        assert one == two and _encode(one) == _encode(two)

    @pytest.mark.parametrize(
        "one, two",
        [
            (HashableDict(a=[1]), HashableDict(a=(1,))),
            (HashableDict(a="1"), HashableDict(a=1)),
            (HashableDict({"1": "a"}), HashableDict({1: "a"})),
            (HashableDict(a=b"x"), HashableDict(a="x")),
            (HashableDict(a=None), HashableDict(a=0)),
            (HashableDict(a=0.5), HashableDict(a="0.5")),
        ],
    )
    def test_unequal_pairs(self, one, two):
        assert one != two and _encode(one) != _encode(two)

    def test_sweep_output_round_trips_in_order(self):
        elements = sweep(
            {
                "solver": {"heft": {"lookahead": [1, 2.0]}, "random": {}},
                "shape": [[2, 3], (4,), {"w": 1}],
                "flag": [True, None],
            }
        )
        for element in elements:
            back = _decode(_encode_value(element))
            assert back == element
            assert list(back) == list(element)
            assert shape(back) == shape(element)

    class Colour(enum.IntEnum):
        RED = 1

    class Floaty(float):
        pass

    @pytest.mark.parametrize(
        "element, named",
        [
            (HashableDict(x=object()), "object"),
            (HashableDict(x=Colour.RED), "Colour"),
            (HashableDict(x=Floaty(1.5)), "Floaty"),
            (HashableDict(x=bytearray(b"a")), "bytearray"),
            ((1, [2]), "list"),
            ((1, (2, {3})), "set"),
            ({"x": 1}, "dict"),
            ([1, 2], "list"),
        ],
    )
    def test_refused_with_the_type_named(self, element, named):
        with pytest.raises(TypeError, match=rf"\b{named}\b"):
            _encode(element)

    def test_unhashable_element_gets_a_hint(self):
        with pytest.raises(TypeError, match="make it a HashableDict"):
            _encode({"x": 1})

    @pytest.mark.parametrize(
        "text", ["[]", '["zz", 1]', "[1, 2]", '{"a": ["b"]}', '["b", 3]', "nope"]
    )
    def test_foreign_text_is_refused(self, text):
        with pytest.raises(ValueError):
            _decode(text)

    def test_refused_before_anything_is_written(self, directory):
        bad = [*combinations(3), HashableDict(i=object())]
        with pytest.raises(TypeError, match="object"):
            ParamSweeper(directory, bad, save_sweeps=True)
        assert not directory.exists()
        with ParamSweeper(directory, combinations(3)) as sweeper:
            before = (directory / DATABASE).read_bytes()
            for call in (sweeper.done, sweeper.skip, sweeper.cancel):
                with pytest.raises(TypeError, match="object"):
                    call(HashableDict(i=object()))
            with pytest.raises(TypeError, match="object"):
                sweeper.done_batch([combinations(1)[0], HashableDict(i=object())])
            with pytest.raises(TypeError, match="object"):
                sweeper.set_sweeps(bad, save_sweeps=True)
            assert sweeper.get_done() == set()
            assert len(sweeper.get_sweeps()) == 3
        assert (directory / DATABASE).read_bytes() == before


# -- states -----------------------------------------------------------------------


def put_in(sweeper: ParamSweeper, element, state: _State) -> None:
    """Bring ``element`` (todo) to ``state``."""
    if state is _State.INPROGRESS:
        assert sweeper.get_next(lambda todo: [element]) == element
    elif state is _State.DONE:
        sweeper.done(element)
    elif state is _State.SKIPPED:
        sweeper.skip(element)


_NAMES = {
    _State.TODO: "remaining",
    _State.INPROGRESS: "inprogress",
    _State.DONE: "done",
    _State.SKIPPED: "skipped",
}


class TestStates:
    def test_handed_out_in_order_then_none(self, directory):
        elements = combinations(5)
        with ParamSweeper(directory, elements) as sweeper:
            got = [sweeper.get_next() for _ in range(5)]
            assert got == elements
            assert sweeper.get_next() is None
            assert sweeper.get_next_batch(3) == []
            assert sweeper.get_inprogress() == set(elements)

    def test_batch(self, directory):
        elements = combinations(7)
        with ParamSweeper(directory, elements) as sweeper:
            assert sweeper.get_next_batch(0) == []
            assert sweeper.get_next_batch(3) == elements[:3]
            assert sweeper.get_next_batch(10) == elements[3:]
            with pytest.raises(ValueError, match="0 or more"):
                sweeper.get_next_batch(-1)
            with pytest.raises(TypeError):
                sweeper.get_next_batch(1.5)
            sweeper.done_batch(elements[:2])
            sweeper.skip_batch(elements[2:4])
            sweeper.cancel_batch(elements[4:6])
            names = state_names(sweeper)
        assert names == {
            0: "done",
            1: "done",
            2: "skipped",
            3: "skipped",
            4: "remaining",
            5: "remaining",
            6: "inprogress",
        }

    @pytest.mark.parametrize("operation", ["done", "skip", "cancel"])
    @pytest.mark.parametrize("before", list(_State))
    def test_transition_table(self, directory, operation, before):
        """From each state, each marking lands where _TRANSITIONS says, in
        this instance and, for the persisted states, in a new one."""
        elements = combinations(3)
        element = elements[1]
        after = _TRANSITIONS[operation].get(before, before)
        with ParamSweeper(directory, elements) as sweeper:
            put_in(sweeper, element, before)
            getattr(sweeper, operation)(element)
            assert state_names(sweeper)[1] == _NAMES[after]
            with ParamSweeper(directory, elements) as other:
                persisted = after if after in (_State.DONE, _State.INPROGRESS) else None
                expected = _NAMES.get(persisted, "remaining")
                assert state_names(other)[1] == expected

    def test_cancelled_element_comes_back_at_its_place(self, directory):
        elements = combinations(4)
        with ParamSweeper(directory, elements) as sweeper:
            first, second = sweeper.get_next(), sweeper.get_next()
            sweeper.done(second)
            sweeper.cancel(first)
            assert sweeper.get_next() == first
            sweeper.skip(first)
            assert sweeper.get_next() == elements[2]
            sweeper.cancel(first)
            assert sweeper.get_next() == first

    def test_done_is_final(self, directory):
        elements = combinations(2)
        with ParamSweeper(directory, elements) as sweeper:
            sweeper.done(elements[0])
            sweeper.cancel(elements[0])
            sweeper.skip(elements[0])
            sweeper.reset(reset_inprogress=True)
            assert sweeper.get_done() == {elements[0]}
            assert sweeper.get_next() == elements[1]
            assert sweeper.get_next() is None

    def test_reset(self, directory):
        elements = combinations(4)
        with ParamSweeper(directory, elements) as sweeper:
            a, b, c = sweeper.get_next_batch(3)
            sweeper.skip(a)
            sweeper.done(c)
            sweeper.reset()
            assert state_names(sweeper) == {
                0: "remaining",
                1: "inprogress",
                2: "done",
                3: "remaining",
            }
            assert sweeper.get_next() == a
            sweeper.reset(reset_inprogress=True)
            assert sweeper.get_inprogress() == set()
            assert sweeper.get_next_batch(3) == [a, b, elements[3]]

    def test_filtr_sees_todo_in_order_and_chooses(self, directory):
        elements = combinations(6)
        seen = []

        def last_first(todo):
            seen.append(list(todo))
            return reversed(todo)

        with ParamSweeper(directory, elements) as sweeper:
            sweeper.done(elements[1])
            sweeper.skip(elements[2])
            assert sweeper.get_next(last_first) == elements[5]
            assert seen[-1] == [elements[0], elements[3], elements[4], elements[5]]
            assert sweeper.get_next_batch(2, last_first) == [elements[4], elements[3]]
            assert sweeper.get_next(lambda todo: []) is None
            assert (
                sweeper.get_next(lambda todo: (e for e in todo if e["i"] > 90)) is None
            )
            with pytest.raises(ValueError, match="not a todo element"):
                sweeper.get_next(lambda todo: [elements[1]])
            with pytest.raises(ValueError, match="not a todo element"):
                sweeper.get_next(lambda todo: [HashableDict(i=99)])
            assert sweeper.get_next() == elements[0]

    def test_model(self, directory):
        """Random operations by two instances on one directory, checked
        after each against a model: exactly-once hand-out, and each
        instance's four sets."""
        rng = random.Random(20240611)
        elements = combinations(12)
        sweepers = [ParamSweeper(directory, elements) for _ in range(2)]
        done, held = set(), set()
        skipped = [set(), set()]
        try:
            for _ in range(600):
                index = rng.randrange(2)
                sweeper = sweepers[index]
                element = rng.choice(elements)
                operation = rng.choice(
                    ["get_next"] * 4 + ["done", "skip", "cancel", "reset", "reset_all"]
                )
                if operation == "get_next":
                    got = sweeper.get_next()
                    if got is None:
                        assert done | held | skipped[index] >= set(elements)
                    else:
                        assert got not in done | held | skipped[index]
                        held.add(got)
                elif operation == "done":
                    sweeper.done(element)
                    done.add(element)
                    held.discard(element)
                elif operation == "skip":
                    sweeper.skip(element)
                    if element not in done:
                        held.discard(element)
                        skipped[index].add(element)
                elif operation == "cancel":
                    sweeper.cancel(element)
                    if element not in done:
                        held.discard(element)
                        skipped[index].discard(element)
                else:
                    sweeper.reset(reset_inprogress=operation == "reset_all")
                    skipped[index].clear()
                    if operation == "reset_all":
                        held.clear()
                for mine, sweeper in zip(skipped, sweepers, strict=True):
                    stats = sweeper.stats()
                    assert stats["done"] == done
                    assert stats["inprogress"] == held - done
                    assert stats["skipped"] == mine - held - done
                    assert stats["remaining"] == set(elements) - done - held - mine
        finally:
            for sweeper in sweepers:
                sweeper.close()

    def test_elements_outside_the_sweeps(self, directory):
        elements = combinations(4)
        with ParamSweeper(directory, elements[:2]) as sweeper:
            sweeper.done(elements[3])
            assert sweeper.get_done() == set()
            assert len(sweeper.get_remaining()) == 2
            with ParamSweeper(directory, elements) as other:
                assert other.get_done() == {elements[3]}

    def test_repeats_are_dropped(self, directory):
        elements = [HashableDict(i=1), HashableDict(i=2), HashableDict(i=1.0)]
        with ParamSweeper(directory, elements) as sweeper:
            assert sweeper.get_sweeps() == elements[:2]
            assert type(sweeper.get_sweeps()[0]["i"]) is int

    def test_empty_sweep(self, directory):
        with ParamSweeper(directory, [], name="nothing") as sweeper:
            assert sweeper.get_next() is None
            assert sweeper.stats()["total"] == []
            assert repr(sweeper) == (
                "<ParamSweeper 'nothing': 0 total, 0 done, 0 skipped, "
                "0 in progress, 0 remaining>"
            )

    @pytest.mark.parametrize("wrong", ["abc", HashableDict(i=1)])
    def test_batch_of_one_is_refused(self, directory, wrong):
        with ParamSweeper(directory, combinations(2)) as sweeper:
            with pytest.raises(TypeError, match="without _batch"):
                sweeper.done_batch(wrong)

    def test_stats_feed_sweep_stats(self, directory):
        elements = sweep({"n": [1, 2], "solver": ["heft", "random"]})
        with ParamSweeper(directory, elements) as sweeper:
            first = sweeper.get_next()
            sweeper.done(first)
            sweeper.skip(sweeper.get_next())
            sweeper.get_next()
            stats = sweep_stats(sweeper.stats())
            assert stats["done"] == {
                "n": {1: 1, 2: 0},
                "solver": {"heft": 1, "random": 0},
            }
            assert stats["remaining_ratio"]["n"] == {1: 0.0, 2: 0.5}
            assert repr(sweeper) == (
                "<ParamSweeper 'sweeps': 4 total, 1 done, 1 skipped, "
                "1 in progress, 1 remaining>"
            )

    def test_views_are_copies(self, directory):
        elements = combinations(3)
        with ParamSweeper(directory, elements) as sweeper:
            sweeper.get_sweeps().clear()
            sweeper.get_remaining().clear()
            assert len(sweeper.get_remaining()) == 3
            assert sweeper.get_next() == elements[0]


# -- persistence ----------------------------------------------------------------


class TestPersistence:
    def test_done_survives_skipped_does_not_inprogress_is_shared(self, directory):
        elements = combinations(5)
        with ParamSweeper(directory, elements) as first:
            a, b, c = first.get_next_batch(3)
            first.done(a)
            first.skip(b)
            with ParamSweeper(directory, elements) as second:
                assert second.get_done() == {a}
                assert second.get_skipped() == set()
                assert second.get_inprogress() == {c}
                assert second.get_next_batch(5) == [b, *elements[3:]]
                assert first.get_inprogress() == {b, c, *elements[3:]}
        with ParamSweeper(directory, elements) as third:
            assert third.get_done() == {a}

    def test_changes_reach_instances_made_before(self, directory):
        elements = combinations(3)
        with (
            ParamSweeper(directory, elements) as one,
            ParamSweeper(directory, elements) as two,
        ):
            got = one.get_next()
            assert two.get_next() == elements[1]
            assert two.get_inprogress() == {got, elements[1]}
            one.cancel(got)
            assert two.get_remaining() == {got, elements[2]}
            one.skip(elements[2])
            assert two.get_next_batch(2) == [got, elements[2]]
            two.reset(reset_inprogress=True)
            assert one.get_inprogress() == set()
            assert one.get_next() == got

    def test_saved_sweeps(self, directory):
        elements = sweep({"x": [2, 3.0, True, None], "shape": [(2, 3), [4], "s"]})
        with ParamSweeper(directory, elements, save_sweeps=True) as sweeper:
            sweeper.done(elements[0])
        with ParamSweeper(directory) as loaded:
            back = loaded.get_sweeps()
            assert back == elements
            assert [shape(e) for e in back] == [shape(e) for e in elements]
            assert loaded.get_done() == {elements[0]}
            loaded.set_sweeps(elements[:2], save_sweeps=True)
            loaded.set_sweeps()
            assert loaded.get_sweeps() == elements[:2]
            assert loaded.get_done() == {elements[0]}
        with ParamSweeper(directory, []) as emptied:
            emptied.set_sweeps([], save_sweeps=True)
        with ParamSweeper(directory) as loaded:
            assert loaded.get_sweeps() == []

    def test_nothing_saved(self, directory):
        with pytest.raises(StoreError, match="no sweeps saved"):
            ParamSweeper(directory)
        assert not directory.exists()
        ParamSweeper(directory, combinations(2)).close()
        with pytest.raises(StoreError, match="no sweeps saved"):
            ParamSweeper(directory)

    def test_durable(self, directory):
        with ParamSweeper(directory, combinations(2), durable=True) as sweeper:
            assert sweeper._db.execute("PRAGMA synchronous").fetchone()[0] == 2
            sweeper.done(sweeper.get_next())
        with ParamSweeper(directory, combinations(2)) as sweeper:
            assert sweeper._db.execute("PRAGMA synchronous").fetchone()[0] == 1
            assert len(sweeper.get_done()) == 1

    def test_multi_host_uses_the_rollback_journal(self, directory, tmp_path):
        elements = combinations(3)
        with ParamSweeper(directory, elements, multi_host=True) as sweeper:
            mode = sweeper._db.execute("PRAGMA journal_mode").fetchone()[0]
            assert mode == "delete"
            with ParamSweeper(directory, elements) as other:
                assert sweeper.get_next() == elements[0]
                assert other.get_next() == elements[1]
        single = tmp_path / "single"
        ParamSweeper(single, elements).close()
        with pytest.raises(StoreError, match="WAL does not work between hosts"):
            ParamSweeper(single, elements, multi_host=True)

    def test_network_filesystem_detection(self, directory, monkeypatch):
        monkeypatch.setattr(sweeper_module, "_is_network_filesystem", lambda d: True)
        with ParamSweeper(directory, combinations(1)) as sweeper:
            mode = sweeper._db.execute("PRAGMA journal_mode").fetchone()[0]
            assert mode == "delete"

    @posix_only
    def test_private(self, directory, tmp_path):
        ParamSweeper(directory, combinations(1)).close()
        assert directory.stat().st_mode & 0o777 == 0o700
        assert (directory / DATABASE).stat().st_mode & 0o777 == 0o600
        shared = tmp_path / "shared"
        shared.mkdir()
        shared.chmod(0o775)
        with pytest.raises(StoreError, match="chmod go-w"):
            ParamSweeper(shared, combinations(1))
        assert list(shared.iterdir()) == []

    def test_closed_and_not_picklable(self, directory):
        sweeper = ParamSweeper(directory, combinations(1))
        with pytest.raises(TypeError, match="create one in each process"):
            pickle.dumps(sweeper)
        sweeper.close()
        sweeper.close()
        with pytest.raises(InvalidStateError, match="closed"):
            sweeper.get_next()
        with pytest.raises(InvalidStateError, match="closed"):
            sweeper.update()


# -- threads, instances and processes -----------------------------------------


def drain(sweeper: ParamSweeper, got: list) -> None:
    while (element := sweeper.get_next()) is not None:
        got.append(element["i"])
        sweeper.done(element)


def run_threads(targets) -> None:
    threads = [threading.Thread(target=target) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert not any(thread.is_alive() for thread in threads), "a thread hangs"


class TestConcurrency:
    def test_threads_on_one_instance(self, directory):
        with ParamSweeper(directory, combinations(2000)) as sweeper:
            got = [[] for _ in range(8)]
            run_threads([lambda got=mine: drain(sweeper, got) for mine in got])
            everything = [i for mine in got for i in mine]
            assert sorted(everything) == list(range(2000))
            assert len(sweeper.get_done()) == 2000

    def test_instances_in_one_process(self, directory):
        elements = combinations(2000)
        sweepers = [ParamSweeper(directory, elements) for _ in range(4)]
        try:
            got = [[] for _ in range(8)]
            run_threads(
                [
                    lambda got=mine, s=sweepers[n % 4]: drain(s, got)
                    for n, mine in enumerate(got)
                ]
            )
        finally:
            for sweeper in sweepers:
                sweeper.close()
        everything = [i for mine in got for i in mine]
        assert sorted(everything) == list(range(2000))

    def test_processes(self, directory, tmp_path):
        ParamSweeper(directory, combinations(2000), save_sweeps=True).close()
        children = [start_child(directory, tmp_path / f"child{n}") for n in range(4)]
        for child in children:
            child.finish()
        reports = [child.report() for child in children]
        everything = [i for report in reports for i in report.done]
        assert sorted(everything) == list(range(2000))
        assert all(report.got == report.done for report in reports)
        with ParamSweeper(directory) as sweeper:
            assert len(sweeper.get_done()) == 2000


# -- children for the crash tests ----------------------------------------------

CHILD = """\
import faulthandler, sys
faulthandler.dump_traceback_later({wait}, exit=True)
from alma_dag.sweeper import ParamSweeper
sweeper = ParamSweeper(sys.argv[1])
out = sys.stdout
out.write("ready\\n"); out.flush()
while (element := sweeper.get_next()) is not None:
    out.write(f"G {{element['i']}}\\n"); out.flush()
    sweeper.done(element)
    out.write(f"D {{element['i']}}\\n"); out.flush()
out.write("end\\n"); out.flush()
"""

LOADER = """\
import faulthandler, sys
faulthandler.dump_traceback_later({wait}, exit=True)
from alma_dag.sweeper import ParamSweeper
from alma_dag.sweep import sweep
orders = [sweep({{"i": range({n})}}), sweep({{"i": range({n} - 1, -1, -1)}})]
sys.stdout.write("ready\\n"); sys.stdout.flush()
turn = 0
while True:
    ParamSweeper(sys.argv[1]).close()
    ParamSweeper(sys.argv[1], orders[turn % 2], save_sweeps=True).close()
    turn += 1
"""


class Report:
    """What a child printed: the elements get_next returned and those done
    returned for, in order; whether it reached the end."""

    def __init__(self, text: str) -> None:
        lines = text.split("\n")[:-1]  # a line cut by a kill is no line
        self.ready = "ready" in lines
        self.ended = "end" in lines
        self.got = [int(line[2:]) for line in lines if line.startswith("G ")]
        self.done = [int(line[2:]) for line in lines if line.startswith("D ")]


class Child:
    def __init__(self, process: subprocess.Popen, out: Path, err: Path) -> None:
        self.process, self.out, self.err = process, out, err

    def report(self) -> Report:
        return Report(self.out.read_text())

    def wait_until(self, condition) -> None:
        deadline = time.monotonic() + WAIT
        while not condition(self.report()):
            if self.process.poll() is not None:
                return
            if time.monotonic() > deadline:
                self.process.kill()
                self.process.wait(WAIT)
                pytest.fail(f"waited {WAIT} s for a child:\n{self.errors()}")
            time.sleep(0.002)

    def errors(self) -> str:
        return self.err.read_text(errors="replace")[-4000:]

    def kill(self, sig: int = signal.SIGKILL) -> int:
        self.process.send_signal(sig)
        return self.process.wait(WAIT)

    def finish(self) -> None:
        try:
            code = self.process.wait(WAIT + 5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(WAIT)
            pytest.fail(f"a child did not end:\n{self.errors()}")
        assert code == 0, f"a child failed with {code}:\n{self.errors()}"


def start_child(directory: Path, files: Path, program: str = CHILD, **fill) -> Child:
    code = program.format(wait=WAIT, **fill)
    out, err = files.with_suffix(".out"), files.with_suffix(".err")
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-c", code, str(directory)], stdout=stdout, stderr=stderr
        )
    return Child(process, out, err)


def recorded(directory: Path) -> dict[str, set[int]]:
    """The states in the database, read without a ParamSweeper: each
    element's last row of the log."""
    db = sqlite3.connect(directory / DATABASE)
    try:
        rows = db.execute("SELECT key, state FROM log ORDER BY seq").fetchall()
    finally:
        db.close()
    states: dict[str, set[int]] = {"done": set(), "inprogress": set()}
    for key, state in dict(rows).items():
        if state == _State.DONE:
            states["done"].add(_decode(key)["i"])
        elif state == _State.INPROGRESS:
            states["inprogress"].add(_decode(key)["i"])
    return states


# -- crashes ----------------------------------------------------------------------


class TestCrashes:
    @posix_only
    def test_sigkill_at_random_moments(self, directory, tmp_path):
        """Ten children killed at random moments, one after the other, then
        an instance here drains the rest: nothing reported done is lost, no
        element is handed out once done, and each in-progress element of a
        killed child is handed out again."""
        rng = random.Random(20240612)
        n = 5000
        ParamSweeper(directory, combinations(n), save_sweeps=True).close()
        reported_done: set[int] = set()
        for trial in range(10):
            before = recorded(directory)["done"]
            child = start_child(directory, tmp_path / f"trial{trial}")
            lines = rng.randrange(1, 200)
            child.wait_until(lambda r, lines=lines: len(r.got) >= lines)
            time.sleep(rng.uniform(0, 0.01))
            assert child.kill() == -signal.SIGKILL, child.errors()
            report = child.report()
            assert not report.ended
            assert not set(report.got) & before, "handed out once done"
            assert len(report.got) == len(set(report.got))
            reported_done |= set(report.done)
            after = recorded(directory)
            assert reported_done <= after["done"], "a done() that returned is lost"
            assert after["done"] >= before
            # Killed holding at most the element it was working on: it
            # first took back the one its predecessor was killed holding.
            assert len(after["inprogress"]) <= 1
        with ParamSweeper(directory) as sweeper:
            done = numbers(sweeper.get_done())
            assert sweeper.get_inprogress() == set(), "claims of the dead hold"
            got: list[int] = []
            drain(sweeper, got)
            assert not set(got) & done
            assert sorted(got + sorted(done)) == list(range(n))

    @pytest.mark.parametrize("reaped", [True, False], ids=["exited", "zombie"])
    def test_claims_of_a_gone_process_are_reclaimed(self, directory, reaped):
        """A process that exited holding claims, reaped or still a zombie
        (killed, not yet waited for): its elements are handed out again."""
        elements = combinations(6)
        with ParamSweeper(directory, elements, save_sweeps=True) as sweeper:
            sweeper.done(elements[0])
        code = (
            "import os, sys\n"
            "from alma_dag.sweeper import ParamSweeper\n"
            "sweeper = ParamSweeper(sys.argv[1])\n"
            "sweeper.get_next_batch(3)\n"
            "os._exit(0)\n"
        )
        process = subprocess.Popen([sys.executable, "-c", code, str(directory)])
        try:
            if reaped:
                assert process.wait(WAIT) == 0
            else:
                zombie = psutil.Process(process.pid)
                deadline = time.monotonic() + WAIT
                while zombie.status() != psutil.STATUS_ZOMBIE:
                    assert time.monotonic() < deadline, "the child did not exit"
                    time.sleep(0.01)
            assert recorded(directory)["inprogress"] == {1, 2, 3}
            with ParamSweeper(directory) as sweeper:
                assert sweeper.get_inprogress() == set()
                assert sweeper.get_next_batch(10) == elements[1:]
        finally:
            process.wait(WAIT)

    def test_claims_of_a_live_process_hold(self, directory, tmp_path):
        elements = combinations(3)
        ParamSweeper(directory, elements, save_sweeps=True).close()
        code = (
            "import faulthandler, sys\n"
            f"faulthandler.dump_traceback_later({WAIT}, exit=True)\n"
            "from alma_dag.sweeper import ParamSweeper\n"
            "sweeper = ParamSweeper(sys.argv[1])\n"
            "sweeper.get_next()\n"
            "print('claimed', flush=True)\n"
            "sys.stdin.read()\n"
        )
        process = subprocess.Popen(
            [sys.executable, "-c", code, str(directory)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert process.stdout.readline() == "claimed\n"
            with ParamSweeper(directory) as sweeper:
                sweeper.update()
                assert sweeper.get_inprogress() == {elements[0]}
                assert sweeper.get_next_batch(5) == elements[1:]
        finally:
            process.communicate("", timeout=WAIT)

    def test_claims_of_other_hosts_and_reused_pids(self, directory):
        """A claim of another host holds until reset(reset_inprogress=True);
        one whose pid now belongs to a later process is void."""
        elements = combinations(3)
        with ParamSweeper(directory, elements) as sweeper:
            host, pid = sweeper._host, os.getpid()
            holders = [f"elsewhere:{pid}:1.0:ab", f"{host}:{pid}:1.0:cd"]
            db = sqlite3.connect(directory / DATABASE)
            with db:
                db.executemany(
                    "INSERT INTO log VALUES (1000 + ?, ?, 2, ?, 0)",
                    [
                        (n, _encode(element), holder)
                        for n, (element, holder) in enumerate(
                            zip(elements[:2], holders, strict=True)
                        )
                    ],
                )
            db.close()
            sweeper.update()
            assert sweeper.get_inprogress() == {elements[0]}
            assert sweeper.get_next_batch(3) == elements[1:]
            sweeper.reset(reset_inprogress=True)
            assert sweeper.get_next() == elements[0]

    def test_interrupted_transaction_changes_nothing(self, directory):
        elements = combinations(4)

        class Interrupting:
            """The connection, but Ctrl-C strikes as a row is written."""

            def __init__(self, db):
                self.db = db

            def __getattr__(self, name):
                return getattr(self.db, name)

            def execute(self, sql, *args):
                if sql.startswith("INSERT"):
                    raise KeyboardInterrupt
                return self.db.execute(sql, *args)

            def executemany(self, sql, *args):
                raise KeyboardInterrupt

        with ParamSweeper(directory, elements) as sweeper:
            first = sweeper.get_next()
            real = sweeper._db
            sweeper._db = Interrupting(real)
            for call in (
                sweeper.get_next,
                lambda: sweeper.done(first),
                lambda: sweeper.cancel(first),
                lambda: sweeper.done_batch(elements),
            ):
                with pytest.raises(KeyboardInterrupt):
                    call()
            sweeper._db = real
            assert not real.in_transaction
            assert state_names(sweeper) == {
                0: "inprogress",
                1: "remaining",
                2: "remaining",
                3: "remaining",
            }
            assert sweeper.get_next() == elements[1]
        assert recorded(directory) == {"done": set(), "inprogress": {0, 1}}

    def test_interrupted_load_loses_nothing(self, directory, monkeypatch):
        elements = combinations(500)
        with ParamSweeper(directory, elements, save_sweeps=True) as sweeper:
            sweeper.done_batch(elements[:200])
        before = (directory / DATABASE).read_bytes()
        calls = 0
        decode = sweeper_module._decode

        def interrupting(text):
            nonlocal calls
            calls += 1
            if calls == 250:
                raise KeyboardInterrupt
            return decode(text)

        monkeypatch.setattr(sweeper_module, "_decode", interrupting)
        with pytest.raises(KeyboardInterrupt):
            ParamSweeper(directory)
        monkeypatch.undo()
        assert (directory / DATABASE).read_bytes() == before
        with ParamSweeper(directory) as sweeper:
            assert sweeper.get_sweeps() == elements
            assert len(sweeper.get_done()) == 200

    @posix_only
    def test_ctrl_c_while_loading(self, directory, tmp_path):
        """SIGINT at random moments of a child that loads the directory
        again and again, saving the sweeps in one order then the other:
        after each, the saved sweeps are whole and nothing done is lost."""
        rng = random.Random(20240613)
        n = 20000
        elements = combinations(n)
        with ParamSweeper(directory, elements, save_sweeps=True) as sweeper:
            sweeper.done_batch(elements[: n // 2])
        orders = [list(range(n)), list(range(n - 1, -1, -1))]
        for trial in range(5):
            child = start_child(directory, tmp_path / f"load{trial}", LOADER, n=n)
            child.wait_until(lambda r: r.ready)
            time.sleep(rng.uniform(0.05, 0.6))
            code = child.kill(signal.SIGINT)
            assert code != 0
            assert "KeyboardInterrupt" in child.errors(), child.errors()
            assert "StoreError" not in child.errors(), child.errors()
            with ParamSweeper(directory) as sweeper:
                assert [e["i"] for e in sweeper.get_sweeps()] in orders
                assert numbers(sweeper.get_done()) == set(range(n // 2))


# -- damaged and foreign files ----------------------------------------------------


def damage_garbage(path: Path) -> None:
    path.write_bytes(random.Random(1).randbytes(20000))


def damage_truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def damage_empty(path: Path) -> None:
    os.truncate(path, 0)


def damage_header(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[100:200] = bytes(100)
    path.write_bytes(bytes(data))


def damage_page(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4096] = random.Random(2).randbytes(4096)
    path.write_bytes(bytes(data))


def damage_foreign(path: Path) -> None:
    path.unlink()
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE results (x)")
    db.commit()
    db.close()


def damage_version(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'version'")
    db.close()


def damage_state(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("UPDATE log SET state = 7")
    db.close()


def damage_saved(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("UPDATE sweeps SET value = '[\"x\", 1]' WHERE pos = 3")
    db.close()


class TestDamage:
    @pytest.mark.parametrize(
        "damage, message",
        [
            (damage_garbage, "not a ParamSweeper database"),
            (damage_truncate, "damaged"),
            (damage_empty, r"not a ParamSweeper database \(empty\)"),
            (damage_header, "damaged"),
            (damage_page, "damaged"),
            (damage_foreign, r"its tables: results"),
            (damage_version, "format version 99"),
            (damage_state, "has state 7"),
            (damage_saved, "saved element 3 is unreadable"),
        ],
    )
    def test_refused_and_left_as_it_is(self, directory, damage, message):
        elements = combinations(3000)
        with ParamSweeper(directory, elements, save_sweeps=True) as sweeper:
            sweeper.done_batch(elements[:1500])
        path = directory / DATABASE
        damage(path)
        before = path.read_bytes()
        with pytest.raises(StoreError, match=message) as info:
            ParamSweeper(directory)
        assert str(path) in str(info.value)
        assert path.read_bytes() == before
        assert sorted(os.listdir(directory)) == [DATABASE]

    def test_damage_found_before_it_is_read(self, directory):
        """Given the sweeps, an instance never reads the saved ones: a check
        of the whole file at opening finds their damage all the same."""
        elements = combinations(3000)
        ParamSweeper(directory, elements, save_sweeps=True).close()
        path = directory / DATABASE
        db = sqlite3.connect(path)
        (root,) = db.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = 'sweeps'"
        ).fetchone()
        (size,) = db.execute("PRAGMA page_size").fetchone()
        db.close()
        data = bytearray(path.read_bytes())
        data[(root - 1) * size : root * size] = random.Random(3).randbytes(size)
        path.write_bytes(bytes(data))
        with pytest.raises(StoreError, match="damaged"):
            ParamSweeper(directory, elements)
        assert path.read_bytes() == data

    def test_not_a_file(self, directory):
        (directory / DATABASE).mkdir(parents=True)
        with pytest.raises(StoreError, match="not a file"):
            ParamSweeper(directory, combinations(1))


@pytest.mark.parametrize("table", ["log", "sweeps"])
def test_text_that_is_not_utf8_is_a_store_error(tmp_path, table):
    """Bytes overwritten inside a key (found by the fault matrix) gave a raw
    UnicodeDecodeError; a damaged file is a StoreError."""
    directory = tmp_path / "sw"
    first = sweeper_module.ParamSweeper(
        directory, sweep({"a": [1, 2, 3]}), save_sweeps=True
    )
    first.done(first.get_next())
    first.close()
    with sqlite3.connect(directory / "sweeper.sqlite") as db:
        db.execute(f"UPDATE {table} SET key = CAST(x'ff80' AS TEXT)")
    db.close()
    with pytest.raises(StoreError, match="not UTF-8"):
        sweeper_module.ParamSweeper(directory).get_done()


def test_store_text_that_is_not_utf8_is_a_store_error(tmp_path):
    from alma_dag.store import NodeRecord, Store

    with Store(tmp_path / "run") as store:
        store.record([NodeRecord("a", 1, 1, 0.0, 1.0)])
    with sqlite3.connect(tmp_path / "run" / "store.sqlite") as db:
        db.execute("UPDATE nodes SET id = CAST(x'ff80' AS TEXT)")
    db.close()
    with pytest.raises(StoreError, match="not UTF-8"):
        with Store(tmp_path / "run") as store:
            store.done_ids()
