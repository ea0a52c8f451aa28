"""Turning command-line words into Python objects: task modules, ``MODULE:WORKFLOW`` and contexts.

Modules are imported the way ``python -m`` finds them (the working directory first on
``sys.path``); a path ending in ``.py`` is loaded from that file. Every failure is a
:class:`~cloacina.cli.common.CliError` naming the word that failed, never a traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, Optional

import cloacina

from cloacina.cli.common import CliError


def import_module(name: str) -> ModuleType:
    """Imports a task module by dotted name (from the working directory first) or ``.py`` path."""
    _working_directory_first()
    try:
        if name.endswith(".py"):
            return _import_file(Path(name))
        return importlib.import_module(name)
    except CliError:
        raise
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            raise CliError(f"cannot import module {name!r}: no module named {exc.name!r} "
                           f"(looked in the working directory and sys.path)") from None
        raise CliError(f"cannot import module {name!r}: {exc}") from None
    except SyntaxError as exc:
        raise CliError(f"cannot import module {name!r}: SyntaxError: {exc}") from None
    except Exception as exc:  # the module's own code raised while being imported
        raise CliError(f"cannot import module {name!r}: {type(exc).__name__}: {exc}") from None
    except SystemExit as exc:  # sys.exit() in the module: its tasks never registered
        raise CliError(f"cannot import module {name!r}: it called sys.exit({exc.code!r}) while being "
                       f"imported") from None


def load_workflow(target: str) -> cloacina.Workflow:
    """The ``cloacina.Workflow`` named by ``MODULE:ATTRIBUTE`` (the attribute may be dotted)."""
    module_name, colon, attribute = target.rpartition(":")
    if not colon or not module_name or not attribute:
        raise CliError(f"expected MODULE:WORKFLOW (e.g. etl:pipeline), got {target!r}")
    module = import_module(module_name)
    value: Any = module
    for part in attribute.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            found = sorted(k for k, v in vars(module).items() if isinstance(v, cloacina.Workflow))
            hint = f"; its workflows: {', '.join(found)}" if found else "; it defines no cloacina.Workflow"
            raise CliError(f"module {module_name!r} has no attribute {attribute!r}{hint}") from None
    if not isinstance(value, cloacina.Workflow):
        raise CliError(f"{target!r} is not a cloacina.Workflow (it is {type(value).__name__})")
    return value


def parse_context(text: Optional[str], file: Optional[str]) -> Optional[Dict[str, Any]]:
    """The input context from ``--context JSON`` or ``--context-file F`` (``-`` is stdin)."""
    source = "--context"
    if file is not None:
        source = f"--context-file {file}"
        try:
            text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise CliError(f"cannot read {source}: {reason}") from None
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"{source} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if not isinstance(value, dict):
        raise CliError(f"{source} must be a JSON object ({{...}}), not {_json_kind(value)}")
    return value


def _working_directory_first() -> None:
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def _import_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise CliError(f"cannot import module {str(path)!r}: no such file")
    name = path.stem
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise CliError(f"cannot import module {str(path)!r}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"
