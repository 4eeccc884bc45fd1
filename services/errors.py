"""Errors the platform raises on purpose, each with a stable code and an HTTP status.

The API turns any ``PixserveError`` into ``{"error": {"code", "message", "type",
"param"}}`` (OpenAI's error shape, which its clients read) with its status, so a bad
input is always a 4xx that names the problem, never a 500.
"""

from __future__ import annotations


class PixserveError(Exception):
    """Base of every expected failure; ``code`` is machine-readable, message human."""

    code = "error"
    status = 500
    retry_after_s = 5  # a 503 says when to try again

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param  # the request field at fault, when one is

    def __reduce__(self) -> tuple[type[PixserveError], tuple[str, str | None]]:
        return (type(self), (self.message, self.param))

    @property
    def headers(self) -> dict[str, str]:
        """Extra response headers the status calls for (WWW-Authenticate, Retry-After)."""
        return {"Retry-After": str(self.retry_after_s)} if self.status == 503 else {}


class Unauthorized(PixserveError):
    """No API key, an unknown one, or a revoked one."""

    code = "unauthorized"
    status = 401

    @property
    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="pixserve"'}


class Forbidden(PixserveError):
    """The key is valid but may not do this (operator routes need an admin key)."""

    code = "forbidden"
    status = 403


class RateLimited(PixserveError):
    """The key's token bucket is empty; ``retry_after_s`` says when one token is back."""

    code = "rate_limited"
    status = 429

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def __reduce__(self) -> tuple[type[RateLimited], tuple[str, int]]:  # type: ignore[override]
        return (type(self), (self.message, self.retry_after_s))

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class InvalidImage(PixserveError):
    """The bytes are not a decodable image (garbage, truncated, zero-size)."""

    code = "invalid_image"
    status = 400


class UnsupportedFormat(PixserveError):
    """A recognised file type the platform does not process (SVG, PDF, ...)."""

    code = "unsupported_format"
    status = 415


class PayloadTooLarge(PixserveError):
    """The upload is over the byte limit."""

    code = "payload_too_large"
    status = 413


class ImageTooLarge(PixserveError):
    """The image (or the requested output) is over a pixel or side limit."""

    code = "image_too_large"
    status = 413


class InvalidParameter(PixserveError):
    """A request parameter is out of range or inconsistent."""

    code = "invalid_parameter"
    status = 422


class UnknownModel(PixserveError):
    """The named model is not in the manifest."""

    code = "unknown_model"
    status = 422


class ModelNotReady(PixserveError):
    """A known model whose weights are not loaded (missing from the store, still loading)."""

    code = "model_not_ready"
    status = 503


class NotConfigured(PixserveError):
    """The platform is not set up to serve this (no model of the kind is configured):
    the operator's fix, not one a retry brings, so 501 rather than 503."""

    code = "not_configured"
    status = 501


class ChecksumMismatch(PixserveError):
    """A weight file's sha256 differs from the manifest; it is refused, never loaded."""

    code = "checksum_mismatch"
    status = 503


class EngineOutOfMemory(PixserveError):
    """CUDA ran out of memory even at a tile batch of one."""

    code = "out_of_memory"
    status = 503


class ServiceUnavailable(PixserveError):
    """A deployment the request needs is not reachable."""

    code = "service_unavailable"
    status = 503


class Conflict(PixserveError):
    """The request cannot be done in the resource's current state or kind."""

    code = "conflict"
    status = 409


class InternalError(PixserveError):
    """A fault of the platform itself (a bug): not the caller's, and not one a retry
    fixes. The message says where, never how (the server log has the details)."""

    code = "internal_error"
    status = 500


class DeadlineExceeded(ServiceUnavailable):
    """A sync request ran past ``request_deadline_s`` and was cancelled (busy platform)."""

    code = "deadline_exceeded"
