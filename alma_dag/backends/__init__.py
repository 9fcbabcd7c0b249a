"""Backends: where batches of tasks run.

``inline`` runs them in the dispatcher's thread, ``loky`` (the default) on
loky's reusable process pool, ``dask`` on a ``distributed`` cluster (an
optional dependency). ``get_backend`` turns a name -- or a dask
scheduler's address, or a ``distributed.Client`` -- into a backend.
"""

from __future__ import annotations

import sys

from ..errors import DefinitionError
from .base import Backend, Batch, Outcome, execute_batch

__all__ = ["Backend", "Batch", "Outcome", "execute_batch", "get_backend"]

#: Backend names accepted by ``backend=...``.
BACKENDS = ("loky", "inline", "dask")


def get_backend(backend: object) -> Backend:
    """The backend named ``backend``, or ``backend`` itself if it is one; a
    scheduler's address (``"tcp://host:8786"``, ``"tls://..."``) or a
    ``distributed.Client`` gives a ``DaskBackend`` using it.

    Raises
    ------
    DefinitionError
        The name is not one of ``BACKENDS`` nor an address, or the backend
        is dask's and ``distributed`` is not installed.
    """
    if isinstance(backend, Backend):
        return backend
    if backend == "dask":
        return _dask_backend(None)
    if (isinstance(backend, str) and "://" in backend) or _is_dask_client(backend):
        return _dask_backend(backend)
    if backend == "loky":
        from .loky import LokyBackend

        return LokyBackend()
    if backend == "inline":
        from .inline import InlineBackend

        return InlineBackend()
    raise DefinitionError(
        f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}, "
        "a dask scheduler's address (tcp://host:8786), or a Backend instance",
        field="backend",
    )


def _is_dask_client(backend: object) -> bool:
    distributed = sys.modules.get("distributed")  # a client means it is loaded
    return distributed is not None and isinstance(backend, distributed.Client)


def _dask_backend(client: object) -> Backend:
    try:
        from .dask import DaskBackend
    except ImportError as exc:
        raise DefinitionError(
            f"backend 'dask' needs the distributed package ({exc}); "
            "install it with: pip install 'alma_dag[dask]'",
            field="backend",
        ) from exc
    return DaskBackend(client)
