"""Job records in Redis: create (with the work-queue entries, atomically), read, list,
finish items exactly once, cancel, expire, and an event stream per job.

Layout: ``pixserve:job:<id>`` (hash: owner, status, times, counters, pipeline),
``pixserve:job:<id>:items`` (hash: index -> item JSON), ``pixserve:jobs:<owner>``
(sorted set by creation time, for listing; ``pixserve:jobs:all`` for operators, the
owner beside each id), ``pixserve:job:<id>:events`` (stream; its
entry ids double as SSE event ids, so Last-Event-ID resumes exactly), and the webhook
outbox stream (``pixserve:webhooks``) that outcomes feed atomically. A job's keys
live a week past its retention (reads answer 410 meanwhile), then Redis drops them.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

from redis.asyncio import Redis
from redis.typing import EncodableT, FieldT

from services.errors import PixserveError
from services.jobs.models import Item, ItemProgress, ItemStatus, Job, JobStatus, Progress
from services.jobs.queue import DEAD_LETTER, OUTBOX, STREAM
from services.redis_text import as_text


class JobNotFound(PixserveError):
    """No such job for this caller (another tenant's job reads as absent)."""

    code = "job_not_found"
    status = 404


class LeaseLost(PixserveError):
    """A delivery that stalled past the visibility timeout finished after another
    delivery took the item over: its outcome is not recorded (the holder's is)."""

    code = "lease_lost"
    status = 409


class JobExpired(PixserveError):
    """The job is past retention; its inputs and outputs are gone."""

    code = "job_expired"
    status = 410


class IdempotencyConflict(PixserveError):
    """The Idempotency-Key was used with a different request body."""

    code = "idempotency_conflict"
    status = 409


# Finish one item once: returns {changed, job_status}. Terminal items are left alone,
# so a re-delivered item never double-counts; a delivery whose lease another took over
# (ARGV[8], set by _START) records nothing and gets -1. The job's webhook events go into
# the outbox in the same step, so an outcome is never recorded without its events.
_FINISH = """
local raw = redis.call('HGET', KEYS[2], ARGV[1])
if not raw then return {0, ''} end
local item = cjson.decode(raw)
if item.status == 'succeeded' or item.status == 'failed' or item.status == 'canceled' then
  return {0, redis.call('HGET', KEYS[1], 'status')}
end
if ARGV[8] ~= '' and item.lease ~= ARGV[8] then
  return {-1, redis.call('HGET', KEYS[1], 'status')}
end
item.status = ARGV[2]
item.finished_at = tonumber(ARGV[5])
if ARGV[3] ~= '' then item.output_key = ARGV[3] end
if ARGV[4] ~= '' then item.error = ARGV[4] end
if ARGV[7] ~= '' then item.texts = ARGV[7] end  -- kept as text: cjson turns [] into {}
redis.call('HSET', KEYS[2], ARGV[1], cjson.encode(item))
local field = 'done'
if ARGV[2] == 'failed' then field = 'failed' end
redis.call('HINCRBY', KEYS[1], field, 1)
local done = tonumber(redis.call('HGET', KEYS[1], 'done'))
local failed = tonumber(redis.call('HGET', KEYS[1], 'failed'))
local total = tonumber(redis.call('HGET', KEYS[1], 'total'))
local status = redis.call('HGET', KEYS[1], 'status')
local ended = false
if done + failed >= total and status ~= 'canceled' then
  if failed == 0 then status = 'succeeded' elseif done == 0 then status = 'failed'
  else status = 'partial' end
  redis.call('HSET', KEYS[1], 'status', status, 'finished_at', ARGV[5])
  ended = true
end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', '10000', '*', 'type', 'item',
  'index', ARGV[1], 'status', ARGV[2], 'job_status', status,
  'done', tostring(done), 'failed', tostring(failed), 'total', tostring(total))
local hook = redis.call('HGET', KEYS[1], 'webhook_url')
if hook and hook ~= '' then
  local events = cjson.decode(redis.call('HGET', KEYS[1], 'webhook_events') or '[]')
  for _, event in ipairs(events) do
    if event == 'item' then
      redis.call('XADD', KEYS[4], '*', 'job', ARGV[6], 'item', ARGV[1])
    elseif event == 'completed' and ended then
      redis.call('XADD', KEYS[4], '*', 'job', ARGV[6], 'item', '-1')
    end
  end
end
return {1, status}
"""


COMPLETED = -1  # the outbox's item index for a job's ``completed`` event
STARTED = -2  # and for its ``start`` event


# Start one item: refused for canceled/expired jobs and finished items; the job turns
# running only from queued (never from canceled, whatever happened in between), and
# then its ``start`` webhook goes into the outbox. The delivery's lease token (ARGV[3])
# is recorded: only its holder may finish the item. The start is an event on the stream.
_START = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status or status == 'canceled' or status == 'expired' then return 0 end
local raw = redis.call('HGET', KEYS[2], ARGV[1])
if not raw then return 0 end
local item = cjson.decode(raw)
if item.status == 'succeeded' or item.status == 'failed' or item.status == 'canceled' then
  return 0
end
item.status = 'running'
item.attempts = (tonumber(item.attempts) or 0) + 1
item.started_at = tonumber(ARGV[2])
if ARGV[3] ~= '' then item.lease = ARGV[3] end
redis.call('HSET', KEYS[2], ARGV[1], cjson.encode(item))
if status == 'queued' then
  status = 'running'
  redis.call('HSET', KEYS[1], 'status', status, 'started_at', ARGV[2])
  local hook = redis.call('HGET', KEYS[1], 'webhook_url')
  local events = cjson.decode(redis.call('HGET', KEYS[1], 'webhook_events') or '[]')
  for _, event in ipairs(events) do
    if event == 'start' and hook and hook ~= '' then
      redis.call('XADD', KEYS[4], '*', 'job', ARGV[4], 'item', ARGV[5])
    end
  end
end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', '10000', '*', 'type', 'item', 'index', ARGV[1],
  'status', 'running', 'job_status', status, 'attempt', tostring(item.attempts))
return 1
"""


# Re-queue a dead-lettered item: a failed item goes back to queued (its failure is
# uncounted, a finished job runs again), a new work entry is added and the dead-letter
# entry removed, in one step. Answers the job's status, or why nothing was done.
_REQUEUE = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if status == 'canceled' or status == 'expired' then return status end
local raw = redis.call('HGET', KEYS[2], ARGV[1])
if not raw then return 'missing' end
local item = cjson.decode(raw)
if item.status == 'failed' then
  item.status = 'queued'
  item.error = nil
  item.finished_at = nil
  redis.call('HSET', KEYS[2], ARGV[1], cjson.encode(item))
  redis.call('HINCRBY', KEYS[1], 'failed', -1)
  if status ~= 'queued' and status ~= 'running' then
    status = 'running'
    redis.call('HSET', KEYS[1], 'status', status)
    redis.call('HDEL', KEYS[1], 'finished_at')
    redis.call('XADD', KEYS[3], '*', 'type', 'job', 'job_status', status)
  end
end
redis.call('XADD', KEYS[4], '*', 'job', ARGV[3], 'item', ARGV[1])
redis.call('XDEL', KEYS[5], ARGV[2])
return status
"""

ALL_JOBS = "pixserve:jobs:all"  # member "<owner>/<job id>", by creation time
KEPT_AFTER_EXPIRY_S = 7 * 24 * 3600


JOB_ID_PATTERN = r"^[0-9a-f]{32}$"  # new_job_id's form; nothing else reaches a key name
# a Redis stream entry id (events, dead letters): two 64-bit numbers; 19 digits stay under
STREAM_ID_PATTERN = r"^[0-9]{1,19}-[0-9]{1,19}$"


def new_job_id() -> str:
    return uuid.uuid4().hex


def job_key(job_id: str) -> str:
    """The job's key; an id of another form is no job (it never reaches Redis, where a
    suffix could name another key of the job)."""
    if not re.fullmatch(JOB_ID_PATTERN, job_id):
        raise JobNotFound(f"no job {job_id[:64]!r}: job ids are 32 hex digits")
    return f"pixserve:job:{job_id}"


class JobStore:
    """Job records for one Redis; ``retention_s`` sets when a job answers 410."""

    def __init__(self, redis: Redis, retention_s: int = 24 * 3600) -> None:
        self.redis = redis
        self.retention_s = retention_s
        self._finish = redis.register_script(_FINISH)
        self._start = redis.register_script(_START)
        self._requeue = redis.register_script(_REQUEUE)

    async def create(
        self,
        owner: str,
        task: dict[str, Any],
        inputs: list[str],
        webhook_url: str | None = None,
        job_id: str | None = None,
        webhook_events: list[str] | None = None,
        names: list[str] | None = None,
        traceparent: str | None = None,
    ) -> Job:
        """Record the job and its items and enqueue every item, in one transaction;
        ``names`` are what the client called the inputs (default: the inputs)."""
        now = time.time()
        job = Job(
            id=job_id or new_job_id(),
            status=JobStatus.QUEUED,
            created_at=now,
            expires_at=now + self.retention_s,
            task=task,
            progress=Progress(total=len(inputs)),
            items=[
                Item(index=i, input=source, name=label, traceparent=traceparent)
                for i, (source, label) in enumerate(zip(inputs, names or inputs, strict=True))
            ],
            webhook_url=webhook_url,
            webhook_events=webhook_events or ["completed"],
        )
        key = job_key(job.id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=_job_fields(job, owner))
            pipe.hset(
                f"{key}:items", mapping={str(i.index): i.model_dump_json() for i in job.items}
            )
            pipe.zadd(f"pixserve:jobs:{owner}", {job.id: now})
            pipe.zadd(ALL_JOBS, {f"{owner}/{job.id}": now})
            pipe.xadd(f"{key}:events", {"type": "job", "job_status": "queued"})
            first_entry = len(pipe.command_stack)  # where the first work entry's id comes
            for item in job.items:
                pipe.xadd(STREAM, {"job": job.id, "item": str(item.index)})
            for stored in (key, f"{key}:items", f"{key}:events"):
                pipe.expire(stored, self.retention_s + KEPT_AFTER_EXPIRY_S)
            done = await pipe.execute()
        job.work_entry = as_text(done[first_entry])  # for its queue position
        await self.redis.hset(key, "work_entry", job.work_entry)
        return job

    async def read(self, job_id: str, owner: str, with_items: bool = True) -> Job:
        """The job as its owner sees it; others get 404, expired jobs 410. Without
        items, one small read whatever the job's size (progress, status, webhook)."""
        fields = await self._fields(job_id)
        if not fields or fields.get("owner") != owner:
            raise JobNotFound(f"no job {job_id}")
        if time.time() > float(fields["expires_at"]):
            raise JobExpired(f"job {job_id} expired; results are kept {self.retention_s} s")
        if not with_items:
            return _job_from(job_id, fields, [])
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(f"{job_key(job_id)}:items")
            pipe.hgetall(f"{job_key(job_id)}:progress")
            raw_items, progress = await pipe.execute()
        items = sorted((Item.model_validate_json(v) for v in raw_items.values()), key=_index)
        progress = {as_text(index): said for index, said in progress.items()}
        for item in items:
            if item.status == ItemStatus.RUNNING and str(item.index) in progress:
                item.progress = ItemProgress.model_validate_json(progress[str(item.index)])
        return _job_from(job_id, fields, items)

    async def item_context(self, job_id: str, index: int) -> tuple[dict[str, Any], Item]:
        """A job's task and one of its items, without reading every item (the
        dispatcher's per-item read; a whole-job read would make a batch quadratic)."""
        key = job_key(job_id)
        pipeline, expires_at = await self.redis.hmget(key, ["pipeline", "expires_at"])
        raw = await self.redis.hget(f"{key}:items", str(index))
        if pipeline is None or expires_at is None or raw is None:
            raise JobNotFound(f"no job {job_id} item {index}")
        if time.time() > float(as_text(expires_at)):
            raise JobExpired(f"job {job_id} expired; results are kept {self.retention_s} s")
        return json.loads(as_text(pipeline)), Item.model_validate_json(raw)

    async def list_jobs(
        self, owner: str, status: JobStatus | None = None, cursor: float | None = None,
        limit: int = 50,
    ) -> tuple[list[Job], float | None]:  # fmt: skip
        """Newest first; ``cursor`` is the creation time to continue below."""
        top = f"({cursor}" if cursor is not None else "+inf"
        ids: Any = await self.redis.zrevrangebyscore(
            f"pixserve:jobs:{owner}", top, "-inf", start=0, num=limit + 1, withscores=True
        )
        jobs: list[Job] = []
        for raw_id, _score in ids[:limit]:
            try:
                job = await self.read(as_text(raw_id), owner)
            except (JobNotFound, JobExpired):
                continue
            if status is None or job.status == status:
                jobs.append(job)
        next_cursor = float(ids[limit - 1][1]) if len(ids) > limit else None
        return jobs, next_cursor

    async def list_all(
        self, status: JobStatus | None = None, cursor: float | None = None, limit: int = 50
    ) -> tuple[list[tuple[str, Job]], float | None]:
        """Every tenant's jobs, newest first, with their owners (the operator's view);
        index entries of jobs Redis has dropped are removed on the way."""
        top = f"({cursor}" if cursor is not None else "+inf"
        ids: Any = await self.redis.zrevrangebyscore(
            ALL_JOBS, top, "-inf", start=0, num=limit + 1, withscores=True
        )
        found: list[tuple[str, Job]] = []
        for member, _score in ids[:limit]:
            owner, _, job_id = as_text(member).partition("/")
            fields = await self._fields(job_id)
            if not fields:
                await self.redis.zrem(ALL_JOBS, member)
                continue
            job = _job_from(job_id, fields, [])
            if status is None or job.status == status:
                found.append((owner, job))
        next_cursor = float(ids[limit - 1][1]) if len(ids) > limit else None
        return found, next_cursor

    async def read_any(self, job_id: str) -> tuple[str, Job]:
        """A job and its owner, whoever that is (the operator's view)."""
        owner = await self.owner_of(job_id)
        return owner, await self.read(job_id, owner)

    async def requeue(self, job_id: str, index: int, dead_entry: str) -> str:
        """Run a dead-lettered item again (see ``_REQUEUE``); the job's status after."""
        key = job_key(job_id)
        outcome = await self._requeue(
            keys=[key, f"{key}:items", f"{key}:events", STREAM, DEAD_LETTER],
            args=[str(index), dead_entry, job_id],
        )
        return as_text(outcome)

    async def owner_of(self, job_id: str) -> str:
        """The owner recorded on a job (the dispatcher reads jobs on the owner's behalf)."""
        owner = await self.redis.hget(job_key(job_id), "owner")
        if owner is None:
            raise JobNotFound(f"no job {job_id}")
        return as_text(owner)

    async def start_item(self, job_id: str, index: int, lease: str = "") -> bool:
        """Mark an item running under this delivery's ``lease``; False if the job is
        canceled or the item already ended. One script, so a cancel between the check
        and the write cannot be overwritten."""
        key = job_key(job_id)
        started = await self._start(keys=[key, f"{key}:items", f"{key}:events", OUTBOX],
                                    args=[str(index), str(time.time()), lease, job_id,
                                          str(STARTED)])  # fmt: skip
        return bool(int(started))

    async def is_canceled(self, job_id: str) -> bool:
        """Whether the job was canceled (the dispatcher polls it while an item runs)."""
        return as_text(await self.redis.hget(job_key(job_id), "status") or b"") == "canceled"

    async def holds_lease(self, job_id: str, index: int, lease: str) -> bool:
        """Whether the item is still running under ``lease`` (checked before a delivery
        writes its output, so a stalled one does not overwrite its successor's)."""
        key = job_key(job_id)
        raw = await self.redis.hget(f"{key}:items", str(index))
        if raw is None:
            return False
        item = json.loads(raw)
        return bool(item.get("status") == "running" and item.get("lease") == lease)

    async def finish_item(
        self, job_id: str, index: int, output_key: str | None = None, error: str | None = None,
        texts: dict[str, Any] | None = None, lease: str = "",
    ) -> tuple[bool, str]:  # fmt: skip
        """Succeed (with an output key, and a preset's texts) or fail (with an error)
        once; returns (whether this call changed anything, the job's status). With a
        ``lease``, only the delivery holding it records: another raises ``LeaseLost``."""
        key = job_key(job_id)
        status = "failed" if error is not None else "succeeded"
        said = json.dumps(texts) if texts else ""
        changed, job_status = await self._finish(
            keys=[key, f"{key}:items", f"{key}:events", OUTBOX],
            args=[
                str(index),
                status,
                output_key or "",
                error or "",
                str(time.time()),
                job_id,
                said,
                lease,
            ],
        )
        if int(changed) < 0:
            raise LeaseLost(f"item {index} of job {job_id} is held by a later delivery")
        return bool(int(changed)), as_text(job_status)

    async def cancel(self, job_id: str, owner: str) -> Job:
        """Cancel: queued items never run; a running one is stopped by its dispatcher
        (which polls ``is_canceled``) and its outcome dropped."""
        job = await self.read(job_id, owner)
        if job.status in ("queued", "running"):
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(job_key(job_id), mapping={"status": "canceled",
                                                     "finished_at": time.time()})  # fmt: skip
                pipe.xadd(f"{job_key(job_id)}:events", {"type": "job", "job_status": "canceled"})
                if job.webhook_url and "completed" in job.webhook_events:
                    pipe.xadd(OUTBOX, {"job": job_id, "item": str(COMPLETED)})
                await pipe.execute()
        return await self.read(job_id, owner)

    async def events(
        self, job_id: str, after: str = "0-0", block_ms: int | None = 15_000
    ) -> list[tuple[str, dict[str, str]]]:
        """Events after the given id (SSE's Last-Event-ID), waiting up to ``block_ms``
        (None: not at all)."""
        answer: Any = await self.redis.xread({f"{job_key(job_id)}:events": after}, block=block_ms)
        events = []
        for _, entries in answer or []:
            for entry_id, fields in entries:
                events.append(
                    (as_text(entry_id), {as_text(k): as_text(v) for k, v in fields.items()})
                )
        return events

    async def remember_idempotency(self, owner: str, key: str, body_hash: str, job_id: str) -> str:
        """The job id this key maps to: ``job_id`` if the key is new, the first job if the
        body matches, ``IdempotencyConflict`` if it does not. Keys live 24 h."""
        record = json.dumps({"hash": body_hash, "job": job_id})
        slot = f"pixserve:idem:{owner}:{key}"
        if await self.redis.set(slot, record, nx=True, ex=24 * 3600):
            return job_id
        existing = json.loads(as_text(await self.redis.get(slot) or b"{}"))
        if existing.get("hash") != body_hash:
            raise IdempotencyConflict("this Idempotency-Key was used with a different request")
        return str(existing["job"])

    async def forget_idempotency(self, owner: str, key: str, job_id: str) -> None:
        """Drop the key if it still names ``job_id`` (its submission failed)."""
        slot = f"pixserve:idem:{owner}:{key}"
        raw = await self.redis.get(slot)
        if raw is not None and json.loads(as_text(raw)).get("job") == job_id:
            await self.redis.delete(slot)

    async def _fields(self, job_id: str) -> dict[str, str]:
        raw = await self.redis.hgetall(job_key(job_id))
        return {as_text(k): as_text(v) for k, v in raw.items()}


def _job_fields(job: Job, owner: str) -> dict[FieldT, EncodableT]:
    return {
        "owner": owner,
        "status": job.status.value,
        "created_at": str(job.created_at),
        "expires_at": str(job.expires_at),
        "pipeline": json.dumps(job.task),  # the task spec; the field's name predates it
        "total": str(job.progress.total),
        "done": "0",
        "failed": "0",
        "webhook_url": job.webhook_url or "",
        "webhook_events": json.dumps(job.webhook_events),
    }


def _job_from(job_id: str, fields: dict[str, str], items: list[Item]) -> Job:
    started = fields.get("started_at")
    finished = fields.get("finished_at")
    metrics = {"queue_wait_s": float(started) - float(fields["created_at"])} if started else {}
    if started and finished:
        metrics["run_s"] = float(finished) - float(started)
    return Job(
        id=job_id,
        status=JobStatus(fields["status"]),
        created_at=float(fields["created_at"]),
        started_at=float(started) if started else None,
        finished_at=float(finished) if finished else None,
        expires_at=float(fields["expires_at"]),
        task=json.loads(fields["pipeline"]),
        progress=Progress(
            done=int(fields["done"]), failed=int(fields["failed"]), total=int(fields["total"])
        ),
        items=items,
        metrics=metrics,
        webhook_url=fields.get("webhook_url") or None,
        webhook_events=json.loads(fields.get("webhook_events") or '["completed"]'),
        work_entry=fields.get("work_entry") or None,
    )


def _index(item: Item) -> int:
    return item.index
