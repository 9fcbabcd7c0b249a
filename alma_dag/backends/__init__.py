"""Backends: where batches of tasks run.

``inline`` runs them in the dispatcher's thread, ``loky`` (the default) on
loky's reusable process pool. ``get_backend`` turns a name into a backend.
"""

from __future__ import annotations

from ..errors import DefinitionError
from .base import Backend, Batch, Outcome, execute_batch

__all__ = ["Backend", "Batch", "Outcome", "execute_batch", "get_backend"]

#: Backend names accepted by ``backend=...``.
BACKENDS = ("loky", "inline")


def get_backend(backend: str | Backend) -> Backend:
    """The backend named ``backend``, or ``backend`` itself if it is one.

    Raises
    ------
    DefinitionError
        The name is not one of ``BACKENDS``.
    """
    if isinstance(backend, Backend):
        return backend
    if backend == "loky":
        from .loky import LokyBackend

        return LokyBackend()
    if backend == "inline":
        from .inline import InlineBackend

        return InlineBackend()
    raise DefinitionError(
        f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)} "
        "or pass a Backend instance",
        field="backend",
    )
