"""The docs stay true: README's settings table is the Settings model, field for field."""

from __future__ import annotations

import re
from pathlib import Path

from services.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def settings_table() -> str:
    rows = ["| setting | default | meaning |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        rows.append(f"| `{name}` | `{field.default}` | {field.description} |")
    return "\n".join(rows)


def test_readme_settings_table_matches_settings() -> None:
    readme = (ROOT / "README.md").read_text()
    match = re.search(
        r"<!-- settings-table:[^>]*-->\n(.*?)\n<!-- /settings-table -->", readme, re.S
    )
    assert match, "README lost its settings table markers"
    assert match.group(1) == settings_table()


def test_every_setting_is_described() -> None:
    assert all(field.description for field in Settings.model_fields.values())
