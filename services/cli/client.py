"""A small REST client for the CLI: turns error envelopes into ``ClientError``, and
retries what the server says a retry can fix (503, 429) after its ``Retry-After``."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
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


class PixserveClient:
    """Calls the pixserve REST API."""

    def __init__(
        self, base_url: str, timeout_s: float = 600.0, api_key: str | None = None,
        retries: int = RETRIES,
    ) -> None:  # fmt: skip
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=base_url, timeout=timeout_s, headers=headers)
        self.retries = retries

    def run(self, path: str, source: Path, form: dict[str, Any]) -> tuple[bytes, str]:
        """A sync task on one file: the output and its media type."""
        files = {"image": (source.name, source.read_bytes(), "application/octet-stream")}
        response = self._send("POST", path, files=files, data=form)
        return response.content, _media_type(response)

    def generate(
        self, form: dict[str, Any], image: Path | None = None
    ) -> tuple[bytes, str, dict[str, str]]:
        """``POST /v1/generate``: the image, its media type and the response headers
        (the seed, the safety checker's verdict)."""
        files = {"image": (image.name, image.read_bytes(), "application/octet-stream")} if (
            image is not None) else None  # fmt: skip
        response = self._send("POST", "/v1/generate", files=files, data=form)
        return response.content, _media_type(response), dict(response.headers)

    def post_form(self, path: str, form: dict[str, Any], files: list[Path] | None = None,
                  field: str = "images") -> Any:  # fmt: skip
        """A form (``files`` as ``field``) posted to ``path``; the JSON answer."""
        uploads = [(field, (file.name, file.read_bytes(), "application/octet-stream"))
                   for file in files or []]  # fmt: skip
        return self._send("POST", path, files=uploads or None, data=form).json()

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

    def events(self, job_id: str, reconnects: int = 5) -> Iterator[tuple[str, Any]]:
        """A job's server-sent events as (type, data) up to its ``completed`` event; a
        dropped connection resumes after the last event seen (``Last-Event-ID``)."""
        last_id: str | None = None
        for _ in range(reconnects + 1):
            headers = {"Last-Event-ID": last_id} if last_id else {}
            try:
                with self._http.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers,
                                       timeout=httpx.Timeout(30, read=60)) as response:  # fmt: skip
                    if not response.is_success:
                        response.read()
                        raise _error_from(response)
                    for event_id, kind, data in _parse_events(response.iter_lines()):
                        last_id = event_id or last_id
                        yield kind, data
                        if kind == "completed":
                            return
            except httpx.HTTPError as exc:
                print(f"pixserve: event stream dropped ({exc}); resuming", file=sys.stderr)
                time.sleep(1)
        raise ClientError("unreachable", f"lost the event stream of job {job_id}")

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


def _parse_events(lines: Iterator[str]) -> Iterator[tuple[str | None, str, Any]]:
    """Server-sent events as (id, type, JSON data); comments (pings) are skipped."""
    event_id, kind, data = None, "message", ""
    for line in lines:
        if not line:
            if data:
                yield event_id, kind, json.loads(data)
            event_id, kind, data = None, "message", ""
        elif line.startswith("id:"):
            event_id = line[3:].strip()
        elif line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("data:"):
            data += line[5:].strip()


def _media_type(response: httpx.Response) -> str:
    return str(response.headers.get("content-type", "")).partition(";")[0].strip()


def _error_from(response: httpx.Response) -> ClientError:
    try:
        error = response.json()["error"]
        return ClientError(str(error["code"]), str(error["message"]))
    except (ValueError, KeyError, TypeError):
        return ClientError(f"http_{response.status_code}", response.text[:200])
