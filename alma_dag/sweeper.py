"""Hand out the combinations of a sweep to many workers, each exactly once,
and continue after a stop or a crash: ``ParamSweeper``, execo_engine's, on
SQLite.

In: the elements to iterate on (the combinations ``sweep`` makes, or any
values built of str, int, float, bool, None, bytes, tuples, lists, sets,
frozensets, dicts and ``HashableDict``s) and a persistence directory. Out:
the next element to work on, for every thread, process or host that asks,
and which elements are done, in progress, skipped or remaining.

States
------
Each element is in exactly one state at every moment::

                get_next                  done
        todo ─────────────► inprogress ──────────► done (final)
        ▲  ▲                   │  │
        │  └───────────────────┘  │ skip
        │   cancel; reset(        ▼
        │   reset_inprogress);  skipped
        │   its holder is gone    │
        └─────────────────────────┘
               cancel; reset

``done`` also takes a todo or skipped element straight to done, and ``skip``
a todo one to skipped. ``_TRANSITIONS`` is this drawing as a table, and
``ParamSweeper._transition`` the one place that applies it.

=========== ======== ==========================================
state       stored   what the other instances see
=========== ======== ==========================================
todo        no       todo
inprogress  yes      in progress, with the claim's holder
done        yes      done
skipped     no       todo: a skip is this instance's own wish
=========== ======== ==========================================

Persistence
-----------
The directory (created private to its owner) holds ``sweeper.sqlite``, in
which every element is a canonical JSON text with type tags: reading it
never runs code, unlike execo's pickles. Its tables:

- ``log``: what happened to the elements, one row per change, numbered
  in the order of the changes (``seq``): an element claimed (the row names
  the claim's *holder*), done, or todo again once its claim ended. An
  element's state is its last row's. Rows are only ever appended, about
  two per element handed out, so a change writes one page, and an
  instance reads only the rows after the last it saw (``update``);
  loading reads them all (``full_update``);
- ``sweeps``: the elements, in order, when saved with ``save_sweeps=True``,
  so that ``ParamSweeper(directory)`` finds them again;
- ``meta``: the format, its version and the journal mode.

Concurrency
-----------
One instance may be shared by threads: a lock serialises its calls. Every
instance, in this process or another, talks to the others only through the
database: each call that changes a state is one write transaction (``BEGIN
IMMEDIATE``) that first reads what the others changed, then decides, then
writes, so two instances never hand out the same element. A cancel, skip
or reset that ends a claim is a write too, so the others see the element
todo again.

The database is in WAL mode, the fastest, whose readers never wait for a
writer, but whose shared memory works only between processes of one host.
A directory that instances on several hosts share needs the rollback
journal, which works wherever the filesystem's locks do (NFS with working
``lockd``, for example): ``multi_host=True`` chooses it when the database
is created, and by default it is chosen when the directory is on a network
filesystem. SQLite's own locks serve every platform, so there is no
separate lock file to keep.

Crashes
-------
A call returns only after its transaction committed, and a committed
transaction survives the death of its process (``synchronous=NORMAL``):
a killed process loses at most the change it was making. ``durable=True``
(``synchronous=FULL``) makes each commit also survive a power loss or an
operating system crash, at the cost of a disk flush per call. An
interrupted transaction leaves nothing behind; loading never writes; a file
that is not a sweeper database, or is damaged, is refused, never replaced.

Reclaiming
----------
Each claim names its holder: host, process id, process start time and
instance. An instance treats the claims of a process of its own host that
is gone (or whose id now belongs to a later process) as void: their
elements are todo again and are handed out anew. It looks for such
processes when it loads, when it runs out of todo elements, and otherwise
at most once per ``PROBE_INTERVAL`` seconds. Whether a process of another
host is alive cannot be known from here: its claims hold until ``cancel``
or ``reset(reset_inprogress=True)``.

Where execo_engine's differs
----------------------------
- Elements are handed out in the order given (execo's sets have none), and
  a cancelled element comes back at its place.
- States are disjoint, and ``done`` is final: execo could list an element
  both done and remaining after a ``cancel``, or both skipped and done.
- A cancel, skip or reset that ends a claim is seen by every instance;
  execo's other instances never handed such an element out again.
- ``sweeps=[]`` is an empty sweep; execo took it for "load the saved one".
- ``get_sweeps`` returns a list, in order; the state getters return sets,
  as execo's do; ``filtr`` receives the remaining elements as a list.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import json
import math
import operator
import os
import reprlib
import socket
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from .errors import InvalidStateError, StoreError
from .store import BUSY_TIMEOUT, check_private, decode_text
from .sweep import HashableDict

__all__ = ["ParamSweeper"]

#: Why a sweeper's directory must be private.
_PRIVATE = "whoever can write it decides which combinations run"

#: The database's name in the persistence directory.
DATABASE = "sweeper.sqlite"

#: What ``meta`` says a sweeper database is, and the layout version read here.
FORMAT = "alma_dag.ParamSweeper"
FORMAT_VERSION = 1

#: Seconds between two looks for claims whose process is gone. Each look
#: costs a system call per other live process holding a claim; a second
#: is short beside the experiments a sweep runs, and long beside a call.
PROBE_INTERVAL = 1.0

#: Filesystem types (as psutil names them) whose files other hosts may
#: share: a database on one of them is created with the rollback journal.
NETWORK_FILESYSTEMS = frozenset(
    {
        "9p",
        "afs",
        "beegfs",
        "ceph",
        "cifs",
        "fuse.ceph",
        "fuse.glusterfs",
        "fuse.sshfs",
        "gfs2",
        "glusterfs",
        "gpfs",
        "lustre",
        "ncpfs",
        "nfs",
        "nfs4",
        "ocfs2",
        "smb3",
        "smbfs",
    }
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sweeps (
    pos INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS log (
    seq INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    state INTEGER NOT NULL,
    holder TEXT,
    since REAL NOT NULL
);
"""

_APPEND = "INSERT INTO log (seq, key, state, holder, since) VALUES (?, ?, ?, ?, ?)"
_CHANGES = "SELECT seq, key, state, holder FROM log WHERE seq > ? ORDER BY seq"


class _State(enum.IntEnum):
    """An element's state; ``log.state`` stores the first three by value."""

    #: May be handed out. Stored when a claim ends, so the others see it.
    TODO = 0
    #: Finished for good: no operation takes an element out of it.
    DONE = 1
    #: Handed out by get_next and not finished; the row names the holder.
    INPROGRESS = 2
    #: Set aside by this instance until cancel() or reset(); never stored.
    SKIPPED = 3


_TODO, _DONE, _INPROGRESS, _SKIPPED = _State

#: Operation -> {state before: state after}. A state not listed is left as
#: it is; an operation that leaves the element todo or skipped ends the
#: element's claim, whoever holds it.
_TRANSITIONS: dict[str, dict[_State, _State]] = {
    "get_next": {_TODO: _INPROGRESS},
    "done": {_TODO: _DONE, _INPROGRESS: _DONE, _SKIPPED: _DONE},
    "skip": {_TODO: _SKIPPED, _INPROGRESS: _SKIPPED},
    "cancel": {_INPROGRESS: _TODO, _SKIPPED: _TODO},
}


class ParamSweeper:
    """Iterate over elements from many threads, processes and hosts, each
    element handed out once, with done and in-progress states kept on disk.

    Parameters
    ----------
    persistence_dir : path
        The directory of the state, created (private to its owner) if
        missing. Every instance on the same directory shares the states.
    sweeps : iterable, optional
        The elements to iterate on, in order (repeats are dropped), usually
        ``sweep(parameters)``. None loads those saved in the directory.
    save_sweeps : bool
        Save ``sweeps`` in the directory, for ``ParamSweeper(directory)``
        to find them.
    name : str, optional
        A name for messages; the directory's name by default.
    durable : bool
        Flush each change to the disk before returning, so that it survives
        a power loss, not only the death of the process. Slower.
    multi_host : bool, optional
        Whether instances on several hosts will share the directory; decided
        when the database is created, and kept. None: when the directory is
        on a network filesystem (see ``NETWORK_FILESYSTEMS``).

    Raises
    ------
    TypeError
        An element holds a value that cannot be stored (not one of the types
        above, or unhashable where it must be hashable); raised before
        anything is created or written, naming the type.
    StoreError
        The directory or database cannot be created or read, is not a
        sweeper database, or is damaged; or ``sweeps`` is None and none
        were saved.

    See Also
    --------
    sweep : the combinations of parameters to iterate on.
    sweep_stats : per factor and level, how far a sweep has got, from
        ``stats()``.

    Notes
    -----
    The module docstring describes the states, the persistence, the
    concurrency, crashes and how the claims of a dead process are
    reclaimed.

    Examples
    --------
    >>> import tempfile
    >>> from alma_dag import sweep
    >>> directory = tempfile.mkdtemp() + "/sweeps"
    >>> combinations = sweep({"n": [1, 2], "solver": ["heft", "random"]})
    >>> with ParamSweeper(directory, combinations) as sweeper:
    ...     while (combination := sweeper.get_next()) is not None:
    ...         if combination["solver"] == "random" and combination["n"] == 2:
    ...             sweeper.skip(combination)  # not now
    ...         else:
    ...             sweeper.done(combination)
    ...     print(sweeper)
    <ParamSweeper 'sweeps': 4 total, 3 done, 1 skipped, 0 in progress, 0 remaining>

    A later run continues where this one stopped, skipped elements included:

    >>> with ParamSweeper(directory, combinations) as sweeper:
    ...     sweeper.get_remaining()
    {{'n': 2, 'solver': 'random'}}
    """

    def __init__(
        self,
        persistence_dir: str | os.PathLike,
        sweeps: Iterable[Any] | None = None,
        save_sweeps: bool = False,
        name: str | None = None,
        *,
        durable: bool = False,
        multi_host: bool | None = None,
    ) -> None:
        #: The directory of the state.
        self.persistence_dir = Path(persistence_dir)
        #: The name shown in messages.
        self.name = name or self.persistence_dir.name
        self._path = self.persistence_dir / DATABASE
        given = None if sweeps is None else _encode_all(sweeps, save_sweeps)
        if given is None and not self._path.exists():
            raise StoreError(
                f"{self.persistence_dir}: no sweeps saved here (no {DATABASE}); "
                "pass the sweeps, with save_sweeps=True to keep them for later"
            )

        # _lock guards the connection and every attribute below it: the
        # elements, the states, the cursor and the probe bookkeeping.
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None
        #: Elements by key, in the order they are handed out.
        self._elements: dict[str, Any] = {}
        #: Keys in order, and each key's index in it.
        self._order: list[str] = []
        self._pos: dict[str, int] = {}
        # Invariant: no key before _order[_cursor] is todo. Whatever makes
        # a key todo again moves the cursor back to it.
        self._cursor = 0
        #: Keys done, claimed (with their holder) and skipped here. A key
        #: is in at most one of _done and _claims; a claim or a done mark
        #: hides a skip.
        self._done: set[str] = set()
        self._claims: dict[str, str] = {}
        self._skipped: set[str] = set()
        # Invariant: every log row with seq <= _seen has been applied, and
        # inside a write transaction, after _update_locked, _seen is the
        # highest seq stored, so _seen + 1 numbers a new row after all.
        self._seen = 0
        #: Holders known to be gone (their claims are void).
        self._gone: set[str] = set()
        self._probed = -math.inf

        self._pid = os.getpid()
        self._host = socket.gethostname()
        self._process = f"{self._host}:{self._pid}:{_start_time(self._pid)!r}:"
        #: What this instance's claims are marked with.
        self.holder = self._process + os.urandom(4).hex()

        self._db = _open(self.persistence_dir, durable, multi_host)
        # Closed when the instance is collected, so no warning ever says a
        # connection was left open.
        self._finalizer = weakref.finalize(self, self._db.close)
        try:
            with self._lock:
                self._install(given, save_sweeps)
        except BaseException:
            self.close()
            raise

    # -- the elements ----------------------------------------------------------

    def set_sweeps(
        self, sweeps: Iterable[Any] | None = None, save_sweeps: bool = False
    ) -> None:
        """Change the elements to iterate on; their states are kept.

        Parameters
        ----------
        sweeps : iterable, optional
            The new elements, in order. None loads those saved in the
            directory.
        save_sweeps : bool
            Save them in the directory, replacing any saved before.

        Raises
        ------
        TypeError
            An element cannot be stored; nothing is changed.
        StoreError
            ``sweeps`` is None and none were saved, or the database fails.
        """
        given = None if sweeps is None else _encode_all(sweeps, save_sweeps)
        with self._lock:
            self._connection()
            self._install(given, save_sweeps)

    def _install(self, given: _Encoded | None, save: bool) -> None:
        if given is None:
            given = self._load_sweeps()
        elif save:
            self._save_sweeps(given)
        self._elements = given.elements
        self._order = list(given.elements)
        self._pos = {key: index for index, key in enumerate(self._order)}
        self._reload_locked()

    def _save_sweeps(self, given: _Encoded) -> None:
        digest = hashlib.sha256("\n".join(given.values).encode()).hexdigest()
        with self._writing("save the sweeps") as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'sweeps'").fetchone()
            if row is None or row[0] != digest:
                db.execute("DELETE FROM sweeps")
                db.executemany(
                    "INSERT INTO sweeps VALUES (?, ?, ?)",
                    zip(
                        range(len(given.values)),
                        given.elements,
                        given.values,
                        strict=True,
                    ),
                )
                db.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('sweeps', ?)", (digest,)
                )

    def _load_sweeps(self) -> _Encoded:
        db = self._connection()
        try:
            saved = db.execute("SELECT value FROM meta WHERE key = 'sweeps'").fetchone()
            rows = db.execute(
                "SELECT pos, key, value FROM sweeps ORDER BY pos"
            ).fetchall()
        except sqlite3.Error as exc:
            raise self._error("cannot read the saved sweeps", exc) from exc
        if saved is None:
            raise StoreError(
                f"{self._path}: no sweeps saved here; pass the sweeps, with "
                "save_sweeps=True to keep them for later"
            )
        elements = {}
        for pos, key, value in rows:
            try:
                elements[key] = _decode(value)
            except (ValueError, TypeError, RecursionError) as exc:
                raise StoreError(
                    f"{self._path}: saved element {pos} is unreadable ({exc}): "
                    f"{value[:200]!r}; the file is damaged or was not written "
                    "by a ParamSweeper"
                ) from exc
        return _Encoded(elements, [])

    def get_sweeps(self) -> list:
        """A copy of the elements iterated on, in order.

        Returns
        -------
        list
        """
        with self._lock:
            return list(self._elements.values())

    # -- handing out -----------------------------------------------------------

    def get_next(self, filtr: Callable[[list], Iterable] | None = None) -> Any:
        """Claim the next todo element and return it; None if there is none.

        The element is in progress, for every instance, until it is marked
        done, skipped or cancelled.

        Parameters
        ----------
        filtr : callable, optional
            Receives the list of todo elements, in order, and returns an
            iterable of some of them: the first is claimed. It can leave
            elements out, or change the order. Called under the instance's
            lock and the database's write lock, so keep it quick; it may be
            called twice in one call when claims of gone processes are
            found.

        Returns
        -------
        element or None

        Raises
        ------
        ValueError
            ``filtr`` returned an element that is not todo.
        StoreError
            The database cannot be read or written.
        """
        with self._lock:
            keys = self._transition("get_next", count=1, filtr=filtr)
            return self._elements[keys[0]] if keys else None

    def get_next_batch(
        self, n: int, filtr: Callable[[list], Iterable] | None = None
    ) -> list:
        """Claim up to ``n`` todo elements in one transaction and return them.

        Parameters
        ----------
        n : int
            How many elements to claim at most.
        filtr : callable, optional
            As for ``get_next``: the first ``n`` elements it returns are
            claimed.

        Returns
        -------
        list
            Fewer than ``n`` elements when fewer are todo; empty when none
            is.

        Raises
        ------
        ValueError
            ``n`` is negative, or ``filtr`` returned an element that is not
            todo.
        StoreError
            The database cannot be read or written.
        """
        count = operator.index(n)
        if count < 0:
            raise ValueError(f"get_next_batch: n must be 0 or more, got {n!r}")
        if count == 0:
            return []
        with self._lock:
            keys = self._transition("get_next", count=count, filtr=filtr)
            return [self._elements[key] for key in keys]

    # -- marking -----------------------------------------------------------------

    def done(self, combination: Any) -> None:
        """Mark an element done, for good; it is never handed out again.

        When this returns, the mark is committed: it survives the death of
        the process (and, with ``durable=True``, a power loss).

        Raises
        ------
        TypeError
            The element cannot be stored.
        StoreError
            The database cannot be written; the element is not marked.
        """
        self._transition("done", [_encode(combination)])

    def done_batch(self, combinations: Iterable[Any]) -> None:
        """Mark elements done, in one transaction; see ``done``."""
        self._transition("done", _encode_each(combinations))

    def skip(self, combination: Any) -> None:
        """Set an element aside: this instance does not hand it out again
        until ``cancel`` or ``reset``.

        Its claim ends: other instances, and later ones, see it todo. A done
        element stays done.

        Raises
        ------
        TypeError
            The element cannot be stored.
        StoreError
            The database cannot be written.
        """
        self._transition("skip", [_encode(combination)])

    def skip_batch(self, combinations: Iterable[Any]) -> None:
        """Set elements aside, in one transaction; see ``skip``."""
        self._transition("skip", _encode_each(combinations))

    def cancel(self, combination: Any) -> None:
        """Put an in-progress or skipped element back to todo, at its place.

        Its claim ends, whoever holds it, for every instance. A done element
        stays done.

        Raises
        ------
        TypeError
            The element cannot be stored.
        StoreError
            The database cannot be written.
        """
        self._transition("cancel", [_encode(combination)])

    def cancel_batch(self, combinations: Iterable[Any]) -> None:
        """Put elements back to todo, in one transaction; see ``cancel``."""
        self._transition("cancel", _encode_each(combinations))

    def reset(self, reset_inprogress: bool = False) -> None:
        """Start again from the first element: skipped elements are todo
        again. Done elements stay done.

        Parameters
        ----------
        reset_inprogress : bool
            Also end every claim, of every instance on every host: the
            way to reclaim the elements of a process of another host that
            died. Every instance sees them todo.

        Raises
        ------
        StoreError
            The database cannot be written.
        """
        with self._lock:
            if reset_inprogress:
                with self._writing("end the claims") as db:
                    now = time.time()
                    # Every claim, of gone processes and other hosts too.
                    rows = [
                        (self._seen + n, key, _TODO, None, now)
                        for n, key in enumerate(self._claims, start=1)
                    ]
                    db.executemany(_APPEND, rows)
                self._claims.clear()
                self._seen += len(rows)
            self._skipped.clear()
            self._cursor = 0

    def _transition(
        self,
        operation: str,
        keys: list[str] | None = None,
        *,
        count: int = 0,
        filtr: Callable | None = None,
    ) -> list[str]:
        """Move ``keys`` (for get_next: up to ``count`` todo keys, picked
        here) along ``_TRANSITIONS[operation]`` in one write transaction;
        return the keys."""
        table = _TRANSITIONS[operation]
        with self._lock:
            # What _writing does, spelled out: this is the hot path.
            db = self._connection()
            try:
                db.execute("BEGIN IMMEDIATE")
                self._update_locked(db)
                if keys is None:
                    keys = self._pick(count, filtr)
                rows, moves = self._rows(keys, table)
                if len(rows) == 1:
                    db.execute(_APPEND, rows[0])
                elif rows:
                    db.executemany(_APPEND, rows)
                db.execute("COMMIT")
            except BaseException as exc:
                self._rollback(db)
                if isinstance(exc, sqlite3.Error):
                    raise self._error(f"cannot {operation}", exc) from exc
                raise
            # Committed: now, and only now, this instance's view follows.
            for key, after in moves:
                self._set_state(key, after)
            self._seen += len(rows)
            return keys

    def _rows(
        self, keys: list[str], table: dict[_State, _State]
    ) -> tuple[list[tuple], list[tuple[str, _State]]]:
        """The log rows that move ``keys`` along ``table``, and the moves."""
        now = time.time()
        rows: list[tuple] = []
        moves = []
        for key in keys:
            before = self._state(key)
            after = table.get(before, before)
            moves.append((key, after))
            seq = self._seen + len(rows) + 1
            if after is _INPROGRESS:
                rows.append((seq, key, _INPROGRESS, self.holder, now))
            elif after is _DONE:
                if before is not _DONE:
                    rows.append((seq, key, _DONE, None, now))
            elif key in self._claims:  # todo or skipped: the claim ends
                rows.append((seq, key, _TODO, None, now))
        return rows, moves

    def _pick(self, count: int, filtr: Callable | None) -> list[str]:
        if filtr is not None:
            self._probe()
            return self._pick_filtered(count, filtr)
        picked = self._pick_in_order(count)
        if len(picked) < count and self._probe():
            picked = self._pick_in_order(count)
        return picked

    def _pick_in_order(self, count: int) -> list[str]:
        # The cursor passes only keys that are not todo: the picked ones
        # are todo until the transaction commits, and may stay so.
        order, is_todo = self._order, self._is_todo
        picked: list[str] = []
        index = self._cursor
        while index < len(order) and len(picked) < count:
            key = order[index]
            index += 1
            if is_todo(key):
                picked.append(key)
            elif not picked:
                self._cursor = index
        return picked

    def _pick_filtered(self, count: int, filtr: Callable) -> list[str]:
        todo = [key for key in self._order[self._cursor :] if self._is_todo(key)]
        chosen = filtr([self._elements[key] for key in todo])
        picked: list[str] = []
        for element in chosen:
            if len(picked) == count:
                break
            key = _encode(element)
            if key not in self._elements or not self._is_todo(key):
                raise ValueError(
                    f"{self.name}: filtr returned {reprlib.repr(element)}, which "
                    "is not a todo element; it must return some of the elements "
                    "it receives"
                )
            if key not in picked:
                picked.append(key)
        return picked

    # -- states ----------------------------------------------------------------

    def _state(self, key: str) -> _State:
        if key in self._done:
            return _DONE
        holder = self._claims.get(key)
        if holder is not None and holder not in self._gone:
            return _INPROGRESS
        return _SKIPPED if key in self._skipped else _TODO

    def _is_todo(self, key: str) -> bool:
        if key in self._done or key in self._skipped:
            return False
        holder = self._claims.get(key)
        return holder is None or holder in self._gone

    def _set_state(self, key: str, state: _State) -> None:
        """Make this instance's view of ``key`` ``state`` (as committed)."""
        if state is _DONE:
            self._done.add(key)
            self._claims.pop(key, None)
            self._skipped.discard(key)
        elif state is _INPROGRESS:
            self._claims[key] = self.holder
            self._skipped.discard(key)
        elif state is _SKIPPED:
            self._claims.pop(key, None)
            self._skipped.add(key)
        else:
            self._claims.pop(key, None)
            self._skipped.discard(key)
            self._back_to(key)

    def _back_to(self, key: str) -> None:
        index = self._pos.get(key)
        if index is not None and index < self._cursor:
            self._cursor = index

    def _keys_in(self, state: _State) -> list[str]:
        return [key for key in self._order if self._state(key) is state]

    def _elements_in(self, state: _State) -> set:
        with self._lock:
            self._update_locked()
            return {self._elements[key] for key in self._keys_in(state)}

    def get_remaining(self) -> set:
        """A copy of the todo elements, after reading the others' changes.

        Returns
        -------
        set
        """
        return self._elements_in(_TODO)

    def get_inprogress(self) -> set:
        """A copy of the elements in progress, in any instance, after reading
        the others' changes.

        Returns
        -------
        set
        """
        return self._elements_in(_INPROGRESS)

    def get_skipped(self) -> set:
        """A copy of the elements this instance skipped (less those done or
        claimed since).

        Returns
        -------
        set
        """
        return self._elements_in(_SKIPPED)

    def get_done(self) -> set:
        """A copy of the done elements, after reading the others' changes.

        Returns
        -------
        set
        """
        return self._elements_in(_DONE)

    def stats(self) -> dict[str, Any]:
        """Every element and the elements in each state, all at one moment.

        Returns
        -------
        dict
            ``"total"``: the list of elements, in order; ``"remaining"``,
            ``"skipped"``, ``"inprogress"``, ``"done"``: the set of elements
            in each state. What ``sweep_stats`` takes.

        Raises
        ------
        StoreError
            The database cannot be read.
        """
        with self._lock:
            self._update_locked()
            groups: dict[_State, set] = {state: set() for state in _State}
            for key, element in self._elements.items():
                groups[self._state(key)].add(element)
            return {
                "total": list(self._elements.values()),
                "remaining": groups[_TODO],
                "skipped": groups[_SKIPPED],
                "inprogress": groups[_INPROGRESS],
                "done": groups[_DONE],
            }

    # -- reading the others' changes -------------------------------------------

    def update(self) -> None:
        """Read what other instances changed since this one last looked.

        Every call that hands out or marks an element does it first; call
        it to refresh ``repr``, or to look for claims of gone processes now.

        Raises
        ------
        StoreError
            The database cannot be read.
        """
        with self._lock:
            self._connection()
            self._probed = -math.inf
            self._update_locked()

    def full_update(self) -> None:
        """Read every state again, as when loading.

        Raises
        ------
        StoreError
            The database cannot be read.
        """
        with self._lock:
            self._connection()
            self._reload_locked()

    def _update_locked(self, db: sqlite3.Connection | None = None) -> None:
        db = db or self._connection()
        try:
            rows = db.execute(_CHANGES, (self._seen,)).fetchall()
        except sqlite3.Error as exc:
            raise self._error("cannot read the changes", exc) from exc
        for seq, key, state, holder in rows:
            if state == _DONE:
                self._done.add(key)
                self._claims.pop(key, None)
                self._skipped.discard(key)
            elif state == _INPROGRESS:
                self._claims[key] = holder
            elif state == _TODO:
                if self._claims.pop(key, None) is not None:
                    self._back_to(key)
            else:
                raise self._damaged(key, state)
            self._seen = seq
        if self._claims and time.monotonic() - self._probed >= PROBE_INTERVAL:
            self._probe()

    def _reload_locked(self) -> None:
        db = self._connection()
        try:
            rows = db.execute(
                "SELECT seq, key, state, holder FROM log ORDER BY seq"
            ).fetchall()
        except sqlite3.Error as exc:
            raise self._error("cannot read the states", exc) from exc
        done: set[str] = set()
        claims: dict[str, str] = {}
        # Each key's last row, by a dict that keeps the last value it is given.
        for _, key, state, holder in {row[1]: row for row in rows}.values():
            if state == _DONE:
                done.add(key)
            elif state == _INPROGRESS:
                claims[key] = holder
            elif state != _TODO:
                raise self._damaged(key, state)
        self._done, self._claims = done, claims
        self._seen = rows[-1][0] if rows else 0
        self._skipped -= done
        self._cursor = 0
        self._probe()

    def _probe(self) -> bool:
        """Find the holders of claims that are processes of this host that
        are gone; True if any was found now."""
        self._probed = time.monotonic()
        found = False
        for holder in set(self._claims.values()) - self._gone:
            if holder.startswith(self._process):
                continue
            parsed = _parse_holder(holder)
            if parsed is None:  # not ours to judge: it holds, as another host's
                continue
            host, pid, started = parsed
            if host == self._host and not _is_running(pid, started):
                self._gone.add(holder)
                found = True
        if found:
            self._cursor = 0
        return found

    # -- the database ------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise InvalidStateError(f"ParamSweeper {self.name!r} is closed")
        if os.getpid() != self._pid:
            raise InvalidStateError(
                f"ParamSweeper {self.name!r} was created in process {self._pid}; "
                "create one in each process, on the same directory"
            )
        return self._db

    @contextlib.contextmanager
    def _writing(self, what: str) -> Iterator[sqlite3.Connection]:
        """One write transaction that starts by reading the others' changes;
        rolled back if anything fails or interrupts it."""
        db = self._connection()
        try:
            db.execute("BEGIN IMMEDIATE")
            self._update_locked(db)
            yield db
            db.execute("COMMIT")
        except BaseException as exc:
            self._rollback(db)
            if isinstance(exc, sqlite3.Error):
                raise self._error(f"cannot {what}", exc) from exc
            raise

    @staticmethod
    def _rollback(db: sqlite3.Connection) -> None:
        # Only if one is open: an interrupt may come once COMMIT returned.
        if db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")

    def _error(self, what: str, exc: sqlite3.Error) -> StoreError:
        hint = ""
        if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
            hint = f"; another process held it for over {BUSY_TIMEOUT:g} s"
        elif isinstance(exc, sqlite3.DatabaseError) and not isinstance(
            exc, sqlite3.OperationalError
        ):
            hint = "; the file is damaged: move it away to start afresh"
        return StoreError(f"{self._path}: {what}: {exc}{hint}")

    def _damaged(self, key: str, state: Any) -> StoreError:
        return StoreError(
            f"{self._path}: element {key[:200]!r} has state {state!r}, which a "
            f"ParamSweeper (format {FORMAT_VERSION}) never writes; the file is "
            "damaged or from a newer alma_dag"
        )

    def close(self) -> None:
        """Close the database; the instance can no longer be used. Claims
        stay: cancel them first if other instances should take them."""
        with self._lock:
            if self._db is not None:
                self._finalizer()
                self._db = None

    def __enter__(self) -> ParamSweeper:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __getstate__(self) -> Any:
        raise TypeError(
            f"a ParamSweeper cannot be pickled; create one in each process on "
            f"the same directory ({self.persistence_dir})"
        )

    def __repr__(self) -> str:
        with self._lock:
            counts = dict.fromkeys(_State, 0)
            for key in self._order:
                counts[self._state(key)] += 1
        return (
            f"<ParamSweeper {self.name!r}: {len(self._order)} total, "
            f"{counts[_DONE]} done, {counts[_SKIPPED]} skipped, "
            f"{counts[_INPROGRESS]} in progress, {counts[_TODO]} remaining>"
        )


# -- opening the database ---------------------------------------------------------


def _open(
    directory: Path, durable: bool, multi_host: bool | None
) -> sqlite3.Connection:
    """Connect to the sweeper database of ``directory``, creating both if
    missing, and check that it is one."""
    path = directory / DATABASE
    try:
        directory.mkdir(parents=True, mode=0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise StoreError(f"{directory}: cannot create the directory: {exc}") from exc
    else:
        os.chmod(directory, 0o700)  # whatever the umask
    check_private(directory, _PRIVATE)
    if not os.path.lexists(path):
        if multi_host is None:
            multi_host = _is_network_filesystem(directory)
        _create(path, multi_host)
    if not path.is_file():
        raise StoreError(f"{path}: not a file; move it away to start afresh")
    check_private(path, _PRIVATE)
    db = None
    try:
        db = _connect(path)
        _check_layout(db, path, multi_host)
        # Reading the states touches every table page, not every index page:
        # a damaged index would go unseen, and hand out wrong elements.
        problems = [row[0] for row in db.execute("PRAGMA quick_check(5)")]
        if problems != ["ok"]:
            raise StoreError(
                f"{path}: damaged ({'; '.join(problems)}); it is left as it is: "
                "move it away to start afresh"
            )
        db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
    except BaseException as exc:
        if db is not None:
            db.close()
        if isinstance(exc, sqlite3.Error):
            raise StoreError(
                f"{path}: not a ParamSweeper database, or a damaged one ({exc}); "
                "it is left as it is: move it away, or choose another directory"
            ) from exc
        raise
    return db


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(
        f"{path.resolve().as_uri()}?mode=rw",
        uri=True,
        timeout=BUSY_TIMEOUT,
        isolation_level=None,
        check_same_thread=False,
    )
    db.text_factory = decode_text
    return db


def _create(path: Path, multi_host: bool) -> None:
    """Make the database at ``path`` whole, or leave the one another process
    made first: it is built aside, then linked into place."""
    # So a file at ``path`` is always a complete database, never one whose
    # creation was interrupted: an empty or half-made one is damage to
    # report, not something to start afresh over.
    aside = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}")
    try:
        os.close(os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        db = _connect(aside)
        try:
            journal = db.execute(
                f"PRAGMA journal_mode={'delete' if multi_host else 'wal'}"
            ).fetchone()[0]
            db.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.executemany(
                "INSERT INTO meta VALUES (?, ?)",
                [
                    ("format", FORMAT),
                    ("version", str(FORMAT_VERSION)),
                    ("journal", journal),
                ],
            )
            db.execute("COMMIT")
        finally:
            db.close()
        try:
            os.link(aside, path)
        except FileExistsError:
            pass  # another process was first: its database serves
        except OSError:  # no hard links here: a tiny race instead
            if not os.path.lexists(path):
                os.replace(aside, path)
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot create the database: {exc}") from exc
    except OSError as exc:
        raise StoreError(f"{path}: cannot create the database: {exc}") from exc
    finally:
        for leftover in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(OSError):
                os.unlink(f"{aside}{leftover}")


def _check_layout(db: sqlite3.Connection, path: Path, multi_host: bool | None) -> None:
    tables = {
        name
        for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    }
    if "meta" not in tables:
        found = f"its tables: {', '.join(sorted(tables))}" if tables else "empty"
        raise StoreError(
            f"{path}: not a ParamSweeper database ({found}); it is left as it "
            "is: move it away, or choose another directory"
        )
    meta = dict(db.execute("SELECT key, value FROM meta"))
    if meta.get("format") != FORMAT:
        raise StoreError(
            f"{path}: not a ParamSweeper database (format {meta.get('format')!r}); "
            "it is left as it is: move it away, or choose another directory"
        )
    if meta.get("version") != str(FORMAT_VERSION):
        raise StoreError(
            f"{path}: ParamSweeper format version {meta.get('version')}, this "
            f"alma_dag reads version {FORMAT_VERSION}"
        )
    if multi_host and meta.get("journal") == "wal":
        raise StoreError(
            f"{path}: made for one host (WAL journal), but multi_host=True; "
            "WAL does not work between hosts: start in a new directory "
            "with multi_host=True"
        )


def _is_network_filesystem(directory: Path) -> bool:
    """Whether ``directory`` is on a filesystem that other hosts may share."""
    import psutil  # only when creating a database: keep `import alma_dag` fast

    target = str(directory.resolve())
    best = None
    try:
        partitions = psutil.disk_partitions(all=True)
    except (OSError, psutil.Error):
        return False
    for partition in partitions:
        mount = partition.mountpoint
        inside = target == mount or target.startswith(mount.rstrip(os.sep) + os.sep)
        if inside and (best is None or len(mount) > len(best.mountpoint)):
            best = partition
    if best is None:
        return False
    return best.fstype.lower() in NETWORK_FILESYSTEMS or "remote" in best.opts


# -- holders -------------------------------------------------------------------


def _start_time(pid: int) -> float:
    import psutil

    return psutil.Process(pid).create_time()


def _parse_holder(holder: Any) -> tuple[str, int, float] | None:
    """(host, pid, start time) of a claim's holder; None if unreadable."""
    try:
        # The host comes first and may itself hold colons.
        host, pid, started, _ = holder.rsplit(":", 3)
        return host, int(pid), float(started)
    except (AttributeError, ValueError):
        return None


def _is_running(pid: int, started: float) -> bool:
    """Whether process ``pid`` of this host is alive and is the one that
    started at ``started`` (not a later one given the same id)."""
    import psutil

    try:
        process = psutil.Process(pid)
        with process.oneshot():
            if process.status() == psutil.STATUS_ZOMBIE:
                return False
            # create_time() derives from the boot time, which the clock's
            # adjustments can move by a second.
            return abs(process.create_time() - started) <= 1.0
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:  # access denied: it exists
        return True


# -- encoding elements ---------------------------------------------------------------

# An element is stored as JSON text in which every container is tagged:
# a dict with string keys is a JSON object; every other container is a
# JSON array whose first item says what it is:
#   ["t", item, ...]  tuple         ["l", item, ...]   list
#   ["f", item, ...]  frozenset     ["s", item, ...]   set
#   ["d", [k, v], ...] dict with other keys             ["b", "hex"]  bytes
# Strings, numbers, true, false and null are themselves. Nothing else is
# accepted, so reading an element back never runs code.
#
# Two texts per element:
# - the *key* identifies it, and is canonical: elements that Python finds
#   equal have one key (1, 1.0 and True are one number; a dict's items and
#   a set's members are sorted; a set and a frozenset are alike), so
#   done(x) finds the element of the sweep equal to x, in any instance;
# - the *value* (saved sweeps only) keeps the exact types and the order of
#   the dicts, so the elements read back are as they were given.
# Mappings are read back as HashableDicts.


def _json_dumps(sort_keys: bool) -> Callable[[Any], str]:
    encoder = json.JSONEncoder(separators=(",", ":"), sort_keys=sort_keys)
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # no C accelerator: the slower public way
        return encoder.encode
    # JSONEncoder.encode builds this C encoder anew at every call, which
    # costs as much as the encoding itself, a large part of a resume.
    # No markers (circular check): _tagged builds fresh, acyclic data, and
    # the fast path's flat dicts cannot hold themselves.
    chunks = make(
        None,
        encoder.default,
        json.encoder.encode_basestring_ascii,
        None,
        ":",
        ",",
        sort_keys,
        False,
        True,
    )
    return lambda value: "".join(chunks(value, 0))


_dumps_key = _json_dumps(sort_keys=True)
_dumps_value = _json_dumps(sort_keys=False)
_loads = json.JSONDecoder(object_pairs_hook=HashableDict).decode

_STR = frozenset({str})
_PLAIN = frozenset({str, int, type(None)})
_EXACT_PLAIN = _PLAIN | {float, bool}
_SETS = {"f": frozenset, "s": set}
_SEQUENCES = {"t": tuple, "l": list}

_ALLOWED = (
    "str, int, float, bool, None, bytes, tuples, lists, sets, frozensets, "
    "dicts and HashableDicts"
)


class _Encoded:
    """Elements given by the user: by key, in order, and their values
    (empty unless they are to be saved)."""

    __slots__ = ("elements", "values")

    def __init__(self, elements: dict[str, Any], values: list[str]) -> None:
        self.elements = elements
        self.values = values


def _encode_all(sweeps: Iterable[Any], save: bool) -> _Encoded:
    if isinstance(sweeps, (str, bytes, dict)):
        raise TypeError(
            f"sweeps must be an iterable of elements, such as the list "
            f"sweep() returns, got a {type(sweeps).__name__}"
        )
    elements: dict[str, Any] = {}
    values: list[str] = []
    for element in sweeps:
        key = _encode(element)
        if key not in elements:
            elements[key] = element
            if save:
                values.append(_encode_value(element))
    return _Encoded(elements, values)


def _encode_each(combinations: Iterable[Any]) -> list[str]:
    if isinstance(combinations, (str, bytes, dict)):
        raise TypeError(
            "expected an iterable of elements (for one element, use the "
            f"method without _batch), got a {type(combinations).__name__}"
        )
    return [_encode(element) for element in combinations]


def _encode(element: Any) -> str:
    """The canonical key of ``element``; TypeError if it cannot be stored."""
    if type(element) is HashableDict and set(map(type, element)) <= _STR:
        # The common combination, flat: only its numbers may need work.
        types = set(map(type, element.values()))
        if types <= _PLAIN:
            return _dumps_key(element)
        if types <= _EXACT_PLAIN:
            return _dumps_key(
                {
                    key: int(value)
                    if type(value) is bool
                    or (type(value) is float and value.is_integer())
                    else value
                    for key, value in element.items()
                }
            )
    return _dumps_key(_guarded(element, canonical=True))


def _encode_value(element: Any) -> str:
    """The exact text of ``element``, to read it back as it is."""
    if (
        type(element) is HashableDict
        and set(map(type, element)) <= _STR
        and set(map(type, element.values())) <= _EXACT_PLAIN
    ):
        return _dumps_value(element)
    return _dumps_value(_guarded(element, canonical=False))


def _guarded(element: Any, canonical: bool) -> Any:
    try:
        return _tagged(element, canonical, hashable=True)
    except _Unstorable as exc:
        raise TypeError(
            f"{exc.problem}, in element {reprlib.repr(element)}; a ParamSweeper "
            f"stores elements as text that never runs code when read, so they "
            f"may hold only {_ALLOWED}{exc.hint}"
        ) from None
    except RecursionError:
        raise TypeError(
            f"element {reprlib.repr(element)} is nested too deeply to store"
        ) from None


class _Unstorable(Exception):
    def __init__(self, problem: str, hint: str = "") -> None:
        super().__init__(problem)
        self.problem = problem
        self.hint = hint


def _tagged(value: Any, canonical: bool, hashable: bool) -> Any:
    """``value`` as JSON-ready data with tags; ``hashable``: whether it is
    where Python needs a hashable value (a set member, a dict key, inside
    a tuple that must hash, the element itself)."""
    kind = type(value)
    if kind is str or kind is int or value is None:
        return value
    if kind is float:
        return int(value) if canonical and value.is_integer() else value
    if kind is bool:
        return int(value) if canonical else value
    if kind is HashableDict or (kind is dict and not hashable):
        # A HashableDict's values need not be hashable: it freezes them.
        if all(type(key) is str for key in value):
            return {key: _tagged(item, canonical, False) for key, item in value.items()}
        pairs = [
            [_tagged(key, canonical, True), _tagged(item, canonical, False)]
            for key, item in value.items()
        ]
        if canonical:
            pairs.sort(key=_dumps_key)
        return ["d", *pairs]
    if kind is tuple:
        return ["t", *(_tagged(item, canonical, hashable) for item in value)]
    if kind is frozenset or (kind is set and not hashable):
        members = sorted(
            (_tagged(item, canonical, True) for item in value), key=_dumps_key
        )
        return ["f" if canonical or kind is frozenset else "s", *members]
    if kind is list and not hashable:
        return ["l", *(_tagged(item, canonical, False) for item in value)]
    if kind is bytes:
        return ["b", value.hex()]
    if kind in (dict, set, list):
        hint = {dict: "HashableDict", set: "frozenset", list: "tuple"}[kind]
        raise _Unstorable(
            f"a {kind.__name__} ({reprlib.repr(value)}) is unhashable, and it "
            "is where a hashable value is needed (the element itself, a set "
            "member, a dict key or inside such a tuple)",
            f"; make it a {hint}",
        )
    raise _Unstorable(f"cannot store a {kind.__name__} ({reprlib.repr(value)})")


def _decode(text: str) -> Any:
    """The element whose exact text is ``text``; ValueError if it is not one."""
    value = _loads(text)
    return _untagged(value) if "[" in text else value


def _untagged(value: Any) -> Any:
    kind = type(value)
    if kind is list:
        if not value or type(value[0]) is not str:
            raise ValueError(f"untagged array {reprlib.repr(value)}")
        tag = value[0]
        if tag in _SEQUENCES:
            return _SEQUENCES[tag](_untagged(item) for item in value[1:])
        if tag in _SETS:
            return _SETS[tag](_untagged(item) for item in value[1:])
        if tag == "d":
            return HashableDict((_untagged(k), _untagged(v)) for k, v in value[1:])
        if tag == "b" and len(value) == 2 and type(value[1]) is str:
            return bytes.fromhex(value[1])
        raise ValueError(f"unknown tag {tag!r}")
    if kind is HashableDict:
        for key, item in value.items():
            value[key] = _untagged(item)
    return value
