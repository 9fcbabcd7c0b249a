"""Workers and their Boss: declaring and hiring workers, then whole runs.

Worker classes are made by the small factories below, or defined inside
the test that uses them: either way they travel to the worker processes by
value, with cloudpickle, as a notebook's classes would. A factory gives
its class the same qualified name at each call, so the newest definition
replaces the older ones when hiring.

Workers write what they did (start and end times, memory) into files of
``tmp_path``; concurrency and memory use are measured from those files,
never from the test's own clock. Workers that must wait poll for a "go"
file the test creates, so no test depends on timing.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import WAIT

from alma_dag.errors import (
    DefinitionError,
    Err,
    InvalidStateError,
    SerializationError,
    TaskFailure,
    WorkerDied,
)
from alma_dag.schedulers import (
    BaseScheduler,
    LaxistScheduler,
    MaxMemoryScheduler,
    MaxThreadsScheduler,
)
from alma_dag.workers import (
    Boss,
    BossState,
    Worker,
    _Admission,
    batch_main,
    hire_worker,
    run_as_server,
)

ROOT = Path(__file__).resolve().parents[1]


# -- workers used by several tests --------------------------------------------


def sleeper_class():
    """taylorism's example worker."""

    class Sleeper(Worker):
        """Sleeps a given time."""

        sleeping_time: float
        wakeup_sentence: str = "hello"

        def _task(self):
            time.sleep(self.sleeping_time)
            return f"{self.wakeup_sentence}: woke up after {self.sleeping_time} s"

    return Sleeper


def stamper_class():
    class Stamper(Worker):
        """Sleeps, then writes when it ran and its memory to a file."""

        stamp_dir: str
        sleeping_time: float = 0.0

        def _task(self):
            start = time.time()
            time.sleep(self.sleeping_time)
            end = time.time()
            text = f"{start} {end} {self.memory}"
            Path(self.stamp_dir, self.name).write_text(text)
            return self.name

    return Stamper


def gated_class():
    class Gated(Worker):
        """Says it started, then waits for its "go" file (a minute at most)."""

        gate_dir: str

        def _task(self):
            gates = Path(self.gate_dir)
            (gates / f"{self.name}.started").touch()
            deadline = time.time() + 60
            while not (gates / f"{self.name}.go").exists():
                if time.time() > deadline:
                    raise TimeoutError(f"{self.name}: the test never opened the gate")
                time.sleep(0.005)
            return self.name

    return Gated


def stamps(directory: Path) -> list[tuple[float, float, float]]:
    """(start, end, memory) of each worker that wrote to ``directory``."""
    found = []
    for path in directory.iterdir():
        start, end, memory = map(float, path.read_text().split())
        found.append((start, end, memory))
    return found


def peak(intervals: list[tuple[float, float, float]], weight) -> float:
    """The largest total ``weight`` of intervals running at one moment."""
    events = []
    for start, end, memory in intervals:
        events.append((start, 1, weight(memory)))
        events.append((end, -1, weight(memory)))
    events.sort(key=lambda e: (e[0], e[1]))  # an end before a start at a tie
    now = top = 0.0
    for _, sign, amount in events:
        now += sign * amount
        top = max(top, now)
    return top


def until(predicate, what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def names(report) -> list[str]:
    return [entry["name"] for entry in report["workers_report"]]


@pytest.fixture
def sleeper():
    return sleeper_class()


@pytest.fixture
def stamper():
    return stamper_class()


@pytest.fixture
def gated():
    return gated_class()


@pytest.fixture
def make_boss():
    """Bosses that are stopped at teardown, so that none outlives its test."""
    bosses = []

    def make(*args, **kwargs):
        boss = Boss(*args, **kwargs)
        bosses.append(boss)
        return boss

    yield make
    for boss in bosses:
        boss.stop_them_working()


# -- workers and hiring, without a Boss ---------------------------------------


class TestWorker:
    def test_instructions_become_attributes(self):
        Sleeper = sleeper_class()
        worker = Sleeper(sleeping_time=0.0, colour="blue", name="w")
        assert (worker.sleeping_time, worker.wakeup_sentence) == (0.0, "hello")
        assert (worker.name, worker.memory) == ("w", 0.0)
        assert not hasattr(worker, "colour")  # not declared: ignored
        assert worker._task() == "hello: woke up after 0.0 s"

    def test_missing_required_instruction(self):
        Sleeper = sleeper_class()
        with pytest.raises(DefinitionError, match="'sleeping_time' is missing"):
            Sleeper(wakeup_sentence="hi")

    def test_instructions_collected_along_the_mro(self):
        from typing import ClassVar

        class Base(Worker):
            _abstract = True
            mro_size: int
            mro_unit: str = "m"
            counter: ClassVar[int] = 0
            _private: int = 1

        class Derived(Base):
            mro_colour: str = "red"

        assert Derived._required == {"mro_size"}
        assert set(Derived._instructions) == {
            "name",
            "memory",
            "mro_size",
            "mro_unit",
            "mro_colour",
        }

    def test_task_must_be_implemented(self):
        class Lazy(Worker):
            lazy_level: int

        with pytest.raises(NotImplementedError, match="Lazy must implement _task"):
            Lazy(lazy_level=1)._task()


class TestHireWorker:
    def test_most_declared_instructions_win(self):
        class Plain(Worker):
            hire_x: int

            def _task(self):
                return "plain"

        class Richer(Worker):
            hire_x: int
            hire_y: int = 0

            def _task(self):
                return "richer"

        assert hire_worker({"hire_x": 1, "hire_y": 2, "other": 3}) is Richer
        with pytest.raises(DefinitionError, match=r"\['hire_x'\] fit several") as info:
            hire_worker({"hire_x": 1})
        assert "Plain" in str(info.value) and "Richer" in str(info.value)

    def test_abstract_classes_are_not_hired(self):
        class Template(Worker):
            _abstract = True
            template_x: int

        class Concrete(Template):
            def _task(self):
                return self.template_x

        assert hire_worker({"template_x": 1}) is Concrete

    def test_no_candidate_names_the_keys(self):
        with pytest.raises(DefinitionError, match=r"no Worker subclass takes .*'zz'"):
            hire_worker({"zz": 1, "yy": 2})

    def test_a_redefined_class_replaces_the_old_one(self):
        classes = []
        for _ in range(2):  # as a notebook cell run twice

            class Redefined(Worker):
                redefined_x: int

                def _task(self):
                    return self.redefined_x

            classes.append(Redefined)
        assert hire_worker({"redefined_x": 1}) is classes[1]

    def test_garbage_classes_are_not_rivals(self):
        def define_and_drop():
            class Ghost(Worker):
                ghost_x: int

                def _task(self):
                    return 0

        gc.disable()  # keep the dropped class alive until hiring collects it
        try:
            define_and_drop()

            class Alive(Worker):
                ghost_x: int

                def _task(self):
                    return 1

            assert hire_worker({"ghost_x": 1}) is Alive
        finally:
            gc.enable()


class TestAdmission:
    """The scheduler seen by the dispatcher, without threads."""

    def sets(self, n):
        return {f"s{i}": {"name": f"s{i}", "memory": 0.0, "extra": i} for i in range(n)}

    def test_scheduler_sees_full_sets_and_pool_caps(self):
        seen = []

        class Recorder(BaseScheduler):
            def launchable(self, pending_instructions, workers, report):
                seen.append((pending_instructions, workers))
                return list(pending_instructions), []

        sets = self.sets(4)
        admission = _Admission(Recorder(), sets, limit=2)
        offers = [{"name": n, "memory": 0.0} for n in sets]
        now, later = admission.launchable(offers[1:], offers[:1], {})
        assert now == offers[1:2] and later == offers[2:]  # 1 running, 2 slots
        pending, workers = seen[0]
        assert [s["extra"] for s in pending] == [1, 2, 3]
        assert workers == [sets["s0"]]

    def test_a_scheduler_that_admits_nothing_is_an_error(self):
        class Never(BaseScheduler):
            def launchable(self, pending_instructions, workers, report):
                return [], list(pending_instructions)

        sets = self.sets(2)
        admission = _Admission(Never(), sets, limit=2)
        offers = [{"name": n, "memory": 0.0} for n in sets]
        assert admission.launchable(offers, [], {}) == ([], offers)
        assert isinstance(admission.error, DefinitionError)
        assert "admitted none of the 2" in str(admission.error)


# -- the Boss ------------------------------------------------------------------


class TestSetInstructions:
    def test_unequal_lengths_name_the_keys(self, make_boss, sleeper):
        boss = make_boss(backend="inline")
        with pytest.raises(ValueError, match=r"'sleeping_time': 2, 'name': 1"):
            boss.set_instructions({}, {"sleeping_time": [0, 0], "name": ["a"]})
        assert boss.get_report()["pending"] == []

    def test_names_are_unique(self, make_boss, sleeper):
        boss = make_boss(backend="inline")
        with pytest.raises(DefinitionError, match="two instruction sets are named 'a'"):
            boss.set_instructions({"sleeping_time": 0}, {"name": ["a", "a"]})
        boss.set_instructions({"sleeping_time": 0}, {"name": ["a"]})
        with pytest.raises(DefinitionError, match="named 'a'"):
            boss.set_instructions({"sleeping_time": 0}, {"name": ["b", "a"]})
        assert [s["name"] for s in boss.get_report()["pending"]] == ["a"]

    def test_generated_names_and_defaults(self, make_boss, sleeper):
        boss = make_boss(backend="inline")
        boss.set_instructions({"sleeping_time": 0}, {"wakeup_sentence": ["x", "y"]})
        pending = boss.get_report()["pending"]
        assert len({s["name"] for s in pending}) == 2
        assert all(s["name"].startswith("Sleeper-") for s in pending)
        assert [s["memory"] for s in pending] == [0.0, 0.0]

    def test_no_worker_fits(self, make_boss):
        boss = make_boss(backend="inline")
        with pytest.raises(DefinitionError, match=r"\['nobody_takes_this'\]"):
            boss.set_instructions({}, {"nobody_takes_this": [1]})

    def test_common_instructions_alone_make_no_set(self, make_boss):
        boss = make_boss(backend="inline")
        with pytest.raises(DefinitionError, match="make no set"):
            boss.set_instructions({"sleeping_time": 1}, {})
        boss.set_instructions({}, {})  # nothing at all: nothing to do

    def test_bad_memory(self, make_boss, sleeper):
        boss = make_boss(backend="inline")
        with pytest.raises(DefinitionError, match="'memory' must be a non-negative"):
            boss.set_instructions({"sleeping_time": 0}, {"memory": [-1]})

    def test_after_end(self, make_boss, sleeper):
        boss = make_boss(backend="inline")
        boss.end()
        with pytest.raises(InvalidStateError, match="was ended"):
            boss.set_instructions({}, {"sleeping_time": [0]})


class TestRuns:
    def test_taylorism_sleepers(self, make_boss, sleeper):
        boss = make_boss(scheduler=MaxThreadsScheduler(2), name="sleepers")
        assert boss.state is BossState.HALTED
        boss.set_instructions(
            {"wakeup_sentence": "yo"},
            {"sleeping_time": [0.05, 0.01, 0.02], "name": ["a", "b", "c"]},
        )
        boss.make_them_work()
        boss.set_instructions({}, {"sleeping_time": [0.0], "name": ["d"]})
        boss.wait_till_finished(timeout=WAIT)
        report = boss.get_report()
        assert report["status"] == "finished"
        assert sorted(names(report)) == ["a", "b", "c", "d"]
        assert report["pending"] == report["aborted"] == []
        by_name = {e["name"]: e["report"] for e in report["workers_report"]}
        assert by_name["a"] == "yo: woke up after 0.05 s"
        assert by_name["d"] == "hello: woke up after 0.0 s"

    def test_the_example_runs(self, tmp_path):
        script = ROOT / "examples" / "workers" / "sleepers.py"
        done = subprocess.run(
            [sys.executable, str(script), "--scale", "0.01"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=WAIT,
        )
        assert done.returncode == 0, done.stderr
        assert "status: finished" in done.stdout

    def test_max_threads_is_respected(self, make_boss, tmp_path, stamper):
        boss = make_boss(scheduler=MaxThreadsScheduler(2), workers=3)
        boss.set_instructions(
            {"stamp_dir": str(tmp_path)}, {"sleeping_time": [0.02, 0.05] * 5}
        )
        boss.make_them_work()
        boss.wait_till_finished(timeout=WAIT)
        assert len(boss.get_report()["workers_report"]) == 10
        assert peak(stamps(tmp_path), lambda memory: 1) <= 2

    def test_memory_budget(self, make_boss, tmp_path, stamper):
        scheduler = MaxMemoryScheduler(1.0, total_system_memory=100)
        boss = make_boss(scheduler=scheduler, workers=3)
        memory = [60, 40, 100, 30, 70, 50, 20, 10]
        with pytest.raises(DefinitionError, match="exceeds") as info:
            boss.set_instructions(
                {"stamp_dir": str(tmp_path)}, {"memory": [*memory, 101]}
            )
        assert info.value.field == "memory"
        assert boss.get_report()["pending"] == []  # nothing was queued
        boss.set_instructions(
            {"stamp_dir": str(tmp_path), "sleeping_time": 0.02}, {"memory": memory}
        )
        boss.make_them_work()
        boss.wait_till_finished(timeout=WAIT)
        ran = stamps(tmp_path)
        assert sorted(m for _, _, m in ran) == sorted(memory)  # 100 ran too
        assert peak(ran, lambda memory: memory) <= 100

    def test_completion_order_follows_submission(self, make_boss, tmp_path, stamper):
        given = ["zeta", "alpha", "mid", "beta"]  # not in name order
        boss = make_boss(scheduler=MaxThreadsScheduler(1))
        boss.set_instructions({"stamp_dir": str(tmp_path)}, {"name": given})
        boss.make_them_work()
        boss.wait_till_finished(timeout=WAIT)
        assert names(boss.get_report()) == given

    def test_worker_classes_defined_in_the_test(self, make_boss):
        offset = 100  # a closure: the class travels by value

        class Offsetter(Worker):
            local_number: int

            def _task(self):
                return os.getpid(), self.local_number + offset

        boss = make_boss(scheduler=MaxThreadsScheduler(2))
        boss.set_instructions({}, {"local_number": [1, 2, 3]})
        boss.make_them_work()
        boss.wait_till_finished(timeout=WAIT)
        reports = [e["report"] for e in boss.get_report()["workers_report"]]
        assert sorted(value for _, value in reports) == [101, 102, 103]
        assert os.getpid() not in {pid for pid, _ in reports}

    def test_custom_scheduler_sees_full_sets(self, make_boss):

        class Priorities(BaseScheduler):
            """One set at a time, the highest ``priority`` first."""

            def launchable(self, pending_instructions, workers, report):
                if workers:
                    return [], list(pending_instructions)
                first = max(pending_instructions, key=lambda s: s["priority"])
                return [first], [s for s in pending_instructions if s is not first]

        class Prioritized(Worker):
            priority: int

            def _task(self):
                return self.priority

        boss = make_boss(scheduler=Priorities(), workers=2)
        boss.set_instructions({}, {"priority": [2, 9, 5, 7], "name": list("abcd")})
        boss.make_them_work()
        boss.wait_till_finished(timeout=WAIT)
        assert names(boss.get_report()) == ["b", "d", "c", "a"]

    def test_run_as_server_and_batch_main(self, capsys, sleeper):
        boss = run_as_server(
            {"sleeping_time": 0.0}, {"name": ["s1", "s2"]}, backend="inline"
        )
        assert boss.state is BossState.WORKING
        boss.wait_till_finished(timeout=WAIT)
        assert sorted(names(boss.get_report())) == ["s1", "s2"]
        report = batch_main(
            {"sleeping_time": 0.0},
            {"name": ["b1"], "wakeup_sentence": ["morning"]},
            scheduler=LaxistScheduler(),
            backend="inline",
        )
        assert report["status"] == "finished"
        out = capsys.readouterr().out
        assert "WORKER NAME: b1" in out
        assert "morning: woke up after 0.0 s" in out


class TestControl:
    def test_terminate_ends_the_boss(self, make_boss, sleeper):
        boss = make_boss(backend="inline")
        boss.set_instructions({"sleeping_time": 0}, {"name": ["only"]})
        boss.make_them_work(terminate=True)
        with pytest.raises(InvalidStateError, match="was ended"):
            boss.set_instructions({"sleeping_time": 0}, {"name": ["more"]})
        boss.wait_till_finished(timeout=WAIT)
        assert names(boss.get_report()) == ["only"]

    def test_verbose_logs_reports(self, make_boss, sleeper, caplog):
        caplog.set_level("INFO", logger="alma_dag.workers")
        boss = make_boss(name="chatty", verbose=True, backend="inline")
        boss.set_instructions({"sleeping_time": 0}, {"name": ["v"]})
        boss.make_them_work()
        boss.wait_till_finished(timeout=WAIT)
        assert "boss 'chatty': worker 'v' reported: hello" in caplog.text

    def test_interim_reports(self, make_boss, tmp_path, gated):
        boss = make_boss(scheduler=MaxThreadsScheduler(1))
        boss.set_instructions({"gate_dir": str(tmp_path)}, {"name": ["g1", "g2"]})
        report = boss.get_report()
        assert (report["status"], len(report["pending"])) == ("interim", 2)
        assert boss.get_report(interim=False) is None
        boss.make_them_work()
        (tmp_path / "g1.go").touch()
        until(lambda: names(boss.get_report()) == ["g1"], "g1 to report")
        until(lambda: (tmp_path / "g2.started").exists(), "g2 to start")
        report = boss.get_report()
        assert report["status"] == "interim" and report["pending"] == []
        assert boss.get_report(interim=False) is None
        (tmp_path / "g2.go").touch()
        boss.wait_till_finished(timeout=WAIT)
        final = boss.get_report(interim=False)
        assert final["status"] == "finished" and names(final) == ["g1", "g2"]

    def test_halt_then_resume(self, make_boss, tmp_path, gated):
        boss = make_boss(scheduler=MaxThreadsScheduler(1))
        boss.set_instructions({"gate_dir": str(tmp_path)}, {"name": ["h1", "h2", "h3"]})
        with pytest.raises(InvalidStateError, match="halted with 3"):
            boss.wait_till_finished(timeout=WAIT)
        boss.make_them_work()
        until(lambda: (tmp_path / "h1.started").exists(), "h1 to start")
        boss.halt()
        assert boss.state is BossState.HALTED
        (tmp_path / "h1.go").touch()
        (tmp_path / "h2.go").touch()
        until(lambda: names(boss.get_report()) == ["h1"], "h1 to report")
        report = boss.get_report()
        assert report["status"] == "interim"
        assert [s["name"] for s in report["pending"]] == ["h2", "h3"]
        with pytest.raises(InvalidStateError, match="halted with 2"):
            boss.wait_till_finished(timeout=WAIT)
        assert not (tmp_path / "h2.started").exists()
        boss.make_them_work()
        until(lambda: (tmp_path / "h3.started").exists(), "h3 to start")
        (tmp_path / "h3.go").touch()
        boss.wait_till_finished(timeout=WAIT)
        assert names(boss.get_report()) == ["h1", "h2", "h3"]

    def test_halted_boss_lets_a_run_with_nothing_left_end(
        self, make_boss, tmp_path, gated
    ):
        boss = make_boss(scheduler=MaxThreadsScheduler(2))
        boss.set_instructions({"gate_dir": str(tmp_path)}, {"name": ["k1"]})
        boss.make_them_work()
        until(lambda: (tmp_path / "k1.started").exists(), "k1 to start")
        boss.halt()
        (tmp_path / "k1.go").touch()
        boss.wait_till_finished(timeout=WAIT)  # nothing was left to start
        assert names(boss.get_report()) == ["k1"]

    def test_stop(self, make_boss, tmp_path, gated):
        boss = make_boss(scheduler=MaxThreadsScheduler(2))
        boss.set_instructions(
            {"gate_dir": str(tmp_path)}, {"name": ["s1", "s2", "s3", "s4"]}
        )
        boss.make_them_work()
        until(
            lambda: all((tmp_path / f"{n}.started").exists() for n in ("s1", "s2")),
            "s1 and s2 to start",
        )
        boss.stop_them_working()  # s1 and s2 never get their gate
        report = boss.get_report()
        assert report["status"] == "pending"
        assert report["workers_report"] == []
        assert sorted(s["name"] for s in report["aborted"]) == ["s1", "s2"]
        assert [s["name"] for s in report["pending"]] == ["s3", "s4"]
        assert boss.state is BossState.STOPPED
        with pytest.raises(InvalidStateError, match="stopped"):
            boss.set_instructions({"gate_dir": str(tmp_path)}, {"name": ["s5"]})
        with pytest.raises(InvalidStateError, match="create a new Boss"):
            boss.make_them_work()
        boss.wait_till_finished(timeout=WAIT)  # over: returns at once

    def test_wait_timeout(self, make_boss, tmp_path, gated):
        boss = make_boss(scheduler=MaxThreadsScheduler(1))
        boss.set_instructions({"gate_dir": str(tmp_path)}, {"name": ["t1"]})
        boss.make_them_work()
        with pytest.raises(TimeoutError, match="not finished after 0.05 s"):
            boss.wait_till_finished(timeout=0.05)


class TestFailures:
    def test_an_error_stops_the_others(self, make_boss, tmp_path, gated):

        class Faulty(Worker):
            faulty_gate: str

            def _task(self):
                until_go = Path(self.faulty_gate)
                while not until_go.exists():
                    time.sleep(0.005)
                raise ValueError(f"{self.name} went wrong")

        boss = make_boss(scheduler=MaxThreadsScheduler(3))
        gates = {"gate_dir": str(tmp_path)}
        boss.set_instructions(gates, {"name": ["quick"]})
        boss.set_instructions(
            {"faulty_gate": str(tmp_path / "fail")}, {"name": ["bad"]}
        )
        boss.set_instructions(gates, {"name": ["slow1", "slow2", "never"]})
        boss.make_them_work()
        (tmp_path / "quick.go").touch()
        until(
            lambda: all(
                (tmp_path / f"{n}.started").exists() for n in ("slow1", "slow2")
            ),
            "slow1 and slow2 to start",
        )
        (tmp_path / "fail").touch()
        with pytest.raises(ValueError, match="bad went wrong") as info:
            boss.wait_till_finished(timeout=WAIT)
        cause = info.value.__cause__
        assert "in _task" in str(cause) and "bad went wrong" in str(cause)
        report = boss.get_report()
        assert report["status"] == "workers exception"
        assert names(report) == ["quick", "bad"]  # the finished entry is kept
        failed = report["workers_report"][1]
        assert isinstance(failed["exception"], ValueError)
        assert failed["report"] is failed["exception"]
        assert "raise ValueError" in failed["traceback"]
        assert sorted(s["name"] for s in report["aborted"]) == ["slow1", "slow2"]
        assert [s["name"] for s in report["pending"]] == ["never"]
        assert boss.state is BossState.FAILED
        assert not (tmp_path / "never.started").exists()

    @pytest.mark.parametrize("how", ["exit", "segfault"])
    def test_a_dying_worker(self, make_boss, how, sleeper):

        class Doomed(Worker):
            doom: str

            def _task(self):
                if self.doom == "exit":
                    os._exit(3)
                import ctypes

                ctypes.string_at(0)  # segmentation fault

        boss = make_boss(scheduler=MaxThreadsScheduler(1))
        boss.set_instructions({"sleeping_time": 0.0}, {"name": ["fine"]})
        boss.set_instructions({}, {"doom": [how], "name": ["doomed"]})
        boss.set_instructions({"sleeping_time": 0.0}, {"name": ["after"]})
        boss.make_them_work()
        with pytest.raises(WorkerDied, match="'doomed'.*died") as info:
            boss.wait_till_finished(timeout=WAIT)
        assert info.value.exitcode == (3 if how == "exit" else -11)
        report = boss.get_report()
        assert names(report) == ["fine", "doomed"]
        assert [s["name"] for s in report["pending"]] == ["after"]

    def test_an_unpicklable_report(self, make_boss):
        class Locker(Worker):
            lock_kind: str

            def _task(self):
                return threading.Lock()

        boss = make_boss(scheduler=MaxThreadsScheduler(1))
        boss.set_instructions({}, {"lock_kind": ["plain"], "name": ["locker"]})
        boss.make_them_work()
        with pytest.raises(SerializationError, match="'locker' returned a lock"):
            boss.wait_till_finished(timeout=WAIT)
        assert boss.get_report()["status"] == "workers exception"

    def test_system_exit_is_a_failure(self, make_boss):
        class Quitter(Worker):
            exit_code: int

            def _task(self):
                sys.exit(self.exit_code)

        boss = make_boss(scheduler=MaxThreadsScheduler(1))
        boss.set_instructions({}, {"exit_code": [4], "name": ["quitter"]})
        boss.make_them_work()
        with pytest.raises(TaskFailure, match=r"'quitter'.*raised SystemExit\(4\)"):
            boss.wait_till_finished(timeout=WAIT)

    def test_a_scheduler_that_never_admits(self, make_boss, sleeper):

        class Never(BaseScheduler):
            def launchable(self, pending_instructions, workers, report):
                return [], list(pending_instructions)

        boss = make_boss(scheduler=Never(), backend="inline")
        boss.set_instructions({"sleeping_time": 0}, {"name": ["x", "y"]})
        boss.make_them_work()
        with pytest.raises(DefinitionError, match="admitted none") as info:
            boss.wait_till_finished(timeout=WAIT)
        assert info.value.field == "scheduler"
        report = boss.get_report()
        assert report["status"] == "workers exception"
        assert [s["name"] for s in report["pending"]] == ["x", "y"]

    def test_entries_hold_err_details(self, make_boss):
        class Raiser(Worker):
            raiser_message: str

            def _task(self):
                raise KeyError(self.raiser_message)

        boss = make_boss(backend="inline")
        boss.set_instructions({}, {"raiser_message": ["k"], "name": ["r"]})
        boss.make_them_work()
        with pytest.raises(KeyError):
            boss.wait_till_finished(timeout=WAIT)
        (entry,) = boss.get_report()["workers_report"]
        assert set(entry) == {"name", "report", "exception", "traceback"}
        assert Err(entry["exception"]) == Err(KeyError("k"))
