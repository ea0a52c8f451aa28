"""Find and bind the Cloacina backend for this process.

Known backends, in preference order (the first one installed wins when
``CLOACINA_BACKEND`` is not set):

1. ``postgres`` -- module ``cloacina_postgres``, ``pip install cloacina-postgres``
2. ``sqlite``   -- module ``cloacina_sqlite``,   ``pip install cloacina-sqlite``

``CLOACINA_BACKEND=sqlite|postgres`` (case-insensitive; empty means unset)
overrides the preference order. Exactly one backend module is imported per
process; the others are only located with :func:`importlib.util.find_spec`,
never imported.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from dataclasses import dataclass
from types import ModuleType
from typing import Mapping, Optional, Tuple

ENV_VAR = "CLOACINA_BACKEND"


@dataclass(frozen=True)
class BackendSpec:
    """One known backend: its public name, import name and pip distribution."""

    name: str
    module: str
    distribution: str

    @property
    def install_hint(self) -> str:
        return f"pip install {self.distribution}"


# Preference order: earlier entries win when several are installed.
KNOWN_BACKENDS: Tuple[BackendSpec, ...] = (
    BackendSpec("postgres", "cloacina_postgres", "cloacina-postgres"),
    BackendSpec("sqlite", "cloacina_sqlite", "cloacina-sqlite"),
)


def _is_installed(spec: BackendSpec) -> bool:
    try:
        return importlib.util.find_spec(spec.module) is not None
    except (ImportError, ValueError):
        # ImportError: an import hook refused the name.
        # ValueError: a module object without __spec__ sits in sys.modules.
        return False


def available_backends() -> list[str]:
    """Names of the installed backends, in preference order."""
    return [spec.name for spec in KNOWN_BACKENDS if _is_installed(spec)]


def _by_name(name: str) -> BackendSpec:
    for spec in KNOWN_BACKENDS:
        if spec.name == name:
            return spec
    valid = ", ".join(repr(s.name) for s in KNOWN_BACKENDS)
    raise ImportError(f"{ENV_VAR}={name!r} is not a known Cloacina backend; valid names are {valid}")


def choose_backend(environ: Optional[Mapping[str, str]] = None) -> BackendSpec:
    """Pick the backend to bind, honouring ``CLOACINA_BACKEND``.

    Raises ImportError when the requested backend is unknown or not installed,
    or when no backend is installed at all.
    """
    env = os.environ if environ is None else environ
    requested = env.get(ENV_VAR, "").strip().lower()
    if requested:
        spec = _by_name(requested)
        if not _is_installed(spec):
            raise ImportError(
                f"{ENV_VAR}={requested!r} selects the {spec.name} backend, but module "
                f"{spec.module!r} is not installed; run `{spec.install_hint}`"
            )
        return spec
    for spec in KNOWN_BACKENDS:
        if _is_installed(spec):
            return spec
    hints = " or ".join(f"`{s.install_hint}`" for s in reversed(KNOWN_BACKENDS))
    raise ImportError(f"no Cloacina backend is installed; run {hints}")


def load_backend(environ: Optional[Mapping[str, str]] = None) -> Tuple[str, ModuleType]:
    """Choose a backend and import its module. Returns ``(name, module)``."""
    spec = choose_backend(environ)
    try:
        module = importlib.import_module(spec.module)
    except ImportError as exc:
        raise ImportError(
            f"the {spec.name} backend ({spec.module}) is installed but failed to import: {exc}; "
            f"try reinstalling it with `{spec.install_hint}`"
        ) from exc
    return spec.name, module
