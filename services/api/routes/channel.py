"""``GET /v1/ws``: one WebSocket per client for live results: its jobs' events (the
same as ``/v1/jobs/{id}/events``) plus previews of the work in progress, and job
submission over the same channel.

Protocol (JSON text frames; ``docs/api.md`` has examples):

- auth: ``Authorization: Bearer KEY`` on the upgrade, or the subprotocols
  ``["pixserve", "bearer.KEY"]`` (browsers cannot set headers; the server answers
  ``pixserve``, never the key), or a first message ``{"type": "auth", "key": KEY}``.
  The server says ``{"type": "ready"}``; a bad key is an ``error`` frame, then close
  4401 (4429 when rate limited).
- ``{"type": "subscribe", "job_id": ID, "last_event_id": ID?}``: the job's events from
  after ``last_event_id`` (resume, as SSE's ``Last-Event-ID``) as ``{"type": "event",
  "job_id", "id", "event", "data"}``, ending with ``event: completed``. Another
  tenant's job is ``job_not_found``, as over REST.
- ``{"type": "submit", "request_id": ANY, "job": {...}}``: the JSON body of ``POST
  /v1/jobs``; answered ``{"type": "submitted", "request_id", "job"}`` and subscribed.
- ``{"type": "unsubscribe", "job_id": ID}``, ``{"type": "ping"}`` (answered ``pong``).
- previews: ``{"type": "preview", "job_id", "index", "step", "steps", "seq", "image":
  "data:image/jpeg;base64,..."}`` while a watched item runs: an upscale's canvas
  stitched so far, a generation's latents. Flow control: at most ``PREVIEW_CREDITS``
  previews unacknowledged (``{"type": "ack", "seq": N}`` acknowledges up to N); a
  slow client gets fewer previews (the newest each time), never a growing buffer.
  Events are never dropped: the server reads the job's stream only as fast as it
  sends.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import re
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, ValidationError
from redis.exceptions import RedisError

from services.api.routes.jobs import FollowedJob, JobEvent, json_job_request
from services.auth.guard import KeyGuard
from services.errors import InvalidParameter, PixserveError, RateLimited, ServiceUnavailable
from services.jobs.progress import live_preview_key, watchers_key
from services.jobs.service import JobService
from services.jobs.store import JOB_ID_PATTERN, STREAM_ID_PATTERN

logger = logging.getLogger(__name__)
router = APIRouter(tags=["jobs"])
PREVIEW_CREDITS = 2  # previews in flight before the client's ack
WATCH_TTL_S = 30  # a job's watchers key lives this long past the last refresh
AUTH_TIMEOUT_S = 10.0
SUBPROTOCOL = "pixserve"
_JOB_ID, _STREAM_ID = re.compile(JOB_ID_PATTERN), re.compile(STREAM_ID_PATTERN)


class ClientMessage(BaseModel):
    """What a client sends; which fields matter depends on ``type``."""

    type: str
    key: str | None = None
    job_id: str | None = None
    last_event_id: str | None = None
    request_id: Any = None
    job: dict[str, Any] | None = None
    seq: int | None = None


@router.websocket("/v1/ws")
async def live_channel(websocket: WebSocket) -> None:
    """Live job events and previews over one WebSocket (see the module's protocol)."""
    offered = websocket.scope.get("subprotocols") or []
    await websocket.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
    session = LiveSession(websocket)
    try:
        await session.run(offered)
    except WebSocketDisconnect:
        pass
    finally:
        await session.close()


class LiveSession:
    """One connection: its owner, its subscriptions (a task each) and preview credits."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        state = websocket.app.state
        self.jobs: JobService | None = getattr(state, "jobs", None)
        self.guard: KeyGuard | None = getattr(state, "key_guard", None)
        self.owner = "anonymous"
        self.followed: dict[str, asyncio.Task[None]] = {}
        self.send_lock = asyncio.Lock()
        self.sent_previews = 0  # the last preview's seq
        self.acked = 0
        self.credit = asyncio.Event()
        self.credit.set()

    async def run(self, offered: list[str]) -> None:
        if not await self._authenticate(offered):
            return
        if self.jobs is None:
            await self._fail(ServiceUnavailable("live results need the job store (Redis)"))
            await self.websocket.close(1013)
            return
        await self.send({"type": "ready"})
        while True:
            raw = await self.receive()
            try:
                message = ClientMessage.model_validate(raw)
                await self._handle(message)
            except ValidationError:
                await self._fail(InvalidParameter("a message is a JSON object with a string "
                                                  "'type'", param="type"))  # fmt: skip
            except PixserveError as exc:
                request_id = raw.get("request_id") if isinstance(raw, dict) else None
                await self._fail(exc, request_id=request_id)

    async def receive(self) -> Any:
        """The next message as JSON; text that is not JSON, or a binary frame, is None
        (refused by the message check, the connection kept)."""
        message = await self.websocket.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        text = message.get("text")
        if text is None:
            return None
        try:
            return json.loads(text)
        except ValueError:
            return None

    async def _authenticate(self, offered: list[str]) -> bool:
        """The key from the upgrade's header, a ``bearer.KEY`` subprotocol, or a first
        ``auth`` message; open when keys are off."""
        if self.guard is None:
            return True
        header = self.websocket.headers.get("authorization")
        bearer = next((p.removeprefix("bearer.") for p in offered if p.startswith("bearer.")),
                      None)  # fmt: skip
        if header is None and bearer is not None:
            header = f"Bearer {bearer}"
        if header is None:
            try:
                raw = await asyncio.wait_for(self.receive(), AUTH_TIMEOUT_S)
                message = ClientMessage.model_validate(raw)
                key = message.key if message.type == "auth" else None
            except (TimeoutError, ValidationError):
                key = None
            header = f"Bearer {key}" if key else None
        try:
            api_key = await self.guard.check(header)
        except PixserveError as exc:
            await self._fail(exc)
            await self.websocket.close(4429 if isinstance(exc, RateLimited) else 4401)
            return False
        self.owner = api_key.prefix
        return True

    async def _handle(self, message: ClientMessage) -> None:
        assert self.jobs is not None
        if message.type == "ping":
            await self.send({"type": "pong"})
        elif message.type == "ack":
            self.acked = max(self.acked, message.seq or 0)
            if self.sent_previews - self.acked < PREVIEW_CREDITS:
                self.credit.set()
        elif message.type == "subscribe":
            await self._subscribe(_job_id(message), message.last_event_id)
        elif message.type == "unsubscribe":
            task = self.followed.pop(_job_id(message), None)
            if task is not None:
                task.cancel()
        elif message.type == "submit":
            if message.job is None:
                raise InvalidParameter("submit: 'job' is the JSON body of POST /v1/jobs",
                                       param="job")  # fmt: skip
            request = json_job_request(dict(message.job), self.jobs.settings)
            job = await self.jobs.submit(self.owner, request, None, self._base_url(),
                                         watch_s=WATCH_TTL_S)  # fmt: skip
            await self.send({"type": "submitted", "request_id": message.request_id,
                             "job": job.public().model_dump(mode="json")})  # fmt: skip
            await self._subscribe(job.id, None)
        elif message.type != "auth":  # a late auth message is harmless
            raise InvalidParameter(f"unknown message type '{message.type}': subscribe, "
                                   "unsubscribe, submit, ack, ping", param="type")  # fmt: skip

    async def _subscribe(self, job_id: str, after: str | None) -> None:
        """Follow the job (found, and the caller's, or a ``job_not_found``)."""
        assert self.jobs is not None
        if after is not None and not _STREAM_ID.fullmatch(after):
            raise InvalidParameter("last_event_id: an id this channel sent (1-0)",
                                   param="last_event_id")  # fmt: skip
        job = await self.jobs.store.read(job_id, self.owner, with_items=False)
        previous = self.followed.pop(job_id, None)
        if previous is not None:
            previous.cancel()
        followed = FollowedJob(self.jobs, job, self.owner, self._base_url(), after or "0-0")
        self.followed[job_id] = asyncio.create_task(self._follow(followed))

    async def _follow(self, followed: FollowedJob) -> None:
        """Send the job's events as read, previews coalesced to the newest per item;
        the job's watchers key alive meanwhile."""
        assert self.jobs is not None
        job_id = followed.job.id
        watching = asyncio.create_task(self._keep_watching(job_id))
        try:
            async for batch in followed.batches():
                for event in _coalesced(batch):
                    if event.kind == "preview":
                        await self._send_preview(job_id, event)
                    else:
                        frame = {"type": "event", "job_id": job_id, "id": event.id,
                                 "event": event.kind, "data": _json(event.data)}  # fmt: skip
                        await self.send(frame)
        except PixserveError as exc:
            await self._fail(exc, job_id=job_id)
        except RedisError:  # the stream is gone for now: the client subscribes again
            outage = ServiceUnavailable("the job store is unreachable; subscribe again shortly")
            await self._fail(outage, job_id=job_id)
        except (WebSocketDisconnect, RuntimeError):  # the client went away mid-send
            pass
        finally:
            watching.cancel()
            if self.followed.get(job_id) is asyncio.current_task():
                del self.followed[job_id]

    async def _keep_watching(self, job_id: str) -> None:
        assert self.jobs is not None
        redis = self.jobs.store.redis
        while True:
            await redis.set(watchers_key(job_id), 1, ex=WATCH_TTL_S)
            await asyncio.sleep(WATCH_TTL_S / 3)

    async def _send_preview(self, job_id: str, event: JobEvent) -> None:
        """The item's newest preview, if the client has a credit now (else skipped: a
        newer one follows)."""
        assert self.jobs is not None
        if self.sent_previews - self.acked >= PREVIEW_CREDITS:
            return
        index = event.data.get("index")
        jpeg = await self.jobs.store.redis.get(live_preview_key(job_id, index))
        if not isinstance(jpeg, bytes):
            return
        self.sent_previews += 1
        await self.send({
            "type": "preview", "job_id": job_id, "index": index,
            "step": event.data.get("step"), "steps": event.data.get("steps"),
            "seq": self.sent_previews,
            "image": "data:image/jpeg;base64," + base64.b64encode(jpeg).decode(),
        })  # fmt: skip

    async def send(self, frame: dict[str, Any]) -> None:
        async with self.send_lock:
            await self.websocket.send_json(frame)

    async def _fail(self, exc: PixserveError, **where: Any) -> None:
        error = {"code": exc.code, "message": exc.message, "param": exc.param}
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            await self.send({"type": "error", **where, "error": error})

    def _base_url(self) -> str:
        return str(self.websocket.base_url).replace("ws://", "http://", 1).replace(
            "wss://", "https://", 1)  # fmt: skip

    async def close(self) -> None:
        for task in self.followed.values():
            task.cancel()
        await asyncio.gather(*self.followed.values(), return_exceptions=True)


def _coalesced(batch: list[JobEvent]) -> list[JobEvent]:
    """The batch with only the last preview event of each item."""
    last = {event.data.get("index"): event for event in batch if event.kind == "preview"}
    kept = set(map(id, last.values()))
    return [event for event in batch if event.kind != "preview" or id(event) in kept]


def _job_id(message: ClientMessage) -> str:
    if not message.job_id or not _JOB_ID.fullmatch(message.job_id):
        raise InvalidParameter(f"{message.type}: 'job_id' names a job (32 hex digits)",
                               param="job_id")  # fmt: skip
    return message.job_id


def _json(data: Any) -> Any:
    return data.model_dump(mode="json") if isinstance(data, BaseModel) else data
