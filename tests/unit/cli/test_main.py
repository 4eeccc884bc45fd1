"""The ``pixserve`` entry point: client commands start without torch or Ray, ``--version``
a global ``--api-key`` that takes precedence over ``PIXSERVE_API_KEY``, and a closed
pipe ending a listing quietly."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from services.cli.main import main
from services.config import Settings


def test_client_commands_import_neither_torch_nor_ray() -> None:
    """``pixserve --help`` took 4 s when the CLI imported torch through the model store's
    converters; only ``up`` and the weight importers need the heavy packages."""
    code = ("import sys, deployments.cli; "
            "print(sorted(m for m in ('torch', 'ray', 'numpy') if m in sys.modules))")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)  # fmt: skip
    assert done.stdout.strip() == "[]"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"pixserve {metadata.version('pixserve')}"


def test_the_api_key_option_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str | None] = []

    def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
        def probe(args: argparse.Namespace, settings: Settings) -> int:
            seen.append(settings.api_key.get_secret_value() if settings.api_key else None)
            return 0

        commands.add_parser("probe").set_defaults(handler=probe)

    monkeypatch.setenv("PIXSERVE_API_KEY", "pxs_from_env")
    assert main(["--api-key", "pxs_from_option", "probe"], registrars=[register]) == 0
    assert main(["probe"], registrars=[register]) == 0
    monkeypatch.delenv("PIXSERVE_API_KEY")
    assert main(["probe"], registrars=[register]) == 0
    assert seen == ["pxs_from_option", "pxs_from_env", None]


def test_a_reader_that_leaves_early_ends_the_listing_quietly(tmp_path: Path) -> None:
    """``pixserve models list | head -1``: no traceback, SIGPIPE's exit status."""
    env = {**os.environ, "PIXSERVE_MODEL_STORE": str(tmp_path)}
    command = [sys.executable, "-c", "from deployments.cli import main; main()", "models",
               "list", "--no-verify"]  # fmt: skip
    listing = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert listing.stdout is not None and listing.stderr is not None
    listing.stdout.close()  # before the command has written a line
    assert listing.wait(timeout=120) == 128 + signal.SIGPIPE
    assert listing.stderr.read() == b""
