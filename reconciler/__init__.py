"""DSA-110 continuum mosaic reconciler.

``from reconciler import MosaicOrchestrator`` is the Python API (:mod:`reconciler.api`);
it is imported on first use, so importing a submodule stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reconciler.api import MosaicOrchestrator

__all__ = ["MosaicOrchestrator"]


def __getattr__(name: str) -> Any:
    if name == "MosaicOrchestrator":
        from reconciler.api import MosaicOrchestrator

        return MosaicOrchestrator
    raise AttributeError(f"module 'reconciler' has no attribute {name!r}")
