"""JSON that a client sends inside a form field (preset ``params``, a task's object
fields), parsed strictly: the error names the field and never reaches a 500.

Python's ``json`` accepts what a service should not: ``NaN`` and ``Infinity``, numbers
like ``1e400`` that overflow to infinity, and nesting deep enough to hit the recursion
limit. Each is refused here with a 422 that says which.
"""

from __future__ import annotations

import json
import math
from typing import Any

from services.errors import InvalidParameter

MAX_DEPTH = 8  # a task's parameters are flat objects of objects; this leaves room
MAX_CHARS = 64 * 1024


def parse_object(name: str, text: str, example: str, max_chars: int = MAX_CHARS) -> dict[str, Any]:
    """``text`` as a JSON object, or a 422 naming ``name`` and showing ``example``."""
    if len(text) > max_chars:
        raise InvalidParameter(f"{name}: {len(text)} characters of JSON; the limit is {max_chars}")
    try:
        value = json.loads(text, parse_float=_finite, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise InvalidParameter(f"{name}: not JSON: {exc}") from None
    except RecursionError:
        raise InvalidParameter(f"{name}: nested more than {MAX_DEPTH} levels deep") from None
    except _NotFinite as exc:
        raise InvalidParameter(f"{name}: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidParameter(f"{name}: must be a JSON object, e.g. {example}")
    if _depth(value) > MAX_DEPTH:
        raise InvalidParameter(f"{name}: nested more than {MAX_DEPTH} levels deep")
    return value


class _NotFinite(ValueError):
    pass


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotFinite(f"the number {text[:40]} is out of range")
    return value


def _no_constant(text: str) -> float:
    raise _NotFinite(f"{text} is not a number JSON allows")


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(item) for item in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(item) for item in value), default=0)
    return 0
