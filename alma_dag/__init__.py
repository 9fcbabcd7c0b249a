"""alma_dag: plan, run, pause and resume DAGs of Python tasks."""

from __future__ import annotations

from .errors import *  # noqa: F403
from .errors import __all__ as _errors_all
from .graph import *  # noqa: F403
from .graph import __all__ as _graph_all

__version__ = "0.1.0"

__all__ = [*_errors_all, *_graph_all]
