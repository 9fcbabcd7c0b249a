"""The ``dask`` backend: batches run on a ``distributed`` cluster.

::

    dispatcher thread                 scheduler            dask workers
    submit(Batch) ── cloudpickle ──► client.submit ──────► run_dask_payload
                                                            │ log_event(started)
    started(batch) ◄─ subscribe_topic ◄─────────────────────┘ run_payload
    report(Outcome) ◄─ done callback ◄── (ok, pickled outcomes)

- **Where it runs.** ``DaskBackend(client)`` uses a ``distributed.Client``
  you made; ``DaskBackend("tls://host:8786", security=...)`` connects to a
  scheduler (``security``, a ``distributed.Security``, goes to the client,
  so TLS works) and closes that client in ``close()``; ``DaskBackend()``
  starts a ``LocalCluster`` on loopback, one single-threaded worker process
  per worker the run asks for, and closes it in ``close()``.
- **What travels.** Each batch is one cloudpickle payload, run on the
  worker by ``loky``'s ``run_payload`` -- the same code the ``loky``
  backend runs, so results, ``Err`` s and unpicklable results behave alike.
  Each submission has a unique key and ``pure=False``: dask never merges
  two batches or reuses an old result.
- **Chaining.** A hand-off through the dispatcher costs a round trip to
  the scheduler (~10 ms), so the backend ``chains``: the dispatcher hands
  it a lane's next batch while the batches it depends on still run, and
  the backend submits it with their futures as arguments. Dask starts it
  the moment they end, moving their outcomes to its worker, where
  ``run_dask_payload`` adds their results to the inputs. A batch that
  depends on a lost one is lost with it, and the dispatcher runs it again
  without blaming it.
- **Failures** of the cluster are mapped in one place, ``map_dask_error``:
  a worker that died (``KilledWorker``) gives ``WorkerDied``, a cancelled
  future ``TaskCancelled``, a lost connection ``WorkerDied``. The
  dispatcher isolates and re-runs suspects itself, so a cluster this
  backend starts lets no task be retried (``allowed-failures`` 0); on your
  own cluster set ``distributed.scheduler.allowed-failures`` to 0 to see a
  task that kills its worker fail at once rather than kill up to four.
- **Timeouts.** A batch with a timeout tells the client when it really
  begins on a worker (a worker event on a topic only this backend
  subscribes to); ``started()`` gives the time the client heard of it, so
  clocks of remote hosts need not agree.
- **kill()** cancels every future in flight. A running task cannot be
  interrupted in dask, so the workers are also restarted when
  ``restart_on_kill`` (the default for a cluster the backend started):
  their nannies end each worker process (killing it after a few seconds
  if a task holds it) and start a new one. ``kill()`` does not wait for
  the new workers to register -- a restart waiting for all of them made a
  stop hang when one was slow to come back -- so a stop returns in
  seconds, and the next batches simply wait for workers. Restarting needs
  nannies (``LocalCluster(processes=True)`` or ``dask worker`` has them).
  On your own client they are not: the killed tasks run on to their end,
  unobserved, and their results are dropped; nothing more is reported for
  killed batches (the dispatcher runs them again).

- **States** that experiment runs ``save()`` travel through the cluster,
  not a shared disk: the worker puts the request on a ``distributed.Queue``
  only this run reads, a thread beside the dispatcher commits it to the
  run's ``Store`` and answers on a ``distributed.Variable`` named for the
  request, and ``save()`` returns once the answer says committed. The
  state a run starts with comes back the same way. Requests name the
  store's path; one for any other file is refused.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Hashable
from functools import partial
from typing import Any

import cloudpickle
import dask
import distributed
from distributed.client import FutureCancelledError, FuturesCancelledError
from distributed.comm.core import CommClosedError
from distributed.core import RPCClosed
from distributed.scheduler import KilledWorker

from ..errors import (
    DefinitionError,
    SerializationError,
    StoreError,
    TaskCancelled,
    TaskFailure,
    WorkerDied,
)
from ..store import Store, check_state, routed_states
from .base import Backend, Batch, Outcome, dump_batch, lost_batch_error
from .loky import payload_outcome, run_payload

__all__ = [
    "ClientStates",
    "DaskBackend",
    "local_cluster",
    "map_dask_error",
    "run_dask_payload",
    "serve_states",
]

logger = logging.getLogger("alma_dag")

#: Seconds ``kill()`` gives the nannies to end and restart the workers; a
#: task that ignores the request to close is killed well before.
RESTART_TIMEOUT = 20

#: Seconds ``kill()`` then waits for the restarted workers to register.
WORKERS_BACK_TIMEOUT = 10

#: Seconds a worker's ``save()`` (or its first read of a state) waits for
#: the dispatcher's answer before it fails with a ``StoreError``.
STATE_TIMEOUT = 60

#: Seconds ``close()`` waits for the thread answering state requests.
SERVER_JOIN_TIMEOUT = 10

#: Batches that ended kept for chaining (their results stay on the cluster
#: meanwhile): a batch is chained to one only in the moment between its end
#: and the dispatcher hearing of it, so a few per worker are plenty.
ENDED_KEPT = 64

# (distributed or builtin error, alma_dag error, what it means); the first
# matching row wins, so subclasses come before their bases.
_DASK_ERRORS: tuple[tuple[type[BaseException], type[TaskFailure], str], ...] = (
    (KilledWorker, WorkerDied, "its worker process died"),
    (FutureCancelledError, TaskCancelled, "its future was cancelled"),
    (FuturesCancelledError, TaskCancelled, "its future was cancelled"),
    (distributed.CancelledError, TaskCancelled, "it was cancelled"),
    (distributed.client.ClosedClientError, TaskCancelled, "the client was closed"),
    (TimeoutError, WorkerDied, "the cluster did not answer in time"),
    (CommClosedError, WorkerDied, "the connection to the cluster was lost"),
    (RPCClosed, WorkerDied, "the connection to the cluster was lost"),
    (OSError, WorkerDied, "the connection to the cluster failed"),
    (pickle.PicklingError, SerializationError, "it could not be pickled"),
    (pickle.UnpicklingError, SerializationError, "it could not be unpickled"),
    (ImportError, SerializationError, "the worker could not import its code"),
)


def map_dask_error(exc: BaseException) -> TaskFailure:
    """The alma_dag error for a failure of the cluster to run a batch.

    Examples
    --------
    >>> from distributed.comm.core import CommClosedError
    >>> type(map_dask_error(CommClosedError("lost"))).__name__
    'WorkerDied'
    """
    return lost_batch_error(exc, _DASK_ERRORS, "the cluster failed to run it")


def run_dask_payload(
    payload: bytes,
    topic: str | None,
    batch_id: int,
    states: str | None = None,
    chained: tuple[tuple[Hashable, ...], ...] = (),
    *upstream: tuple[bool, bytes | str],
) -> tuple[bool, bytes | str]:
    """Worker side: tell ``topic`` (if any) that ``batch_id`` began, then
    run the batch as ``run_payload`` does, its states going through the
    queue named ``states`` (if any). ``upstream`` are the outcomes of the
    batches it is chained to, whose node ids ``chained`` gives in order."""
    if topic is not None:
        try:
            distributed.get_worker().log_event(topic, batch_id)
        except ValueError:  # not on a dask worker (called directly)
            pass
    inputs: dict[Hashable, Any] = {}
    for nodes, (ok, data) in zip(chained, upstream, strict=True):
        if not ok:
            return False, f"a batch it depends on was lost: {data}"
        outcomes = cloudpickle.loads(data)
        inputs.update(zip(nodes, (result for result, _, _ in outcomes), strict=True))
    with routed_states(None if states is None else ClientStates(states)):
        return run_payload(payload, upstream=inputs)


class ClientStates:
    """A ``StateRoute`` from a dask worker to the dispatcher's process:
    each request goes on the run's queue, and its answer, ``(True,
    value)`` or ``(False, why)``, comes back on a variable of its own."""

    def __init__(self, queue: str) -> None:
        self.queue = queue

    def load(self, database: str, node: str) -> str:
        return self._ask("load", database, node, "")

    def save(self, database: str, node: str, state: str) -> None:
        self._ask("save", database, node, check_state(state))

    def _ask(self, kind: str, database: str, node: str, state: str) -> Any:
        client = distributed.get_client()
        token = f"alma_dag-state-{uuid.uuid4().hex}"
        answer = distributed.Variable(token, client=client)
        try:
            distributed.Queue(self.queue, client=client).put(
                (token, kind, database, node, state)
            )
            ok, value = answer.get(timeout=STATE_TIMEOUT)
        except TimeoutError:
            raise StoreError(
                f"{database}: the dispatcher did not answer within {STATE_TIMEOUT} s "
                f"to {kind} the state of {node!r}"
            ) from None
        finally:
            answer.delete()
        if not ok:
            raise StoreError(value)
        return value


def serve_states(
    queue: distributed.Queue, client: distributed.Client, store: Store
) -> None:
    """Dispatcher side: answer ``ClientStates`` requests from ``store``
    until ``None`` arrives on ``queue`` or the client closes."""
    path = os.path.abspath(store.path)
    while True:
        try:  # no timeout: one expiring makes the scheduler log an error
            request = queue.get()
        except Exception:  # the client closed under us
            return
        if request is None:
            return
        try:
            token, kind, database, node, state = request
        except (TypeError, ValueError):
            logger.warning("alma_dag: a malformed state request: %.200r", request)
            continue
        try:
            if not isinstance(database, str) or os.path.abspath(database) != path:
                raise StoreError(f"{database}: not the store of this run ({path})")
            if kind == "save":
                answer = (True, store.save_state(node, check_state(state)))
            elif kind == "load":
                answer = (True, store.state(node))
            else:
                raise StoreError(f"{database}: no state request {kind!r}")
        except (StoreError, TypeError) as exc:
            answer = (False, str(exc))
        try:
            distributed.Variable(token, client=client).set(answer)
        except Exception:  # the client closed under us
            return


def local_cluster(n_workers: int, security: Any = None) -> distributed.LocalCluster:
    """The cluster ``DaskBackend()`` starts: ``n_workers`` single-threaded
    worker processes on loopback, no task retried (the dispatcher isolates
    and re-runs suspects itself), no dashboard, and the scheduler's HTTP
    routes on a free port rather than 8787, which may be taken."""
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        return distributed.LocalCluster(
            n_workers=n_workers,
            processes=True,
            threads_per_worker=1,
            dashboard_address=None,
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
            host="127.0.0.1",
            security=security,
        )


class DaskBackend(Backend):
    """Run batches on a ``distributed`` cluster.

    Parameters
    ----------
    address_or_client : str or distributed.Client, optional
        A client to use, or a scheduler's address to connect to; None
        starts a ``LocalCluster`` on loopback when the backend is opened.
    security : distributed.Security, optional
        TLS settings for the connection (or the local cluster).
    restart_on_kill : bool, optional
        Whether ``kill()`` restarts the cluster's workers to stop running
        tasks; by default only for a cluster the backend started.
    **client_options
        Passed to ``distributed.Client`` when the backend makes one.

    Raises
    ------
    DefinitionError
        ``address_or_client`` is neither a string nor a ``Client``.

    Examples
    --------
    >>> backend = DaskBackend("tcp://127.0.0.1:8786", timeout="2s")
    >>> backend.name
    'dask'
    """

    name = "dask"
    chains = True

    def __init__(
        self,
        address_or_client: str | distributed.Client | None = None,
        *,
        security: Any = None,
        restart_on_kill: bool | None = None,
        **client_options: Any,
    ) -> None:
        given = address_or_client
        if given is not None and not isinstance(given, str | distributed.Client):
            raise DefinitionError(
                "backend 'dask' takes a scheduler address or a distributed.Client, "
                f"got {type(given).__name__}: {given!r}",
                field="backend",
            )
        self._given = given
        self._security = security
        self._client_options = client_options
        self._restart_on_kill = (
            given is None if restart_on_kill is None else restart_on_kill
        )
        self._client: distributed.Client | None = (
            given if isinstance(given, distributed.Client) else None
        )
        self._cluster: distributed.LocalCluster | None = None
        self._topic: str | None = None
        # The run's queue of state requests, and the thread answering them.
        self._states: distributed.Queue | None = None
        self._server: threading.Thread | None = None
        # _lock guards _futures (batch id -> future in flight) and _began
        # (batch id -> time.time() its start was heard of).
        self._lock = threading.Lock()
        self._futures: dict[int, distributed.Future] = {}
        self._began: dict[int, float] = {}
        # The last batches that ended, by id, for batches chained to them
        # before the dispatcher heard they ended (guarded by _lock too).
        self._ended: OrderedDict[int, distributed.Future] = OrderedDict()

    @property
    def client(self) -> distributed.Client | None:
        """The client batches go through (None until opened, when the
        backend makes its own)."""
        return self._client

    def open(self, n_workers, report, store=None) -> None:
        super().open(n_workers, report, store)
        with self._lock:
            self._futures.clear()
            self._began.clear()
            self._ended.clear()
        if self._client is None:
            self._client = self._connect(n_workers)
        self._topic = f"alma_dag-started-{uuid.uuid4().hex}"
        self._client.subscribe_topic(self._topic, self._on_started)
        if store is not None:
            name = f"alma_dag-states-{uuid.uuid4().hex}"
            self._states = distributed.Queue(name, client=self._client)
            self._server = threading.Thread(
                target=serve_states,
                args=(self._states, self._client, store),
                name="alma_dag-dask-states",
                daemon=True,
            )
            self._server.start()

    def _connect(self, n_workers: int) -> distributed.Client:
        options = {"set_as_default": False, **self._client_options}
        if self._security is not None:
            options["security"] = self._security
        if isinstance(self._given, str):
            return distributed.Client(self._given, **options)
        self._cluster = local_cluster(n_workers, self._security)
        return distributed.Client(self._cluster, **options)

    def _on_started(self, event: tuple[float, Any]) -> None:
        _, batch_id = event
        with self._lock:
            if batch_id in self._futures:
                self._began[batch_id] = time.time()

    def submit(self, batch: Batch) -> None:
        try:
            payload = dump_batch(batch)
        except SerializationError as error:
            self._report(Outcome(batch.id, error=error))
            return
        topic = self._topic if batch.timeout is not None else None
        key = f"alma_dag-batch-{batch.id}-{uuid.uuid4().hex}"
        upstream = self._upstream(batch)
        if upstream is None:
            error = TaskCancelled("not chained: a batch it depends on is gone")
            self._report(Outcome(batch.id, error=error))
            return
        chained = tuple(nodes for _, nodes in batch.after)
        try:
            states = None if self._states is None else self._states.name
            future = self._client.submit(
                run_dask_payload,
                payload,
                topic,
                batch.id,
                states,
                chained,
                *upstream,
                pure=False,
                key=key,
            )
        except Exception as exc:
            self._report(Outcome(batch.id, error=map_dask_error(exc)))
            return
        with self._lock:
            self._futures[batch.id] = future
        future.add_done_callback(partial(self._done, batch.id))

    def _upstream(self, batch: Batch) -> list[distributed.Future] | None:
        """The futures of the batches ``batch`` is chained to; None if one
        is neither in flight nor among the last that ended."""
        with self._lock:
            futures = [
                self._futures.get(b) or self._ended.get(b) for b, _ in batch.after
            ]
        return None if None in futures else futures

    def started(self, batch_id: int) -> float | None:
        with self._lock:
            return self._began.get(batch_id)

    def _done(self, batch_id: int, future: distributed.Future) -> None:
        with self._lock:
            if self._futures.get(batch_id) is not future:
                return  # killed or closed: the dispatcher forgot it
            del self._futures[batch_id]
            self._began.pop(batch_id, None)
            self._ended[batch_id] = future
            while len(self._ended) > ENDED_KEPT:
                self._ended.popitem(last=False)
        try:
            ok, data = future.result()
        except BaseException as exc:
            self._report(Outcome(batch_id, error=map_dask_error(exc)))
            return
        self._report(payload_outcome(batch_id, ok, data))

    def _forget_inflight(self) -> list[distributed.Future]:
        with self._lock:
            futures = list(self._futures.values())
            self._futures.clear()
            self._began.clear()
            self._ended.clear()
        return futures

    def kill(self) -> None:
        futures = self._forget_inflight()
        if not futures or self._client is None:
            return
        self._client.cancel(futures, force=True)
        if not self._restart_on_kill:
            return
        # Not client.restart()'s own wait for the workers: it lasts its
        # whole timeout when one worker is slow to come back, and a stop
        # would hang with it. Here the wait is short and bounded; a worker
        # still missing then joins later, batches waiting for it meanwhile.
        client = self._client
        try:
            expected = len(client.scheduler_info(n_workers=-1)["workers"])
            client.restart(timeout=RESTART_TIMEOUT, wait_for_workers=False)
            client.wait_for_workers(expected, timeout=WORKERS_BACK_TIMEOUT)
        except Exception as exc:  # the killed tasks are forgotten anyway
            logger.warning("alma_dag: restarting the dask workers: %r", exc)

    def close(self) -> None:
        futures = self._forget_inflight()
        client = self._client
        if client is None:
            return
        if futures:
            client.cancel(futures, force=True)
        if self._topic is not None:
            client.unsubscribe_topic(self._topic)
            self._topic = None
        if self._server is not None:
            queue, server = self._states, self._server
            self._states = self._server = None
            with contextlib.suppress(Exception):  # a client closed by its owner
                queue.put(None)
                server.join(SERVER_JOIN_TIMEOUT)
                queue.close()
        if self._given is client:
            return  # the user's client stays open
        self._client = None
        client.close()
        if self._cluster is not None:
            cluster, self._cluster = self._cluster, None
            cluster.close()
