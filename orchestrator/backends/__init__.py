"""The backend contract and what every backend shares (the backends are in ``launchers/``).

The daemon talks to a backend through :class:`BaseBackend` only (:mod:`.contract`); the backends
(``launchers.local``, ``launchers.slurm``, ``launchers.pjm``, ``launchers.ray``) build on
:class:`JobFolderBackend` (:mod:`.jobfolder`: a job's folder, the template ``start()``) and parse
their ``--backend-opt`` options with :func:`parse_options` (:mod:`.options`). Backends are found
by name and imported only when chosen (:func:`make_backend`), so a daemon on a laptop never
imports Ray, and nothing in ``orchestrator/`` imports ``launchers/``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.backends.contract import BaseBackend, Handle, LaunchSpec, Liveness, PollResult
from orchestrator.exceptions import InvalidRequestError

if TYPE_CHECKING:
    from orchestrator.resources.cluster import Cluster

__all__ = [
    "BACKENDS",
    "BaseBackend",
    "Handle",
    "LaunchSpec",
    "Liveness",
    "PollResult",
    "make_backend",
    "parse_backend_options",
]

BACKENDS: dict[str, str] = {
    "local": "launchers.local:LocalBackend",
    "slurm": "launchers.slurm:SlurmBackend",
    "pjm": "launchers.pjm:PjmBackend",
    "ray": "launchers.ray:RayBackend",
}
"""Backend name -> ``module:class`` (imported by name when chosen)."""


def make_backend(
    name: str, root: Path, cluster: Cluster, options: Mapping[str, str] | None = None
) -> BaseBackend:
    """Build the backend called ``name`` for a daemon whose state folder is ``root``.

    Raises:
        InvalidRequestError: an unknown backend name, or an option the backend refuses.
    """
    target = BACKENDS.get(name)
    if target is None:
        raise InvalidRequestError("backend", name, "no such backend", "|".join(BACKENDS))
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise InvalidRequestError(
            "backend", name, f"it needs a module that is not installed ({e.name})", "local"
        ) from e
    backend_class: type[BaseBackend] = getattr(module, class_name)
    return backend_class.create(Path(root), cluster, dict(options or {}))


def parse_backend_options(pairs: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``["partition=debug", "mode=pilot"]`` -> a dict.

    Raises:
        InvalidRequestError: an item without ``=``.
    """
    options: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidRequestError("backend-opt", pair, "expected KEY=VALUE", "mode=pilot")
        options[key.strip()] = value
    return options
