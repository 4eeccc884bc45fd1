"""A small REST client for the CLI: turns error envelopes into ``ClientError``, and
retries what the server says a retry can fix (503, 429) after its ``Retry-After``."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

RETRY_STATUSES = (429, 503)  # the platform's "try again later" answers
RETRIES = 4  # then the error is the caller's to see
MAX_WAIT_S = 30.0  # however long a Retry-After asks for


class ClientError(Exception):
    """A failed call, carrying the server's error code and message when it sent one."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class UpscaleRequest:
    """Form fields of ``POST /v1/upscale`` (None fields are not sent)."""

    model: str | None = None
    scale: float | None = None
    width: int | None = None
    height: int | None = None
    output_format: str = "png"
    quality: int = 90

    def form(self) -> dict[str, str]:
        fields = {
            "model": self.model,
            "scale": self.scale,
            "width": self.width,
            "height": self.height,
            "format": self.output_format,
            "quality": self.quality,
        }
        return {key: str(value) for key, value in fields.items() if value is not None}


class PixserveClient:
    """Calls the pixserve REST API."""

    def __init__(
        self, base_url: str, timeout_s: float = 600.0, api_key: str | None = None,
        retries: int = RETRIES,
    ) -> None:  # fmt: skip
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=base_url, timeout=timeout_s, headers=headers)
        self.retries = retries

    def upscale(self, path: Path, request: UpscaleRequest) -> bytes:
        files = {"image": (path.name, path.read_bytes(), "application/octet-stream")}
        response = self._send("POST", "/v1/upscale", files=files, data=request.form())
        return response.content

    def get_json(self, path: str, allow_status: tuple[int, ...] = ()) -> Any:
        return self._send("GET", path, allow_status=allow_status).json()

    def submit_job(
        self,
        files: list[Path],
        urls: list[str],
        form: dict[str, str | list[str]],
        idempotency_key: str | None = None,
    ) -> Any:
        """``POST /v1/jobs``; the files are streamed from disk, not read into memory."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        data: dict[str, str | list[str]] = {**form, **({"urls": urls} if urls else {})}
        handles = [path.open("rb") for path in files]
        try:
            uploads = [("images", (path.name, handle, "application/octet-stream"))
                       for path, handle in zip(files, handles, strict=True)]  # fmt: skip
            return self._send("POST", "/v1/jobs", files=uploads or None, data=data,
                              headers=headers).json()  # fmt: skip
        finally:
            for handle in handles:
                handle.close()

    def delete_json(self, path: str) -> Any:
        return self._send("DELETE", path).json()

    def fetch(self, url: str) -> tuple[bytes, str]:
        """An output and its media type: the API's own URLs with this client (and its
        key), others (presigned S3 GETs, which refuse a second credential) without it."""
        own = str(self._http.base_url).rstrip("/")
        if url.startswith("/") or url.startswith(own + "/"):
            response = self._send("GET", url.removeprefix(own))
        else:
            try:
                response = httpx.get(url, timeout=self._http.timeout)
            except httpx.HTTPError as exc:
                raise ClientError("unreachable", f"cannot fetch {url}: {exc}") from exc
            if not response.is_success:
                raise ClientError(f"http_{response.status_code}", f"{url}: {response.text[:200]}")
        return response.content, response.headers.get("content-type", "")

    def _send(
        self, method: str, path: str, allow_status: tuple[int, ...] = (), **kwargs: Any
    ) -> httpx.Response:
        """One call; a 503 or 429 is tried again (up to ``retries`` times, after the
        server's Retry-After, else 1, 2, 4... s) when repeating the request is safe."""
        attempt = 0
        while True:
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.HTTPError as exc:
                message = f"cannot reach {self._http.base_url}: {exc}"
                raise ClientError("unreachable", message) from exc
            if response.is_success or response.status_code in allow_status:
                return response
            error = _error_from(response)
            if not (attempt < self.retries and response.status_code in RETRY_STATUSES
                    and _repeatable(method, path, kwargs)):  # fmt: skip
                raise error
            wait = _retry_after(response, attempt)
            print(f"pixserve: {error}; retrying in {wait:g} s", file=sys.stderr)
            time.sleep(wait)
            _rewind(kwargs.get("files"))
            attempt += 1


def _repeatable(method: str, path: str, kwargs: dict[str, Any]) -> bool:
    """Everything but a job submission without an Idempotency-Key (a repeat could make
    a second job); the other calls read, cancel, or compute the same answer again."""
    if method == "POST" and path.rstrip("/").endswith("/v1/jobs"):
        return "Idempotency-Key" in (kwargs.get("headers") or {})
    return True


def _retry_after(response: httpx.Response, attempt: int) -> float:
    """The server's Retry-After (seconds), else exponential backoff; at most MAX_WAIT_S."""
    asked = response.headers.get("Retry-After", "")
    wait = float(asked) if asked.isdigit() else float(2**attempt)
    return min(wait, MAX_WAIT_S)


def _rewind(files: Any) -> None:
    """Uploads streamed from open files start again from their beginning."""
    for _, (_, content, *_) in files or []:
        if hasattr(content, "seek"):
            content.seek(0)


def _error_from(response: httpx.Response) -> ClientError:
    try:
        error = response.json()["error"]
        return ClientError(str(error["code"]), str(error["message"]))
    except (ValueError, KeyError, TypeError):
        return ClientError(f"http_{response.status_code}", response.text[:200])
