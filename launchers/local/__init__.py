"""The local backend: each task a process group on this machine (see :mod:`.backend`).

:class:`LocalBackend` is imported on first use, so the spawner (:mod:`.spawner`), which imports
the node-side :mod:`.supervisor` from this package, starts with the standard library only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from launchers.local.backend import LocalBackend

__all__ = ["LocalBackend"]


def __getattr__(name: str) -> Any:
    if name == "LocalBackend":
        from launchers.local.backend import LocalBackend

        return LocalBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
