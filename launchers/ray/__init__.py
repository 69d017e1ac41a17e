"""The Ray backend: placement groups of actors on a running Ray cluster (see :mod:`.backend`).

:class:`RayBackend` is imported on first use, so ``python -m launchers.ray.cluster`` and the
actors inside Ray's workers do not pay for the backend's imports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from launchers.ray.backend import RayBackend

__all__ = ["RayBackend"]


def __getattr__(name: str) -> Any:
    if name == "RayBackend":
        from launchers.ray.backend import RayBackend

        return RayBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
