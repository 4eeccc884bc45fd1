"""The ``pixserve`` command line: parser, dispatch, and error reporting.

Commands that need Ray (``up``) are registered by ``deployments.cli``; everything here
is a REST client or works on the model store directly.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from pydantic import ValidationError

from services.cli import jobs, keys, models, upscale
from services.cli.client import ClientError
from services.config import Settings
from services.errors import PixserveError

Registrar = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


def build_parser(registrars: Sequence[Registrar] = ()) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pixserve", description="Image upscaling and restoration on Ray Serve."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in (*registrars, upscale.register, jobs.register, models.register, keys.register):
        register(commands)
    return parser


def main(argv: Sequence[str] | None = None, registrars: Sequence[Registrar] = ()) -> int:
    """Parse, run, and turn expected failures into one ``error:`` line and exit code 1."""
    args = build_parser(registrars).parse_args(argv)
    try:
        settings = Settings()
        code: int = args.handler(args, settings)
    except (PixserveError, ClientError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ValidationError as exc:
        print(f"error: invalid PIXSERVE_* setting: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code
