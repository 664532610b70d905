"""Pipeline actions, one module per kind, registered in one place: :func:`product_registry`."""

from __future__ import annotations

import importlib

from reconciler.config import Settings
from reconciler.errors import ConfigError
from reconciler.steps.registry import ActionHandler, ActionRegistry


def product_registry() -> ActionRegistry:
    """The actions the product performs; the only place real handlers are registered."""
    from reconciler.steps import calibrate, convert, image, mosaic, publish

    return ActionRegistry(
        [
            convert.HANDLER,
            calibrate.SOLVE,
            calibrate.APPLY,
            image.HANDLER,
            mosaic.HANDLER,
            publish.HANDLER,
        ]
    )


def load_registry(settings: Settings) -> ActionRegistry:
    """The registry named by ``actions.registry`` (the product's unless configured)."""
    module_name, _, function = settings.actions.registry.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), function)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"actions.registry {settings.actions.registry!r}: {exc}") from exc
    registry = factory()
    if not isinstance(registry, ActionRegistry):
        raise ConfigError(f"actions.registry {settings.actions.registry!r} is no ActionRegistry")
    return registry


__all__ = ["ActionHandler", "ActionRegistry", "load_registry", "product_registry"]
