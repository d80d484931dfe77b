"""What every ``ibi`` subcommand prints its result with (cli.py and the *cli.py modules)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from .model import to_jsonable


def emit(args: argparse.Namespace, result: Any, text: Callable[[], object]) -> None:
    """With --json, the result as JSON; else ``text()`` prints it for people."""
    if getattr(args, "json", False):
        print(json.dumps(to_jsonable(result), indent=2))
    else:
        text()
