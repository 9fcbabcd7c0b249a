"""The checkpoint store: what it records and reads back, what it refuses to
open, states saved from other processes, and the run lock.

Processes that must hold something (a lock, an open connection) while the
test looks are started with ``subprocess`` and write a marker file when
they are ready; the test waits for the marker (bounded by ``WAIT``), then
kills them with SIGKILL, as a crash or a reboot would.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import WAIT

from alma_dag import DefinitionError, Dispatcher, Err, StoreError, TaskGraph
from alma_dag import store as store_module
from alma_dag.errors import DependencyError
from alma_dag.store import (
    DATABASE,
    SCHEMA_VERSION,
    LockedError,
    NodeRecord,
    NodeStatus,
    Store,
    load_state,
    lock_holder,
    run_lock,
    save_state,
)

is_root = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0,
    reason="changing a file's owner needs root",
)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return tmp_path / "run.alma"


@pytest.fixture
def store(run_dir: Path):
    with Store(run_dir) as store:
        yield store


@pytest.fixture
def spawn():
    """Start ``python -c code args...``, with ``mark`` defined; every process
    started is killed and reaped at teardown."""
    started: list[subprocess.Popen] = []

    def spawn(code: str, *args: object) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-c", MARKER + textwrap.dedent(code), *map(str, args)]
        )
        started.append(proc)
        return proc

    yield spawn
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(WAIT)


def wait_for_marker(marker: Path, proc: subprocess.Popen) -> str:
    """Wait until ``proc`` writes ``marker``; return what it wrote."""
    deadline = time.monotonic() + WAIT
    while not marker.exists():
        if proc.poll() is not None:
            pytest.fail(f"the subprocess exited ({proc.returncode}) before {marker}")
        if time.monotonic() > deadline:
            pytest.fail(f"the subprocess wrote no {marker} in {WAIT} s")
        time.sleep(0.01)
    return marker.read_text()


def kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(WAIT)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# A subprocess writes its marker by renaming a finished file, so the test
# never reads it half written.
MARKER = textwrap.dedent(
    """
    import os, sys
    def mark(path, text=""):
        with open(path + ".tmp", "w") as file:
            file.write(text)
        os.replace(path + ".tmp", path)
    """
)


class TestCreate:
    @pytest.mark.parametrize("umask", [0o022, 0o000])
    def test_directory_and_database_are_private(self, run_dir, umask):
        old = os.umask(umask)
        try:
            Store(run_dir).close()
        finally:
            os.umask(old)
        assert mode(run_dir) == 0o700
        assert mode(run_dir / DATABASE) == 0o600

    def test_missing_store_is_not_created_unless_asked(self, run_dir):
        for options in ({"create": False}, {"readonly": True}):
            with pytest.raises(StoreError, match="no alma_dag store here"):
                Store(run_dir, **options)
        assert not run_dir.exists()

    def test_directory_with_other_files_and_no_database_is_refused(self, run_dir):
        run_dir.mkdir(mode=0o700)
        (run_dir / "notes.txt").write_text("mine")
        with pytest.raises(StoreError, match="no alma_dag store here"):
            Store(run_dir)
        assert os.listdir(run_dir) == ["notes.txt"]

    @pytest.mark.parametrize("killed", ["after mkdir", "after connect", "tables"])
    def test_creation_killed_midway_is_completed(self, run_dir, killed):
        """Creating a run directory in steps, in place (as alma_dag once
        did), a killed process left it empty, or with a database lacking
        (part of) its layout; the next Store() completes it, while reading
        alone does not."""
        run_dir.mkdir(mode=0o700)
        if killed != "after mkdir":
            db = sqlite3.connect(run_dir / DATABASE, isolation_level=None)
            if killed == "tables":
                db.executescript("BEGIN;" + store_module._SCHEMA + "COMMIT;")
            db.close()
            os.chmod(run_dir / DATABASE, 0o600)
        with pytest.raises(StoreError):
            Store(run_dir, readonly=True)
        with Store(run_dir) as store:
            store.record([NodeRecord("a", 1)])
            assert store.meta("schema") == str(SCHEMA_VERSION)
        with Store(run_dir, readonly=True) as store:
            assert store.done_ids() == {"a"}
        assert mode(run_dir) == 0o700

    def test_a_store_is_never_seen_half_made(self, run_dir, monkeypatch):
        """While the layout is being written, the run directory does not
        exist yet: a reader beside it (status) finds no store, not a
        broken one."""
        lay_out = store_module._lay_out
        seen = []

        def watched(db):
            if not seen:  # creating; then opening lays out what is missing
                seen.append(run_dir.exists())
                with pytest.raises(StoreError, match="no alma_dag store here"):
                    Store(run_dir, readonly=True)
            lay_out(db)

        monkeypatch.setattr(store_module, "_lay_out", watched)
        Store(run_dir).close()
        assert seen == [False]

    @pytest.mark.parametrize("step", ["lay out", "rename"])
    def test_failed_creation_leaves_nothing(self, tmp_path, run_dir, monkeypatch, step):
        def fail(*args):
            raise sqlite3.OperationalError("disk I/O error")

        if step == "lay out":
            monkeypatch.setattr(store_module, "_lay_out", fail)
        else:
            monkeypatch.setattr(store_module.os, "rename", lambda *args: fail())
        with pytest.raises(StoreError, match="cannot create the store") as info:
            Store(run_dir)
        assert "disk I/O error" in str(info.value)
        assert os.listdir(tmp_path) == []  # no run directory, no temporary one

    def test_uncreatable_directory(self, tmp_path):
        (tmp_path / "file").write_text("not a folder")
        with pytest.raises(StoreError, match="cannot create the store"):
            Store(tmp_path / "file" / "run.alma")
        assert (tmp_path / "file").read_text() == "not a folder"

    def test_losing_a_race_to_create_opens_the_winners_store(
        self, tmp_path, run_dir, monkeypatch
    ):
        """Two processes load the same new experiment at once: the one whose
        store lands second opens the first's, and removes nothing of it."""
        with Store(run_dir) as winner:
            winner.record([NodeRecord("a", 1)])
        real_exists = Path.exists
        seen = []

        def exists(path):  # the loser looked before the winner's rename
            if path == run_dir and not seen:
                seen.append(path)
                return False
            return real_exists(path)

        monkeypatch.setattr(Path, "exists", exists)
        with Store(run_dir) as loser:
            assert seen == [run_dir]
            assert loser.done_ids() == {"a"}
        assert os.listdir(tmp_path) == [run_dir.name]


class TestRecord:
    def test_record_and_read_back(self, store):
        boom = Err(ValueError("bad input\nsecond line"), "Traceback ...\nValueError")
        store.record(
            [
                NodeRecord("a", {"x": [1, 2]}, started=1.0, finished=3.5),
                NodeRecord("b", boom, attempts=2, started=4.0, finished=5.0),
                NodeRecord("c", None),  # never ran: recorded, not timed
            ]
        )
        assert store.done_ids() == {"a", "c"}
        assert store.failures() == {"b": "ValueError: bad input"}
        assert store.counts() == {NodeStatus.DONE: 2, NodeStatus.FAILED: 1}
        assert store.result("a") == {"x": [1, 2]}
        assert store.result("c") is None
        err = store.result("b")
        assert err == boom and err.traceback == boom.traceback
        assert store.durations() == {"a": 2.5}
        with pytest.raises(KeyError):
            store.result("zz")

    def test_empty_store(self, store):
        assert store.done_ids() == set()
        assert store.failures() == {}
        assert store.counts() == {NodeStatus.DONE: 0, NodeStatus.FAILED: 0}
        assert store.durations() == {}

    def test_survives_reopening(self, run_dir, store):
        store.record([NodeRecord("a", 42, started=0.0, finished=1.0)])
        store.close()
        for options in ({}, {"create": False}, {"readonly": True}):
            with Store(run_dir, **options) as again:
                assert again.done_ids() == {"a"}
                assert again.result("a") == 42

    def test_recording_again_replaces(self, store):
        store.record([NodeRecord("a", Err(KeyError("k")))])
        store.record([NodeRecord("a", 7, attempts=2)])
        assert store.failures() == {}
        assert store.done_ids() == {"a"}
        assert store.result("a") == 7

    def test_failure_with_empty_message(self, store):
        store.record([NodeRecord("a", Err(RuntimeError()))])
        assert store.failures() == {"a": "RuntimeError: "}

    def test_local_class_travels_by_value(self, store):
        class Point:
            def __init__(self, x):
                self.x = x

        store.record([NodeRecord("p", Point(3)), NodeRecord("f", lambda: 5)])
        assert store.result("p").x == 3
        assert store.result("f")() == 5

    def test_unloadable_result(self, run_dir, store):
        store.record([NodeRecord("a", 1)])
        with sqlite3.connect(run_dir / DATABASE) as db:
            db.execute("UPDATE nodes SET result = x'00'")
        with pytest.raises(StoreError, match="result of 'a' cannot be loaded"):
            store.result("a")

    def test_meta(self, store):
        assert store.meta("who") is None
        assert store.meta("who", "nobody") == "nobody"
        store.set_meta("who", "me")
        store.set_meta("who", "you")
        assert store.meta("who") == "you"
        assert store.meta("schema") == str(SCHEMA_VERSION)

    def test_forget(self, store):
        store.record([NodeRecord("a", 1), NodeRecord("b", 2)])
        store.forget(["a", "never recorded"])
        assert store.done_ids() == {"b"}
        with pytest.raises(KeyError):
            store.result("a")

    def test_clear_keeps_the_layout(self, run_dir, store):
        store.record([NodeRecord("a", 1), NodeRecord("b", Err(ValueError()))])
        store.set_meta("who", "me")
        store.save_state("a", "half way")
        store.clear()
        assert store.counts() == {NodeStatus.DONE: 0, NodeStatus.FAILED: 0}
        assert store.meta("who") is None
        assert store.state("a") == ""
        store.close()
        Store(run_dir, create=False).close()  # still a store of this version


class TestStates:
    def test_no_state_is_empty(self, store):
        assert store.state("n") == ""
        assert load_state(str(store.path), "n") == ""

    def test_last_saved_state_wins(self, store):
        database = str(store.path)
        save_state(database, "n", "one")
        save_state(database, "n", "two")
        store.save_state("m", "three")
        assert store.state("n") == load_state(database, "n") == "two"
        assert load_state(database, "m") == "three"

    def test_state_must_be_a_string(self, store):
        with pytest.raises(TypeError, match="json.dumps"):
            save_state(str(store.path), "n", {"step": 1})
        assert store.state("n") == ""

    def test_saved_from_another_process_before_save_returns(
        self, store, spawn, tmp_path
    ):
        """The child reads the parent's state, saves its own and marks that
        save returned; it is then killed, with no chance to close or commit
        anything more: the state must already be in the database."""
        store.save_state("n", "from parent")
        marker = tmp_path / "saved"
        code = """
            import time
            from alma_dag.store import load_state, save_state
            database, marker = sys.argv[1:]
            got = load_state(database, "n")
            save_state(database, "n", "from child")
            mark(marker, got)
            time.sleep(60)
        """
        proc = spawn(code, store.path, marker)
        assert wait_for_marker(marker, proc) == "from parent"
        kill(proc)
        assert store.state("n") == "from child"
        assert load_state(str(store.path), "n") == "from child"

    def test_a_store_made_anew_is_not_confused_with_the_old(self, run_dir, store):
        """After a reset removes the store and a new one takes its path, the
        connection save() keeps must not read or write the removed one."""
        database = str(store.path)
        save_state(database, "n", "old")
        store.close()
        shutil.rmtree(run_dir)
        with Store(run_dir) as new:
            assert load_state(database, "n") == ""
            save_state(database, "n", "new")
            assert new.state("n") == "new"

    def test_missing_store(self, tmp_path):
        database = tmp_path / "gone.alma" / DATABASE
        with pytest.raises(StoreError, match="cannot open the store"):
            save_state(str(database), "n", "x")
        with pytest.raises(StoreError, match="cannot open the store"):
            load_state(str(database), "n")
        assert not database.parent.exists()


class TestRefusals:
    @pytest.mark.parametrize("options", [{}, {"readonly": True}])
    def test_group_writable_directory(self, run_dir, store, options):
        os.chmod(run_dir, 0o770)
        with pytest.raises(StoreError) as info:
            Store(run_dir, **options)
        message = str(info.value)
        assert str(run_dir) in message
        assert "group or others may write" in message
        assert "pickle" in message  # why
        assert f"chmod go-w {run_dir}" in message  # the fix

    def test_world_writable_database(self, run_dir, store):
        os.chmod(run_dir / DATABASE, 0o606)
        with pytest.raises(StoreError, match="group or others may write") as info:
            Store(run_dir)
        assert str(run_dir / DATABASE) in str(info.value)

    @is_root
    @pytest.mark.parametrize("name", [".", DATABASE])
    def test_owned_by_another_user(self, run_dir, store, name):
        os.chown(run_dir / name, 12345, -1)
        for options in ({}, {"readonly": True}):
            with pytest.raises(StoreError) as info:
                Store(run_dir, **options)
            message = str(info.value)
            assert "owned by another user (uid 12345)" in message
            assert "pickle" in message

    def test_garbage_database(self, run_dir, store):
        store.close()
        (run_dir / DATABASE).write_bytes(b"this is no database " * 500)
        for options in ({}, {"readonly": True}):
            with pytest.raises(StoreError) as info:
                Store(run_dir, **options)
            assert not isinstance(info.value, sqlite3.Error)
            message = str(info.value)
            assert str(run_dir / DATABASE) in message
            assert "not a readable alma_dag store" in message
            assert "reset" in message

    @pytest.mark.parametrize("keep", [50, 4096, 0.5])
    def test_truncated_database(self, run_dir, store, keep):
        """A store cut short is refused, not read as one with fewer nodes."""
        store.record([NodeRecord(f"n{i}", "x" * 1000) for i in range(100)])
        store.close()  # the last connection folds the WAL into the file
        database = run_dir / DATABASE
        assert not (run_dir / f"{DATABASE}-wal").exists()
        data = database.read_bytes()
        size = int(len(data) * keep) if isinstance(keep, float) else keep
        database.write_bytes(data[:size])
        for options in ({}, {"readonly": True}):
            with pytest.raises(StoreError, match="store") as info:
                Store(run_dir, **options)
            assert not isinstance(info.value, sqlite3.Error)
            assert str(database) in str(info.value)
            assert "reset" in str(info.value)
        assert database.stat().st_size == size  # nothing written into it

    def test_other_layout_version(self, run_dir, store):
        store.close()
        with sqlite3.connect(run_dir / DATABASE) as db:
            db.execute("UPDATE meta SET value = '99' WHERE key = 'schema'")
        db.close()
        for options in ({}, {"readonly": True}):
            with pytest.raises(StoreError) as info:
                Store(run_dir, **options)
            message = str(info.value)
            assert "layout version 99" in message
            assert f"reads version {SCHEMA_VERSION}" in message


class TestRunLock:
    def test_second_lock_in_the_same_process_is_refused(self, run_dir, store):
        with store.locked():
            for other in (store, Store(run_dir)):
                with pytest.raises(LockedError) as info:
                    with other.locked():
                        pytest.fail("two holders of one run lock")
                error = info.value
                assert error.pid == os.getpid()
                assert error.host == socket.gethostname()
                assert str(os.getpid()) in str(error)
                assert socket.gethostname() in str(error)
                assert isinstance(error, StoreError)
            assert store.holder()["pid"] == os.getpid()
        assert store.holder() is None
        with store.locked():  # free again
            pass

    def test_lock_of_a_killed_process_does_not_block(self, run_dir, store, spawn):
        marker = run_dir.parent / "locked"
        code = """
            import time
            from alma_dag.store import Store
            directory, marker = sys.argv[1:]
            with Store(directory).locked():
                mark(marker)
                time.sleep(60)
        """
        proc = spawn(code, run_dir, marker)
        wait_for_marker(marker, proc)
        with pytest.raises(LockedError) as info:
            with store.locked():
                pytest.fail("the lock of a live process was taken")
        assert info.value.pid == proc.pid
        assert f"process {proc.pid} on host {socket.gethostname()}" in str(info.value)
        assert store.holder()["pid"] == proc.pid
        kill(proc)
        # Its record is left behind, but names a dead process.
        assert (run_dir / "owner.json").exists()
        assert store.holder() is None
        with store.locked():
            assert store.holder()["pid"] == os.getpid()

    def test_lock_needs_no_readable_database(self, run_dir, store):
        """reset() takes the lock of a store too damaged to open."""
        store.close()
        (run_dir / DATABASE).write_bytes(b"garbage" * 100)
        with run_lock(run_dir):
            assert lock_holder(run_dir)["pid"] == os.getpid()
            with pytest.raises(LockedError, match=str(os.getpid())):
                with run_lock(run_dir):
                    pytest.fail("two holders of one run lock")
        assert lock_holder(run_dir) is None

    def test_lock_refuses_a_dispatcher(self, run_dir, store):
        ran = []
        g = TaskGraph()
        g.add("a", ran.append, (1,))
        dispatcher = Dispatcher(g, backend="inline", store=Store(run_dir))
        with store.locked():
            with pytest.raises(LockedError, match=str(os.getpid())):
                dispatcher.start()
        assert ran == []
        assert dispatcher.state.value == "pending"
        dispatcher.run()  # the lock is free again
        assert ran == [1]


class TestDispatcherWithStore:
    def test_second_dispatcher_runs_only_what_is_not_done(self, run_dir):
        """
        a -> b      c fails in the first run; the second dispatcher, on the
        c           same store, runs c alone and loads a and b from it.
        """
        calls = []
        broken = [True]

        def graph():
            g = TaskGraph()
            a = g.add("a", lambda: calls.append("a") or 1)
            g.add("b", lambda x: calls.append("b") or x + 1, (a,))

            def c():
                calls.append("c")
                if broken[0]:
                    raise ValueError("c is broken")
                return "c"

            g.add("c", c)
            return g

        first = Dispatcher(graph(), backend="inline", store=Store(run_dir))
        assert first.run().value == "failed"
        first.store.close()
        with Store(run_dir, create=False) as store:
            assert store.done_ids() == {"a", "b"}
            assert store.failures() == {"c": "ValueError: c is broken"}
            assert set(store.durations()) == {"a", "b"}
        broken[0] = False
        second = Dispatcher(graph(), backend="inline", store=Store(run_dir))
        assert second.run().value == "finished"
        assert sorted(calls) == ["a", "b", "c", "c"]
        assert second.results == {"a": 1, "b": 2, "c": "c"}
        assert second.store.failures() == {}
        second.store.close()

    def test_dependent_receives_a_recorded_result(self, run_dir):
        """a (recorded 5) -> b: b runs with a's recorded value; a does not."""
        with Store(run_dir) as store:
            store.record([NodeRecord("a", 5)])
        g = TaskGraph()
        a = g.add("a", lambda: -1)
        g.add("b", lambda x: x * 2, (a,))
        d = Dispatcher(g, backend="inline", store=Store(run_dir))
        d.run()
        assert d.results == {"a": 5, "b": 10}
        assert d.store.result("b") == 10
        d.store.close()

    def test_failed_dependency_is_recorded_failed(self, run_dir):
        g = TaskGraph()
        a = g.add("a", lambda: 1 / 0)
        g.add("b", abs, (a,))
        d = Dispatcher(g, backend="inline", store=Store(run_dir))
        d.run()
        assert set(d.store.failures()) == {"a", "b"}
        assert isinstance(d.store.result("b").exception, DependencyError)
        d.store.close()

    def test_node_ids_must_be_strings(self, run_dir, store):
        g = TaskGraph()
        g.add(1, abs, (-1,))
        with pytest.raises(DefinitionError, match="node ids must be strings"):
            Dispatcher(g, backend="inline", store=store)
        assert store.counts() == {NodeStatus.DONE: 0, NodeStatus.FAILED: 0}
