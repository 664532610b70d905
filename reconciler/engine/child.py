"""Entry point of the child process that performs one action.

``python -m reconciler.engine.child SPEC.json``: the spec names the function
(``"module:function"``), its payload, and where to write the outcome. The outcome file is
written atomically and holds either ``{"ok": result}`` or ``{"error": {...}}``; the exit
status is only a fallback for crashes that leave no file.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import traceback
from datetime import datetime
from pathlib import Path
from typing import Any

from reconciler.errors import PermanentError, TemporaryError
from reconciler.io.processes import die_with_parent

#: Exit status after SIGTERM, as a shell reports it.
_TERMINATED = 128 + signal.SIGTERM


def load_function(name: str) -> Any:
    """Import ``"package.module:function"``."""
    module_name, _, attribute = name.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


def _plain(value: object) -> str:
    """JSON for the values results commonly hold besides plain data."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"a result holds {type(value).__name__}, which is not plain data")


def _write(path: Path, outcome: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(outcome, default=_plain))
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    """Run the action described by the spec file ``argv[0]``; return the exit status."""
    spec = json.loads(Path(argv[0]).read_text())
    die_with_parent(spec["parent_pid"])
    # SIGTERM (timeout, lease lost, service stopping) unwinds the action, so its `finally`
    # blocks remove what it was writing; the parent sends SIGKILL if that takes too long.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(_TERMINATED))
    outcome_path = Path(spec["outcome"])
    try:
        result = load_function(spec["function"])(spec["payload"])
    except PermanentError as exc:
        _write(outcome_path, {"error": {"kind": "permanent", "message": str(exc)}})
        return 0
    except TemporaryError as exc:
        error = {"kind": "temporary", "message": str(exc), "delay": exc.delay_seconds}
        _write(outcome_path, {"error": error})
        return 0
    except Exception as exc:  # any other failure is reported, then retried
        trace = traceback.format_exc(limit=5)
        message = f"{type(exc).__name__}: {exc}"
        _write(outcome_path, {"error": {"kind": "crashed", "message": message, "trace": trace}})
        return 0
    try:
        _write(outcome_path, {"ok": result if result is not None else {}})
    except TypeError as exc:
        _write(outcome_path, {"error": {"kind": "permanent", "message": str(exc)}})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
