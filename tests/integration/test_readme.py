"""The README's curl examples run as written against the real service."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]


def readme_curl_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    joined = "\n".join(block.replace("\\\n", " ") for block in blocks)
    return [line.strip() for line in joined.splitlines() if line.strip().startswith("curl ")]


def test_readme_has_curl_examples() -> None:
    assert len(readme_curl_commands()) >= 4


@pytest.mark.parametrize("command", readme_curl_commands())
def test_readme_curl_example(command: str, serve_url: str, tmp_path: Path) -> None:
    command = command.replace("http://127.0.0.1:8000", serve_url)
    command = command.replace("@samples/", f"@{ROOT}/samples/")
    result = subprocess.run(
        shlex.split(command), cwd=tmp_path, capture_output=True, timeout=240, check=False
    )
    assert result.returncode == 0, result.stderr.decode()
