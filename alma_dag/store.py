"""The checkpoint store: one SQLite database per run directory.

In: finished nodes from the dispatcher (results, errors, when they ran),
states saved by tasks with ``save(text)``, from any process. Out: which
nodes are done, their results, measured durations and last saved states,
for a later run to continue where this one stopped.

A run directory holds::

    store.sqlite   nodes, states and meta tables (WAL mode)
    lock           held (filelock) while a dispatcher runs the directory
    owner.json     the holder's pid and host, for the message refusing
                   a second run

Invariants:

- A node is done exactly when its row with status DONE is committed; the
  dispatcher commits each batch of finished nodes in one transaction
  before it hands out their dependents (a backend that chains may start
  them sooner; they are still recorded after). ``synchronous=FULL``: a commit
  that returned survives a crash of the process or of the machine.
- ``save(text)`` commits before it returns, from whichever process calls
  it; the next attempt of that node receives the text as ``state``. A
  worker that shares the store's disk writes the file itself; one that
  may not (a dask worker) sends the state along a ``StateRoute`` to the
  dispatcher's process, which commits it and answers.
- Results are pickles, and loading a pickle can run code: the directory
  is created private to its owner, and a directory or database that
  another user owns, or that group or others may write, is refused.
"""

from __future__ import annotations

import contextlib
import contextvars
import enum
import json
import os
import pickle
import socket
import sqlite3
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import cloudpickle
import filelock

from .errors import Err, StoreError

__all__ = [
    "LockedError",
    "NodeRecord",
    "NodeStatus",
    "StateRoute",
    "Store",
    "check_state",
    "load_state",
    "lock_holder",
    "routed_states",
    "run_lock",
    "save_state",
    "state_route",
]

#: Version of the database layout; a store of another version is refused.
SCHEMA_VERSION = 1

DATABASE = "store.sqlite"

#: Seconds a writer waits for another process's transaction to finish.
BUSY_TIMEOUT = 60.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (
    id TEXT PRIMARY KEY,
    status INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 1,
    result BLOB,
    error TEXT,
    started REAL,
    finished REAL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS states (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    saved REAL NOT NULL
);
"""


_SAVE_STATE = "INSERT OR REPLACE INTO states VALUES (?, ?, ?)"


def _lay_out(db: sqlite3.Connection) -> None:
    """Create the tables and record the layout version, where missing."""
    db.executescript("BEGIN;" + _SCHEMA + "COMMIT;")
    db.execute(
        "INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),)
    )


class NodeStatus(enum.IntEnum):
    """A node's status as stored (by value) in the ``nodes`` table."""

    #: Finished with a result.
    DONE = 1
    #: Finished with an ``Err``; run again by the next start.
    FAILED = 2


class LockedError(StoreError):
    """Another dispatcher is running this run directory; ``pid`` and
    ``host`` name it."""

    def __init__(self, message: str, *, pid: Any = None, host: Any = None) -> None:
        super().__init__(message)
        self.pid = pid
        self.host = host


class NodeRecord(NamedTuple):
    """One finished node, as the dispatcher hands it to the store (a named
    tuple: the dispatcher makes one per finished node)."""

    #: The node id.
    id: str
    #: The result: a value, or an ``Err``.
    result: Any
    #: Attempts made, this one included.
    attempts: int = 1
    #: Wall-clock start, or None when the task did not run.
    started: float | None = None
    #: Wall-clock finish, or None when the task did not run.
    finished: float | None = None


def _dump(value: Any) -> bytes:
    try:
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # lambdas, local classes: cloudpickle ships them
        return cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def _first_line(err: Err) -> str:
    text = f"{err.err_type.__name__}: {err}"
    return text.splitlines()[0] if text else err.err_type.__name__


#: Why a store must be private, in the messages refusing one.
PICKLES = "results are pickles, and loading a pickle can run code"


def decode_text(data: bytes) -> str:
    """How every connection reads TEXT: bytes that are not UTF-8 -- a
    damaged file -- are a database error, which callers turn into a
    ``StoreError``, instead of a raw ``UnicodeDecodeError``."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise sqlite3.DatabaseError(
            f"damaged text: not UTF-8 ({exc.reason} at byte {exc.start})"
        ) from None


def check_private(path: Path, why: str = PICKLES) -> None:
    """Refuse ``path`` if another user owns it or group/others may write it;
    ``why`` ends the message.

    Raises
    ------
    StoreError
        Naming the path and what is wrong. Not checked where the operating
        system has no owners and modes (Windows).
    """
    if sys.platform == "win32":
        return
    info = path.stat()
    if info.st_uid != os.getuid():
        raise StoreError(
            f"{path}: refusing a store owned by another user (uid {info.st_uid}); {why}"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise StoreError(
            f"{path}: refusing a store that group or others may write "
            f"(mode {stat.filemode(info.st_mode)}); {why}. If it is yours: "
            f"chmod go-w {path}"
        )


class Store:
    """The SQLite checkpoint store of one run directory.

    Parameters
    ----------
    directory : path
        The run directory.
    create : bool
        Create the directory (private to its owner) and the database when
        missing. Otherwise a missing store is a ``StoreError``.
    readonly : bool
        Open for reading only, beside a dispatcher that may be writing.

    Raises
    ------
    StoreError
        The directory or database cannot be created or read, is not a
        store, has another layout version, or could have been written by
        someone else.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> directory = pathlib.Path(tempfile.mkdtemp()) / "run.alma"
    >>> with Store(directory) as store:
    ...     store.record([NodeRecord("a", 42, started=1.0, finished=3.5)])
    ...     store.done_ids(), store.result("a"), store.durations()
    ({'a'}, 42, {'a': 2.5})
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        create: bool = True,
        readonly: bool = False,
    ) -> None:
        self.directory = Path(directory)
        self.path = self.directory / DATABASE
        # True once this call put a new store in place: a failure then
        # removes it, never a store a racing process made meanwhile.
        made = False
        try:
            if (
                create
                and not readonly
                # an empty one: left by an older alma_dag killed after mkdir
                and (not self.directory.exists() or _is_empty(self.directory))
            ):
                made = self._create()
            elif not self.path.exists():
                raise StoreError(f"{self.directory}: no alma_dag store here")
            check_private(self.directory)
            if self.path.exists():
                check_private(self.path)
            self._db = self._connect(readonly)
            if not readonly:  # also completes a creation killed midway
                self._initialize()
            self._check_version()
        except BaseException:
            if getattr(self, "_db", None) is not None:
                self._db.close()
            if made:
                _remove_tree(self.directory)
            raise
        # _lock guards _db: the dispatcher thread writes, others may read.
        self._lock = threading.Lock()

    def _create(self) -> bool:
        """Make the run directory whole or not at all, so no reader (a
        status, another process's load) finds a store half made, and no
        crash leaves one: the database is laid out in a private temporary
        directory beside it, which is then renamed into place. Returns
        False when another process put its store there first."""
        parent = self.directory.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            temp = Path(tempfile.mkdtemp(prefix=f".{self.directory.name}-", dir=parent))
        except OSError as exc:
            raise StoreError(
                f"{self.directory}: cannot create the store: {exc}"
            ) from exc
        try:
            os.chmod(temp, 0o700)  # whatever the umask
            db = sqlite3.connect(temp / DATABASE, isolation_level=None)
            db.text_factory = decode_text
            try:
                os.chmod(temp / DATABASE, 0o600)
                db.execute("PRAGMA journal_mode=WAL")
                _lay_out(db)
            finally:
                db.close()  # the last connection: the WAL is folded in
            try:
                os.rename(temp, self.directory)  # replaces an empty one
            except OSError:
                if not (self.directory / DATABASE).exists():
                    raise
                _remove_tree(temp)
                return False
            _fsync_directory(parent)
            return True
        except BaseException as exc:
            _remove_tree(temp)
            if isinstance(exc, (OSError, sqlite3.Error)):
                raise StoreError(
                    f"{self.directory}: cannot create the store: {exc}"
                ) from exc
            raise

    def _connect(self, readonly: bool) -> sqlite3.Connection:
        uri = f"{self.path.resolve().as_uri()}?mode={'ro' if readonly else 'rwc'}"
        db = None
        try:
            db = sqlite3.connect(
                uri,
                uri=True,
                timeout=BUSY_TIMEOUT,
                check_same_thread=False,
                isolation_level=None,
            )
            db.text_factory = decode_text
            if not readonly:
                db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error as exc:
            if db is not None:
                db.close()
            raise StoreError(
                f"{self.path}: not a readable alma_dag store ({exc}); "
                "reset the experiment to start afresh"
            ) from exc
        if not readonly:
            os.chmod(self.path, 0o600)
        return db

    def _initialize(self) -> None:
        try:
            _lay_out(self._db)
        except sqlite3.Error as exc:
            raise StoreError(
                f"{self.path}: cannot initialize the store: {exc}"
            ) from exc

    def _check_version(self) -> None:
        try:
            row = self._db.execute(
                "SELECT value FROM meta WHERE key = 'schema'"
            ).fetchone()
        except sqlite3.Error as exc:
            raise StoreError(
                f"{self.path}: not an alma_dag store ({exc}); reset it to start afresh"
            ) from exc
        if row is None or row[0] != str(SCHEMA_VERSION):
            found = "none" if row is None else row[0]
            raise StoreError(
                f"{self.path}: store layout version {found}, this alma_dag "
                f"reads version {SCHEMA_VERSION}"
            )

    # -- writing -------------------------------------------------------------

    def record(self, records: Iterable[NodeRecord]) -> None:
        """Commit finished nodes, all in one transaction.

        Raises
        ------
        StoreError
            The transaction failed (for example, the disk is full); nothing
            of it is recorded.
        """
        done, failed = int(NodeStatus.DONE), int(NodeStatus.FAILED)
        rows = [
            (node, failed, attempts, _dump(result), _first_line(result), start, end)
            if isinstance(result, Err)
            else (node, done, attempts, _dump(result), None, start, end)
            for node, result, attempts, start, end in records
        ]
        self._write("INSERT OR REPLACE INTO nodes VALUES (?, ?, ?, ?, ?, ?, ?)", rows)

    def forget(self, nodes: Iterable[str]) -> None:
        """Forget what is recorded of ``nodes``, so they run again."""
        self._write("DELETE FROM nodes WHERE id = ?", [(node,) for node in nodes])

    def set_meta(self, key: str, value: str) -> None:
        """Record a piece of run metadata."""
        self._write("INSERT OR REPLACE INTO meta VALUES (?, ?)", [(key, value)])

    def save_state(self, node: str, state: str) -> None:
        """Commit the state ``node`` saved."""
        self._write(_SAVE_STATE, [(node, state, time.time())])

    def _write(self, sql: str, rows: list[tuple]) -> None:
        with self._transaction("record") as db:
            db.executemany(sql, rows)

    @contextlib.contextmanager
    def _transaction(self, what: str) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed when the block ends, rolled back
        whole if anything fails or interrupts it; a SQLite error becomes a
        ``StoreError`` saying what could not be done."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                    self._db.execute("COMMIT")
                except BaseException:
                    self._rollback()
                    raise
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: cannot {what}: {exc}") from exc

    def _rollback(self) -> None:
        # SQLite may have rolled back already (a full disk, an I/O error):
        # roll back only what is still open, and never let an error of the
        # ROLLBACK hide the one that made it necessary.
        if self._db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")

    def clear(self) -> None:
        """Forget every node, state and piece of metadata but the layout."""
        with self._transaction("clear") as db:
            for table in ("nodes", "states"):
                db.execute(f"DELETE FROM {table}")
            db.execute("DELETE FROM meta WHERE key != 'schema'")

    # -- reading -------------------------------------------------------------

    def _read(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: cannot read: {exc}") from exc

    def done_ids(self) -> set[str]:
        """Ids of the nodes recorded done."""
        rows = self._read("SELECT id FROM nodes WHERE status = ?", (NodeStatus.DONE,))
        return {row[0] for row in rows}

    def failures(self) -> dict[str, str]:
        """First error line of each node recorded failed, by id."""
        rows = self._read(
            "SELECT id, error FROM nodes WHERE status = ?", (NodeStatus.FAILED,)
        )
        return dict(rows)

    def counts(self) -> dict[NodeStatus, int]:
        """How many nodes are recorded with each status."""
        rows = self._read("SELECT status, count(*) FROM nodes GROUP BY status")
        counts = dict.fromkeys(NodeStatus, 0)
        counts.update({NodeStatus(status): n for status, n in rows})
        return counts

    def result(self, node: str) -> Any:
        """The recorded result of ``node`` (an ``Err`` if it failed).

        Raises
        ------
        KeyError
            Nothing is recorded for ``node``.
        StoreError
            The result cannot be unpickled (for example, its class is gone).
        """
        rows = self._read("SELECT result FROM nodes WHERE id = ?", (node,))
        if not rows:
            raise KeyError(node)
        try:
            return pickle.loads(rows[0][0])
        except Exception as exc:
            raise StoreError(
                f"{self.path}: the result of {node!r} cannot be loaded: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    def durations(self) -> dict[str, float]:
        """Measured seconds of each node that ran to a result."""
        rows = self._read(
            "SELECT id, finished - started FROM nodes "
            "WHERE status = ? AND started IS NOT NULL",
            (NodeStatus.DONE,),
        )
        return dict(rows)

    def timings(self) -> dict[str, tuple[float, float]]:
        """``(started, finished)`` wall-clock seconds of each node recorded
        with times, done or failed."""
        rows = self._read(
            "SELECT id, started, finished FROM nodes "
            "WHERE started IS NOT NULL AND finished IS NOT NULL"
        )
        return {node: (started, finished) for node, started, finished in rows}

    def state(self, node: str) -> str:
        """The last state ``node`` saved, or "" if it saved none."""
        rows = self._read("SELECT state FROM states WHERE id = ?", (node,))
        return rows[0][0] if rows else ""

    def meta(self, key: str, default: str | None = None) -> str | None:
        """A piece of run metadata."""
        rows = self._read("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else default

    # -- the run lock --------------------------------------------------------

    def locked(self) -> contextlib.AbstractContextManager[None]:
        """Hold the run directory's lock; refuse if another holds it.

        A lock left by a dead process is free: the operating system
        releases it with the process.

        Raises
        ------
        LockedError
            Another dispatcher, in this process or another, holds it.
        """
        return run_lock(self.directory)

    def holder(self) -> dict[str, Any] | None:
        """Who holds the run lock (pid, host, since), if anyone says so.

        None also when the record names a process of this host that is
        gone: a process killed (or a machine rebooted) mid-run leaves its
        record behind, but not its lock.
        """
        return lock_holder(self.directory)

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Store {self.directory}>"


# -- the run lock: needs the directory, not the database ------------------------
# (so reset() can remove a store too damaged to open)


@contextlib.contextmanager
def run_lock(directory: str | os.PathLike) -> Iterator[None]:
    """Hold the lock of run directory ``directory``, as ``Store.locked``
    does, without opening its database.

    Raises
    ------
    LockedError
        Another dispatcher, in this process or another, holds it.
    """
    directory = Path(directory)
    lock = filelock.FileLock(directory / "lock", is_singleton=False, thread_local=False)
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        holder = lock_holder(directory) or {}
        pid, host = holder.get("pid"), holder.get("host")
        raise LockedError(
            f"{directory}: already being run by process {pid} on host "
            f"{host}; stop it first, or wait for it to end",
            pid=pid,
            host=host,
        ) from None
    owner = directory / "owner.json"
    try:
        owner.write_text(
            json.dumps(
                {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
            )
        )
        yield
    finally:
        with contextlib.suppress(OSError):
            owner.unlink()
        lock.release()


def lock_holder(directory: str | os.PathLike) -> dict[str, Any] | None:
    """Who holds the lock of run directory ``directory`` (pid, host, since),
    as ``Store.holder`` tells."""
    try:
        holder = json.loads((Path(directory) / "owner.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(holder, dict):
        return None
    if holder.get("host") == socket.gethostname() and not _is_alive(
        holder.get("pid"), holder.get("since")
    ):
        return None
    return holder


def _is_alive(pid: Any, since: Any) -> bool:
    """Whether process ``pid`` of this host exists and began before
    ``since`` (a later one reuses the pid of a dead holder)."""
    import psutil  # only status needs it: keep `import alma_dag` fast

    try:
        began = psutil.Process(int(pid)).create_time()
    except (psutil.Error, TypeError, ValueError):
        return False
    # create_time() is rounded; a second of slack keeps the holder alive.
    return not isinstance(since, (int, float)) or began <= since + 1.0


def _is_empty(directory: Path) -> bool:
    try:
        return not any(directory.iterdir())
    except OSError:  # not a directory
        return False


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` survive a crash of the machine."""
    if sys.platform == "win32":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_tree(directory: Path) -> None:
    for child in sorted(directory.rglob("*"), reverse=True):
        with contextlib.suppress(OSError):
            child.rmdir() if child.is_dir() else child.unlink()
    with contextlib.suppress(OSError):
        directory.rmdir()


# -- saving state from a worker process ----------------------------------------

# _writers_lock guards _writers: per-process connections used by save(),
# by path, each with the (device, inode) of the file it opened.
_writers_lock = threading.Lock()
_writers: dict[str, tuple[tuple[int, int], sqlite3.Connection]] = {}


def _writer(database: str) -> sqlite3.Connection:
    # Invariant: a cached connection is to the file now at ``database``. A
    # reset removes the store and the next run makes a new one at the same
    # path; a connection kept from before would read and write the removed
    # file, handing that run the states of the forgotten one.
    try:
        info = os.stat(database)
    except OSError as exc:
        raise StoreError(f"{database}: cannot open the store: {exc}") from exc
    identity = (info.st_dev, info.st_ino)
    with _writers_lock:
        cached = _writers.get(database)
        if cached is not None:
            if cached[0] == identity:
                return cached[1]
            del _writers[database]
            cached[1].close()
        try:
            db = sqlite3.connect(
                database,
                timeout=BUSY_TIMEOUT,
                isolation_level=None,
                check_same_thread=False,
            )
            db.text_factory = decode_text
            db.execute("PRAGMA synchronous=FULL")
        except sqlite3.Error as exc:
            message = f"{database}: cannot open the store: {exc}"
            raise StoreError(message) from exc
        _writers[database] = (identity, db)
        return db


def load_state(database: str, node: str) -> str:
    """The last state ``node`` saved in the store at ``database``, or "";
    what a task receives as ``state``, read in the worker when it starts."""
    try:
        row = (
            _writer(database)
            .execute("SELECT state FROM states WHERE id = ?", (node,))
            .fetchone()
        )
    except sqlite3.Error as exc:
        message = f"{database}: cannot read the state of {node!r}: {exc}"
        raise StoreError(message) from exc
    return row[0] if row else ""


def check_state(state: Any) -> str:
    """``state`` if it can be saved, else a ``TypeError`` saying why."""
    if not isinstance(state, str):
        raise TypeError(
            f"save() takes a string, got {type(state).__name__}; "
            "encode the state first (for example with json.dumps)"
        )
    return state


def save_state(database: str, node: str, state: str) -> None:
    """Commit ``state`` for ``node`` in the store at ``database``, from any
    process that shares its disk.

    Raises
    ------
    TypeError
        ``state`` is not a string.
    StoreError
        The store cannot be written.
    """
    check_state(state)
    db = _writer(database)
    with _writers_lock:  # one statement at a time on the shared connection
        try:
            db.execute(_SAVE_STATE, (node, state, time.time()))
        except sqlite3.Error as exc:
            message = f"{database}: cannot save the state of {node!r}: {exc}"
            raise StoreError(message) from exc


# -- routing states from workers without the store's disk -----------------------


class StateRoute(Protocol):
    """How a worker reads and saves states: the store's file itself (the
    default), or a channel to the dispatcher's process, which answers from
    its own ``Store`` (the dask backend's)."""

    def load(self, database: str, node: str) -> str:
        """The last state ``node`` saved in the store at ``database``."""

    def save(self, database: str, node: str, state: str) -> None:
        """Commit ``state`` for ``node`` before returning."""


class _File:
    """The default route: the worker shares the store's disk."""

    load = staticmethod(load_state)
    save = staticmethod(save_state)


_FILE = _File()

#: The route of the batch running in this thread (None: the file itself).
_route: contextvars.ContextVar[StateRoute | None] = contextvars.ContextVar(
    "alma_dag_state_route", default=None
)


def state_route() -> StateRoute:
    """The route states of the task running in this thread take."""
    return _route.get() or _FILE


@contextlib.contextmanager
def routed_states(route: StateRoute | None) -> Iterator[None]:
    """Within the block, tasks of this thread read and save states through
    ``route`` (None: the store's file itself)."""
    token = _route.set(route)
    try:
        yield
    finally:
        _route.reset(token)
