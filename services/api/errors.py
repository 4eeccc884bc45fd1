"""Exception handlers: every failure leaves as ``{"error": {"code", "message", "type",
"param"}}``, OpenAI's error shape beside pixserve's code, with ``x-should-retry`` saying
whether the same request can succeed later (clients such as openai's honour it)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import BusyLoadingError, ReadOnlyError, RedisError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException

from services.errors import PixserveError
from services.telemetry.tracing import annotate

logger = logging.getLogger(__name__)
# Redis down, slow, loading or failing over: a retry can succeed
RETRYABLE_REDIS = (
    RedisConnectionError,
    RedisTimeoutError,
    BusyLoadingError,
    TryAgainError,
    ReadOnlyError,
)


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
# OpenAI's error types by status; the rest of 4xx is the request's fault
_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
          409: "conflict_error", 429: "rate_limit_error"}  # fmt: skip


class BodyTooLarge(HTTPException):
    """The body grew past the limit while it was read (raised from the ASGI receive:
    an HTTPException, so FastAPI's body parsing lets it through unchanged)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is over the limit of {limit} bytes")


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None,
    param: str | None = None,
) -> JSONResponse:  # fmt: skip
    """The envelope; only 429 and 503 are worth the same request again."""
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    retry = {"x-should-retry": "true" if status in (429, 503) else "false"}
    return JSONResponse(
        status_code=status,
        content={"error": {"code": code, "message": message, "type": kind, "param": param}},
        headers=retry | (headers or {}),
    )


def failed(
    request: Request, status: int, code: str, message: str,
    headers: dict[str, str] | None = None, param: str | None = None,
) -> JSONResponse:  # fmt: skip
    """The error response, with its code and message noted on the request for the
    recent-errors log (the request middleware records them)."""
    request.state.error = (code, message)
    return error_response(status, code, message, headers, param)


def install_error_handlers(app: FastAPI) -> None:
    """Map platform errors, validation errors and HTTP errors to the error envelope."""

    @app.exception_handler(PixserveError)
    async def _platform_error(request: Request, exc: PixserveError) -> JSONResponse:
        annotate(error_class=exc.code)
        return failed(request, exc.status, exc.code, exc.message, exc.headers, exc.param)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return failed(request, 422, "invalid_parameter", _describe(exc), param=_param(exc))

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        return failed(request, exc.status_code, code, str(exc.detail))

    @app.exception_handler(RedisError)
    async def _store_down(request: Request, exc: RedisError) -> JSONResponse:
        if not isinstance(exc, RETRYABLE_REDIS):  # a command Redis refused: our bug
            return await _unexpected(request, exc)
        logger.warning("job store unreachable: %r", exc)
        message = "the job store is unreachable; retry shortly"
        return failed(request, 503, "service_unavailable", message, {"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error", exc_info=exc)
        request.state.error = ("internal_error", type(exc).__name__)
        return error_response(500, "internal_error", "internal error; see the server log")


def _describe(exc: RequestValidationError) -> str:
    return "; ".join(f"{_field(error) or 'request'}: {error.get('msg', 'invalid')}"
                     for error in exc.errors())  # fmt: skip


def _param(exc: RequestValidationError) -> str | None:
    """The first field at fault, as OpenAI's ``param`` names it."""
    return next((field for error in exc.errors() if (field := _field(error))), None)


def _field(error: Any) -> str:
    location = [str(item) for item in error.get("loc", ()) if item not in ("body", "query")]
    return ".".join(location)
