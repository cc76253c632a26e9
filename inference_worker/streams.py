"""The Redis side of the playground: job event streams, cancellations and worker heartbeats.

Every job has one Redis stream of events, written by its worker (and by the web side for
cancellation and failures) and read by any number of web processes. A stream keeps its events,
so a page that subscribes late or reconnects with ``Last-Event-ID`` (the entry id) misses
nothing; it expires ``PLAYGROUND_STREAM_TTL_SECONDS`` after the job ends.

Events (``type`` and JSON ``data``):
    queued   {"attempt"}                                   the job waits for a worker (again, on a retry)
    started  {"attempt", "worker"}
    token    {"index", "text", "token_id", "token", "logprob", "top_logprobs"}   one generated token
    finish   {"index", "finish_reason"}                    one choice ended
    error    {"code", "message"}                           the job failed; ``done`` follows
    done     {"status", "usage"}                           the last event

One web process reads all the streams its clients follow through one connection
(``StreamHub``), not a connection or a thread per stream.
"""

from __future__ import annotations

import asyncio
import json
import uuid
import weakref
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import redis
import redis.asyncio
from django.conf import settings

TERMINAL = "done"


def job_stream_key(job_id) -> str:
    return f"gh:job:{job_id}:events"


def cancel_key(job_id) -> str:
    return f"gh:job:{job_id}:cancel"


def watch_key(job_id) -> str:
    """Set (with a short expiry) while a page follows the job; a page job nobody follows is cancelled."""
    return f"gh:job:{job_id}:watched"


CANCEL_CHANNEL = "gh:cancel"


def worker_key(worker_id: str) -> str:
    return f"gh:worker:{worker_id}"


def workers_index_key(release_slug: str) -> str:
    return f"gh:workers:{release_slug}"


class PlaygroundUnavailable(Exception):
    """No Redis is configured: the playground cannot run."""


@lru_cache(maxsize=4)
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True, health_check_interval=30)


def redis_client() -> redis.Redis:
    url = settings.PLAYGROUND_REDIS_URL
    if not url:
        raise PlaygroundUnavailable("The playground needs Redis (set REDIS_URL or PLAYGROUND_REDIS_URL).")
    return _client(url)


def event_fields(kind: str, data: dict[str, Any]) -> dict[str, str]:
    return {"type": kind, "data": json.dumps(data, separators=(",", ":"))}


def append_event(job_id, kind: str, data: dict[str, Any], *, client: redis.Redis | None = None) -> str:
    """Add one event to a job's stream (and start its expiry clock when it is the last)."""
    client = client or redis_client()
    key = job_stream_key(job_id)
    with client.pipeline(transaction=False) as pipe:
        pipe.xadd(key, event_fields(kind, data))
        pipe.expire(key, settings.PLAYGROUND_STREAM_TTL_SECONDS if kind == TERMINAL else 24 * 3600)
        entry_id, _ = pipe.execute()
    return entry_id


def last_event_type(job_id, *, client: redis.Redis | None = None) -> str | None:
    entries = (client or redis_client()).xrevrange(job_stream_key(job_id), count=1)
    return entries[0][1].get("type") if entries else None


def stream_has_tokens(job_id, *, client: redis.Redis | None = None) -> bool:
    """Whether a reader may already have seen generated text (then the job cannot be re-run unseen).
    Tokens come right after an attempt's ``queued`` and ``started``, and a job has two attempts at most."""
    entries = (client or redis_client()).xrange(job_stream_key(job_id), count=5)
    return any(fields.get("type") == "token" for _, fields in entries)


# -- reading (async, in the web process) ----------------------------------------------------------


@dataclass(frozen=True)
class Event:
    id: str
    type: str
    data: dict[str, Any]


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _event(entry_id: str, fields: dict[str, str]) -> Event:
    return Event(entry_id, fields.get("type", ""), json.loads(fields.get("data") or "{}"))


class StreamError(Exception):
    """Redis failed while a stream was being read."""


class Subscription:
    """One reader's position in one job stream; iterate with ``next(timeout)``."""

    def __init__(self, hub: StreamHub, key: str, last_id: str):
        self.hub, self.key, self.last_id = hub, key, last_id
        self.queue: asyncio.Queue[Event | BaseException] = asyncio.Queue()

    def deliver(self, entry_id: str, fields: dict[str, str]) -> None:
        if _id_key(entry_id) > _id_key(self.last_id):
            self.last_id = entry_id
            self.queue.put_nowait(_event(entry_id, fields))

    async def next(self, timeout: float) -> Event | None:
        """The next event, or None when none came within ``timeout`` seconds."""
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation that arrives
        # as the item does, and the view would go on streaming to a client that has left.
        try:
            async with asyncio.timeout(timeout):
                item = await self.queue.get()
        except TimeoutError:
            return None
        if isinstance(item, BaseException):
            raise StreamError(str(item)) from item
        return item

    def close(self) -> None:
        self.hub.unsubscribe(self)


#: how long the hub's one XREAD waits for any event before it asks again
READ_BLOCK_SECONDS = 10


class StreamHub:
    """Fans the events of many job streams out to their readers in this process, from one blocking
    ``XREAD`` on one connection. A new subscription wakes the read through this hub's own stream."""

    def __init__(self, url: str):
        # a few connections for catch-up reads and wake-ups, shared by every reader: they wait their turn
        pool = redis.asyncio.BlockingConnectionPool.from_url(url, decode_responses=True, max_connections=4, timeout=30)
        self._commands = redis.asyncio.Redis(connection_pool=pool)
        # redis-py gives up on a reply after 5 s by default: the blocking read must outlast its block
        self._reader = redis.asyncio.Redis.from_url(url, decode_responses=True, max_connections=1,
                                                    socket_timeout=READ_BLOCK_SECONDS + 10)
        self._wake_key = f"gh:hub:{uuid.uuid4().hex}"
        self._subscriptions: dict[str, set[Subscription]] = {}
        self._task: asyncio.Task | None = None

    async def subscribe(self, job_id, last_id: str = "0-0") -> Subscription:
        """Follow a job's stream from just after ``last_id`` (``0-0``: from the start)."""
        key = job_stream_key(job_id)
        subscription = Subscription(self, key, last_id)
        try:
            for entry_id, fields in await self._commands.xrange(key, min=f"({last_id}" if last_id != "0-0" else "-"):
                subscription.deliver(entry_id, fields)
            self._subscriptions.setdefault(key, set()).add(subscription)
            if self._task is None or self._task.done():
                self._task = asyncio.create_task(self._read_loop(), name="stream-hub")
            else:
                async with self._commands.pipeline(transaction=False) as pipe:  # gone a day after its process
                    pipe.xadd(self._wake_key, {"w": "1"}, maxlen=16, approximate=True)
                    pipe.expire(self._wake_key, 24 * 3600)
                    await pipe.execute()
        except redis.RedisError as error:
            self.unsubscribe(subscription)
            raise StreamError(f"Redis is unavailable: {error}") from error
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        readers = self._subscriptions.get(subscription.key)
        if readers is not None:
            readers.discard(subscription)
            if not readers:
                del self._subscriptions[subscription.key]

    async def _read_loop(self) -> None:
        wake_last = "0-0"
        try:
            while self._subscriptions:
                streams = {self._wake_key: wake_last}
                for key, readers in self._subscriptions.items():
                    streams[key] = min((r.last_id for r in readers), key=_id_key)
                replies = await self._reader.xread(streams, block=READ_BLOCK_SECONDS * 1000, count=256)
                for key, entries in replies or []:
                    if key == self._wake_key:
                        wake_last = entries[-1][0]
                        continue
                    for reader in list(self._subscriptions.get(key, ())):
                        for entry_id, fields in entries:
                            reader.deliver(entry_id, fields)
        except Exception as error:  # hand the failure to every reader rather than leave them waiting
            for readers in self._subscriptions.values():
                for reader in readers:
                    reader.queue.put_nowait(error)
            self._subscriptions.clear()


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, StreamHub] = weakref.WeakKeyDictionary()


def stream_hub() -> StreamHub:
    """This event loop's hub (one per web process under uvicorn)."""
    url = settings.PLAYGROUND_REDIS_URL
    if not url:
        raise PlaygroundUnavailable("The playground needs Redis (set REDIS_URL or PLAYGROUND_REDIS_URL).")
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = StreamHub(url)
    return hub
