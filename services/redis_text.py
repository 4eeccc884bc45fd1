"""Redis answers come back as bytes; the stores work in text."""

from __future__ import annotations


def as_text(value: bytes | str) -> str:
    """Decode a Redis reply value (UTF-8), leaving text as it is."""
    return value.decode() if isinstance(value, bytes) else value
