"""Generate the values table of helm/pixserve/README.md from values.yaml's ``# --`` comments.

python scripts/chart_readme.py          # rewrite the table in the README
python scripts/chart_readme.py --check  # exit 1 if the README is out of date
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[1] / "helm" / "pixserve"
_KEY = re.compile(r"^(\s*)([A-Za-z0-9_.\-]+):")
_MARKERS = re.compile(r"(<!-- values-table -->\n).*?(\n<!-- /values-table -->)", re.S)


def documented_keys(text: str) -> list[tuple[str, str]]:
    """(dotted key, description) for every key preceded by a ``# --`` comment (and the
    plain comment lines that continue it)."""
    stack: list[tuple[int, str]] = []
    pending: str | None = None
    found = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# -- "):
            pending = stripped[5:]
            continue
        if pending is not None and stripped.startswith("# "):
            pending += " " + stripped[2:]
            continue
        match = _KEY.match(line)
        if not match:
            continue
        indent, key = len(match.group(1)), match.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, key))
        if pending is not None:
            found.append((".".join(k for _, k in stack), pending))
            pending = None
    return found


def lookup(values: dict[str, Any], dotted: str) -> Any:
    node: Any = values
    for part in dotted.split("."):
        node = node[part]
    return node


def table() -> str:
    text = (CHART / "values.yaml").read_text()
    values = yaml.safe_load(text)
    rows = ["| key | default | description |", "| --- | --- | --- |"]
    for key, description in documented_keys(text):
        default = json.dumps(lookup(values, key), separators=(",", ":"))
        rows.append(f"| `{key}` | `{default}` | {description} |")
    return "\n".join(rows)


def main() -> int:
    readme = CHART / "README.md"
    current = readme.read_text()
    updated = _MARKERS.sub(lambda m: m.group(1) + table() + m.group(2), current)
    if "--check" in sys.argv:
        if updated != current:
            print("helm/pixserve/README.md is out of date: run scripts/chart_readme.py")
            return 1
        return 0
    readme.write_text(updated)
    return 0


if __name__ == "__main__":
    sys.exit(main())
