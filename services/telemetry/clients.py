"""Client spans for the platform's Redis and object-store calls.

Only inside a recording span (a request or a job item): the dispatcher's idle polling
and the background flushers would otherwise start a new trace every second. The
names follow OpenTelemetry's database conventions (``redis HSET``, ``db.system``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import Any, ParamSpec, TypeVar

from opentelemetry import trace
from opentelemetry.trace import SpanKind
from opentelemetry.util.types import AttributeValue
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from services.redis_text import as_text
from services.storage.base import Area, ObjectStore
from services.telemetry.tracing import tracer

P = ParamSpec("P")
T = TypeVar("T")


@contextmanager
def client_span(name: str, **attributes: AttributeValue) -> Iterator[None]:
    """A CLIENT span under the current one; nothing when no span is recording."""
    if not trace.get_current_span().is_recording():
        yield
        return
    with tracer.start_as_current_span(name, kind=SpanKind.CLIENT, attributes=attributes):
        yield


class TracedRedis(Redis):
    """``redis.asyncio.Redis`` with one span per command, and one per pipeline."""

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        command = as_text(args[0]).upper() if args else "?"
        with client_span(f"redis {command}", **_redis_attributes(self, command, args)):
            return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        return TracedPipeline(self.connection_pool, self.response_callbacks, transaction,
                              shard_hint)  # fmt: skip


class TracedPipeline(Pipeline):
    """A pipeline whose ``execute`` is one span listing the commands it sent."""

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        commands = [as_text(args[0]).upper() for args, _ in self.command_stack if args]
        name = "redis MULTI" if self.is_transaction else "redis PIPELINE"
        attributes = _redis_attributes(self, name.split()[1], ())
        attributes["db.redis.commands"] = ",".join(commands)[:500]
        with client_span(name, **attributes):
            return await super().execute(raise_on_error)


def _redis_attributes(client: Redis, command: str, args: tuple[Any, ...]) -> dict[str, Any]:
    kwargs = client.connection_pool.connection_kwargs
    attributes: dict[str, Any] = {
        "db.system": "redis",
        "db.operation": command,
        "db.redis.database_index": int(kwargs.get("db", 0)),
        "server.address": str(kwargs.get("host", "")),
    }
    if command in ("EVALSHA", "EVAL") and len(args) > 3:
        attributes["db.redis.key"] = as_text(args[3])[:200]  # the script's first key
    elif len(args) > 1 and isinstance(args[1], str | bytes):
        attributes["db.redis.key"] = as_text(args[1])[:200]
    return attributes


class TracedObjectStore:
    """An ``ObjectStore`` whose every call is a span naming the backend, area and key
    (S3 calls are what an operator looks for when a job item is slow)."""

    def __init__(self, inner: ObjectStore, backend: str) -> None:
        self.inner, self.backend = inner, backend
        self.put = self._traced("put", inner.put)
        self.get = self._traced("get", inner.get)
        self.exists = self._traced("exists", inner.exists)
        self.delete = self._traced("delete", inner.delete)
        self.url = self._traced("url", inner.url)

    def apply_retention(self, hours: int) -> None:
        self.inner.apply_retention(hours)

    def input_key(self, uri: str) -> str:
        return self.inner.input_key(uri)

    def _traced(self, operation: str, call: Callable[P, T]) -> Callable[P, T]:
        @wraps(call)
        def traced(*args: P.args, **kwargs: P.kwargs) -> T:
            area: Area | str = str(args[0]) if args else ""
            key = str(args[1]) if len(args) > 1 else ""
            with client_span(f"{self.backend} {operation}", **{
                "storage.backend": self.backend, "storage.area": area, "storage.key": key,
                "storage.operation": operation,
            }):  # fmt: skip
                return call(*args, **kwargs)

        return traced
