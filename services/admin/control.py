"""Commands to every replica of a model deployment, over Redis pub/sub: report your
models, load one, unload one, change the memory mode. Serve routes a handle call to one
replica; an operator's "unload x4plus" must reach them all, including replicas on
other nodes. A memory mode set this way is also remembered in Redis, so replicas
started later (autoscaling) take it too.

The sender publishes on the deployment's channel; ``PUBLISH`` answers how many
replicas are subscribed, and each pushes its report onto the command's reply list,
which the sender reads until it has them all or its deadline passes.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Literal

import redis
from pydantic import BaseModel, Field
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.config import MemoryMode
from services.models.residency import ModelState

logger = logging.getLogger(__name__)
REPLY_TTL_S = 300
Action = Literal["status", "load", "unload", "memory_mode", "adopt"]


def channel(app: str, deployment: str) -> str:
    return f"pixserve:control:{app}:{deployment}"


def modes_key(app: str) -> str:
    """Hash: deployment -> the memory mode an operator set at run time."""
    return f"pixserve:memory-modes:{app}"


def remembered_mode(client: redis.Redis, app: str, deployment: str) -> MemoryMode | None:
    """The run-time memory mode of ``deployment``, if an operator set one."""
    value = client.hget(modes_key(app), deployment)
    text = value.decode() if isinstance(value, bytes) else value
    return text if text in ("low", "balanced", "high") else None  # type: ignore[return-value]


def reply_key(command_id: str) -> str:
    return f"pixserve:control:reply:{command_id}"


class ModelCommand(BaseModel):
    """What every replica of one deployment is asked to do."""

    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    action: Action
    model: str | None = None
    mode: MemoryMode | None = None  # memory_mode: the new one; None: back to the config's


class ReplicaReport(BaseModel):
    """One replica's answer: what it holds after the command, and what the command did."""

    replica: str
    deployment: str
    device: str = "cpu"
    memory_mode: str | None = None
    rss_bytes: int = 0  # the process's resident memory after the command
    gpu_memory: dict[str, float] = Field(default_factory=dict)
    models: list[ModelState] = Field(default_factory=list)
    changed: bool = False  # the command loaded or unloaded something here
    rss_before: int | None = None
    seconds: float = 0.0
    error: str | None = None  # why the command failed on this replica


class CommandListener:
    """A replica's side: a daemon thread subscribed to its deployment's channel, which
    runs each command through ``handle`` and pushes the report back."""

    def __init__(
        self, client: redis.Redis, topic: str, handle: Callable[[ModelCommand], ReplicaReport]
    ) -> None:
        self.client, self.topic, self.handle = client, topic, handle
        self.subscribed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pixserve-control", daemon=True)

    def start(self) -> CommandListener:
        self._thread.start()
        return self

    def _run(self) -> None:
        """Subscribe and serve commands; a lost connection is retried, backing off."""
        wait = 1.0
        while True:
            try:
                pubsub = self.client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self.topic)
                self.subscribed.set()
                wait = 1.0
                while True:
                    message = pubsub.get_message(timeout=5.0)
                    if message is not None and message.get("type") == "message":
                        self._serve(message["data"])
            except RedisError as exc:
                self.subscribed.clear()
                logger.warning("control channel lost (%s); resubscribing in %g s", exc, wait)
                time.sleep(wait)
                wait = min(wait * 2, 30.0)

    def _serve(self, data: bytes | str) -> None:
        try:
            command = ModelCommand.model_validate_json(data)
        except ValueError:
            logger.warning("ignored a malformed control message")
            return
        report = self.handle(command)
        key = reply_key(command.id)
        with self.client.pipeline() as pipe:
            pipe.rpush(key, report.model_dump_json())
            pipe.expire(key, REPLY_TTL_S)
            pipe.execute()


async def broadcast(
    client: Redis, topic: str, command: ModelCommand, timeout_s: float
) -> tuple[int, list[ReplicaReport]]:
    """Publish ``command`` and gather the replicas' reports: (how many replicas heard
    it, the reports that came within ``timeout_s``)."""
    listeners = int(await client.publish(topic, command.model_dump_json()))
    key, reports = reply_key(command.id), list[ReplicaReport]()
    deadline = time.monotonic() + timeout_s
    while len(reports) < listeners and (left := deadline - time.monotonic()) > 0:
        popped = await client.blpop([key], timeout=max(left, 0.01))
        if popped is not None:
            reports.append(ReplicaReport.model_validate_json(popped[1]))
    await client.delete(key)
    return listeners, reports
