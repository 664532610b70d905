"""The pipeline actions, one module per kind, registered in one place: :func:`product_registry`.

How an action is executed, supervised and fenced is the engine's business
(:mod:`reconciler.engine`); a module here says only what its action does.
"""

from __future__ import annotations

from reconciler.engine.registry import ActionRegistry


def product_registry() -> ActionRegistry:
    """The actions the product performs; the only place real handlers are registered."""
    from reconciler.steps import (
        apply,
        assess,
        catalogue,
        convert,
        image,
        mosaic,
        publish,
        solve,
    )

    return ActionRegistry(
        [
            convert.HANDLER,
            solve.HANDLER,
            apply.HANDLER,
            image.HANDLER,
            mosaic.HANDLER,
            catalogue.HANDLER,
            assess.HANDLER,
            publish.HANDLER,
        ]
    )
