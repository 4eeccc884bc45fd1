"""Replica logs as Serve writes its own: the platform's loggers (``services.*``,
``deployments.*``) write through the ``ray.serve`` logger's handlers, so with
``logging_config.encoding: JSON`` every line is one JSON object carrying the request id,
deployment and replica (Serve's filters) and the trace, job and item ids
(services/telemetry/logs.py)."""

from __future__ import annotations

import logging

from services.telemetry.logs import install_record_context

PLATFORM_LOGGERS = ("services", "deployments")


def structured_logs() -> None:
    """Call once in each replica's constructor (after Serve configured its logger)."""
    install_record_context()
    serve_logger = logging.getLogger("ray.serve")
    for name in PLATFORM_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers = list(serve_logger.handlers)
        logger.setLevel(serve_logger.level or logging.INFO)
        logger.propagate = False
