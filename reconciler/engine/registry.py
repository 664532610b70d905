"""How an action kind plugs into the engine.

A handler has three parts, split by where they run:

* ``prepare`` (parent, read-only DB access) turns a claimed action into a JSON payload:
  the paths and parameters the work needs;
* ``run`` (a ``"module:function"`` name, imported and called in a child process) does the
  heavy work from the payload alone and returns a JSON result. The engine adds
  ``payload["attempt_id"]``, the attempt's lease token as 32 hex digits: every temporary
  file or directory the attempt writes is named with it
  (:func:`reconciler.naming.attempt_path`) and renamed into place when complete, so two
  attempts never write the same file and a dead attempt's leftovers are found by name;
* ``record`` (parent, inside the transaction that marks the action done, fenced by the lease
  token) writes the result into the database; a kind with nothing to write has none, and
  its completion is one statement.

``product_exists`` checks that a product recorded in the database is still there, so observe
trusts artifacts, not flags. ``child_env`` adds environment variables for the child only
(CASA's offline site configuration, thread limits).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from reconciler.config import Settings
from reconciler.errors import ConfigError
from reconciler.model import ActionKind, ClaimedAction

Payload = dict[str, Any]
Prepare = Callable[[Connection, ClaimedAction, Settings], Payload]
Record = Callable[[Connection, ClaimedAction, Payload, Payload], None]


@dataclass(frozen=True)
class ActionHandler:
    """Everything the engine needs to perform one kind of action."""

    kind: ActionKind
    run: str
    prepare: Prepare
    record: Record | None = None
    product_exists: Callable[[str], bool] | None = None
    timeout_seconds: float | None = None
    child_env: Callable[[Settings], dict[str, str]] | None = None


class ActionRegistry:
    """Handlers by kind; a kind is registered at most once."""

    def __init__(self, handlers: Iterable[ActionHandler]) -> None:
        self._handlers: dict[ActionKind, ActionHandler] = {}
        for handler in handlers:
            if handler.kind in self._handlers:
                raise ValueError(f"action kind {handler.kind} registered twice")
            self._handlers[handler.kind] = handler

    def __contains__(self, kind: object) -> bool:
        return kind in self._handlers

    def __iter__(self) -> Iterator[ActionHandler]:
        return iter(self._handlers.values())

    def __getitem__(self, kind: ActionKind) -> ActionHandler:
        return self._handlers[kind]

    @property
    def kinds(self) -> tuple[ActionKind, ...]:
        """The kinds this registry can perform."""
        return tuple(self._handlers)

    def product_exists(self, kind: ActionKind, path: str | None) -> bool:
        """Whether a recorded product is still there (trusted when the kind has no check)."""
        if path is None:
            return False
        handler = self._handlers.get(kind)
        if handler is None or handler.product_exists is None:
            return True
        return handler.product_exists(path)


def load_registry(settings: Settings) -> ActionRegistry:
    """The registry named by ``actions.registry`` (the product's unless configured).

    Raises
    ------
    ConfigError
        When the name does not import, or what it returns is no :class:`ActionRegistry`.
    """
    module_name, _, function = settings.actions.registry.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), function)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"actions.registry {settings.actions.registry!r}: {exc}") from exc
    registry = factory()
    if not isinstance(registry, ActionRegistry):
        raise ConfigError(f"actions.registry {settings.actions.registry!r} is no ActionRegistry")
    return registry
