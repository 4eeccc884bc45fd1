"""The ``pixserve`` command line: parser, dispatch, and error reporting.

Commands that need Ray (``up``) are registered by ``deployments.cli``; everything here
is a REST client or works on the model store directly.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable, Sequence
from importlib import metadata

from pydantic import ValidationError

from services.cli import cluster, evaluate, jobs, keys, models, status, tasks
from services.cli.client import ClientError
from services.config import Settings
from services.errors import PixserveError

Registrar = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


def build_parser(registrars: Sequence[Registrar] = ()) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pixserve", description="Image upscaling and restoration on Ray Serve."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("--api-key", help="API key, sent as a bearer token (default: the "
                        "PIXSERVE_API_KEY environment variable)")  # fmt: skip
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in (
        *registrars,
        tasks.register,
        status.register,
        jobs.register,
        models.register,
        evaluate.register,
        keys.register,
        cluster.register,
    ):
        register(commands)
    return parser


def _version() -> str:
    """The installed distribution's version (a source tree not installed has none)."""
    try:
        return metadata.version("pixserve")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def main(argv: Sequence[str] | None = None, registrars: Sequence[Registrar] = ()) -> int:
    """Parse, run, and turn expected failures into one ``error:`` line and exit code 1."""
    args = build_parser(registrars).parse_args(argv)
    try:
        settings = Settings(**({"api_key": args.api_key} if args.api_key else {}))
        code: int = args.handler(args, settings)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
    except (PixserveError, ClientError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ValidationError as exc:
        print(f"error: invalid PIXSERVE_* setting: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader left (`| head`): stop quietly, as cat does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error
        return 128 + signal.SIGPIPE
    return code
