"""Cloacina on SQLite: durable, embedded workflows with a Rust core.

Import through the dispatcher (``import cloacina``) unless you need this backend explicitly.
"""

from ._native import (
    CloacinaError,
    ConfigurationError,
    ContextError,
    DatabaseError,
    NotInitializedError,
    UnifiedExecutor,
    Workflow,
    WorkflowError,
    __version__,
    backend,
    task,
)

__all__ = [
    "CloacinaError",
    "ConfigurationError",
    "ContextError",
    "DatabaseError",
    "NotInitializedError",
    "UnifiedExecutor",
    "Workflow",
    "WorkflowError",
    "__version__",
    "backend",
    "task",
]
