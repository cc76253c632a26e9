"""The GPU worker's state: one serving engine, the jobs in flight, heartbeats, cancellations, drain.

Celery's threads pool runs one ``gpu.generate`` task per job, many at once; each submits its
prompts to the one engine, whose continuous batch they share, and streams the engine's token
events to the job's Redis stream from its own thread (the engine's loop only puts them on a
queue). Nothing here writes to the database per token: a job is claimed, and later completed
or failed, in one write each.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime

import redis
from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from inference_worker import services, streams
from inference_worker.engine import Engine
from inference_worker.engine.requests import Request, SamplingParams, TokenEvent
from inference_worker.models import PromptJob
from inference_worker.worker import outputs

logger = logging.getLogger(__name__)
#: how often a running job checks its cancel flag, its page watcher and the drain deadline
CHECK_SECONDS = 0.5


@dataclass
class JobHandle:
    job: PromptJob
    cancel: threading.Event = field(default_factory=threading.Event)
    events: queue.Queue = field(default_factory=queue.Queue)
    first_token_at: datetime | None = None
    tokens: int = 0
    handed_back: bool = False  # drained or lost: re-run or failed instead of completed


class WorkerRuntime:
    def __init__(self, engine: Engine, *, release: str, tp: int, device: str, dtype: str, load_seconds: float,
                 worker_id: str | None = None):
        self.engine, self.release, self.tp, self.device, self.dtype = engine, release, tp, device, dtype
        self.load_seconds = load_seconds
        self.worker_id = worker_id or f"{release}-{socket.gethostname()}-{os.getpid()}"
        self.redis = streams.redis_client()
        self.in_flight: dict[str, JobHandle] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.drain_deadline: float | None = None
        self._tokens_total = 0
        self._rate_mark = (time.monotonic(), 0)  # (when, tokens_total) at the last heartbeat
        self._started = time.time()

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        for target, name in ((self._heartbeat_loop, "heartbeat"), (self._cancel_listener, "cancel-listener")):
            threading.Thread(target=target, name=name, daemon=True).start()
        self.heartbeat()

    def begin_drain(self) -> None:
        """SIGTERM: take no new work; jobs still running after the grace period are handed back."""
        if self.drain_deadline is None:
            self.drain_deadline = time.monotonic() + settings.PLAYGROUND_DRAIN_SECONDS
            logger.info("Draining: %d jobs in flight, %.1f s grace", len(self.in_flight),
                        settings.PLAYGROUND_DRAIN_SECONDS)
            timer = threading.Timer(settings.PLAYGROUND_DRAIN_SECONDS, self._hand_back_all)
            timer.daemon = True
            timer.start()
            self.heartbeat()

    def _hand_back_all(self) -> None:
        """The grace period is over: stop every job still here. Those that have streamed nothing are
        stopped first, so none of them gets a freed slot and starts streaming in between."""
        with self._lock:
            handles = sorted(self.in_flight.values(), key=lambda h: h.tokens > 0)
            for handle in handles:
                handle.handed_back = True
                handle.cancel.set()
        logger.info("Grace period over: handed back %d jobs", len(handles))

    def stop(self) -> None:
        self._stopping.set()
        try:
            with self.redis.pipeline() as pipe:
                pipe.delete(streams.worker_key(self.worker_id))
                pipe.srem(streams.workers_index_key(self.release), self.worker_id)
                pipe.execute()
        except redis.RedisError:
            logger.warning("Could not remove this worker's heartbeat", exc_info=True)

    # -- heartbeats and cancellations ----------------------------------------------------------------

    def heartbeat(self) -> None:
        elapsed = max(time.time() - self._started, 1e-9)
        payload = {
            "worker": self.worker_id, "release": self.release, "tp": self.tp, "device": self.device,
            "dtype": self.dtype, "max_batch": self.engine.max_batch, "jobs_in_flight": len(self.in_flight),
            "tokens_per_second": round(self._tokens_rate(), 1), "tokens_total": self._tokens_total,
            "load_seconds": round(self.load_seconds, 2), "uptime_seconds": round(elapsed),
            "draining": self.drain_deadline is not None, "at": timezone.now().isoformat(),
        }
        with self.redis.pipeline() as pipe:
            pipe.set(streams.worker_key(self.worker_id), json.dumps(payload),
                     ex=max(1, round(settings.PLAYGROUND_WORKER_TIMEOUT_SECONDS)))
            pipe.sadd(streams.workers_index_key(self.release), self.worker_id)
            pipe.execute()

    def _tokens_rate(self) -> float:
        """Tokens per second streamed since the previous heartbeat."""
        now, (then, total) = time.monotonic(), self._rate_mark
        self._rate_mark = (now, self._tokens_total)
        return (self._tokens_total - total) / (now - then) if now > then else 0.0

    def _heartbeat_loop(self) -> None:
        while not self._stopping.wait(settings.PLAYGROUND_HEARTBEAT_SECONDS):
            if getattr(self.engine, "_serve_error", None) is not None:
                logger.error("The engine stopped serving; no more heartbeats, so its jobs are reaped")
                return
            try:
                self.heartbeat()
            except redis.RedisError:
                logger.warning("Heartbeat failed", exc_info=True)

    def _cancel_listener(self) -> None:
        """Set a running job's cancel event the moment the web side asks (checked at each token boundary)."""
        while not self._stopping.is_set():
            try:
                pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(streams.CANCEL_CHANNEL)
                while not self._stopping.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message and message["type"] == "message":
                        handle = self.in_flight.get(message["data"])
                        if handle is not None:
                            handle.cancel.set()
            except redis.RedisError:
                logger.warning("Cancel listener lost Redis; reconnecting", exc_info=True)
                self._stopping.wait(1.0)

    # -- one job ------------------------------------------------------------------------------------

    def run_job(self, job_id: str, attempt: int) -> None:
        close_old_connections()  # this thread's connection is kept across jobs: not one that broke or aged
        job = services.job_claim(job_id=job_id, attempt=attempt, worker=self.worker_id)
        if job is None:
            logger.info("Dropped a stale or cancelled delivery of job %s (attempt %d)", job_id, attempt)
            return
        handle = JobHandle(job)
        with self._lock:
            if self.drain_deadline is not None and time.monotonic() >= self.drain_deadline:
                services.job_worker_lost(job=job, reason="its worker was shutting down")
                return
            self.in_flight[job_id] = handle
        try:
            streams.append_event(job.id, "started", {"attempt": attempt, "worker": self.worker_id}, client=self.redis)
            self._generate(handle)
        except Exception as error:  # the job fails with the reason; the worker goes on
            logger.exception("Job %s failed", job_id)
            handle.cancel.set()  # its prompts already in the engine stop too
            services.job_fail(job_id=job.pk, attempt=attempt, code="engine_error", message=str(error))
        finally:
            with self._lock:
                self.in_flight.pop(job_id, None)

    def _generate(self, handle: JobHandle) -> None:
        job = handle.job
        params = SamplingParams(**job.params)
        streamed = params.n_sequences == params.n  # best_of picks its choices at the end: nothing to stream
        futures = []
        for prompt_index, ids in enumerate(job.prompt_ids):
            request = Request(list(ids), params, request_id=f"{job.pk}:{prompt_index}", cancel=handle.cancel)
            callback = self._callback(handle, prompt_index * params.n) if streamed else None
            futures.append(self.engine.submit(request, on_token=callback))
        self._pump(handle, futures)
        results = [future.result() for future in futures]
        if handle.handed_back:
            services.job_worker_lost(job=job, reason="its worker shut down")
            return
        stored = outputs.choices(self.engine.tokenizer, results, n=params.n, logprobs=params.logprobs,
                                 echo=params.echo)
        generated = sum(len(c.token_ids) - (len(r.prompt_ids) if params.echo else 0)
                        for r in results for c in r.completions)
        if params.n_sequences > params.n:  # the sequences best_of left out were generated too
            generated = max(generated, handle.tokens)
        cancelled = handle.cancel.is_set() and any(c["finish_reason"] == "cancelled" for c in stored)
        done = services.job_complete(job_id=job.pk, attempt=job.attempt, outputs=stored, completion_tokens=generated,
                                     cancelled=cancelled, first_token_at=handle.first_token_at)
        if done is not None:
            streams.append_event(job.pk, streams.TERMINAL, {"status": done.status, "usage": services.job_usage(done)},
                                 client=self.redis)

    def _callback(self, handle: JobHandle, first_index: int):
        def on_token(event: TokenEvent) -> None:  # runs in the engine's loop: only a queue put
            handle.events.put((first_index + event.index, event))
        return on_token

    def _pump(self, handle: JobHandle, futures: list) -> None:
        """Write the job's token events to its stream until every prompt is done, checking
        between batches whether it was cancelled or left unwatched."""
        key = streams.job_stream_key(handle.job.pk)
        next_check = time.monotonic() + CHECK_SECONDS
        while True:
            finished = all(f.done() for f in futures)
            batch = self._take(handle.events, block=not finished)
            if batch:
                with self.redis.pipeline(transaction=False) as pipe:
                    for index, event in batch:
                        if event.token_id is not None or event.text:  # a cancel flushes held-back text
                            pipe.xadd(key, streams.event_fields(
                                "token", outputs.token_event_data(self.engine.tokenizer, event, index)))
                        if event.finish_reason is not None and not handle.handed_back:  # it runs again elsewhere
                            pipe.xadd(key, streams.event_fields(
                                "finish", {"index": index, "finish_reason": event.finish_reason}))
                    pipe.execute()
                tokens = sum(1 for _, e in batch if e.token_id is not None)
                if tokens and handle.first_token_at is None:
                    handle.first_token_at = timezone.now()
                handle.tokens += tokens
                self._tokens_total += tokens
            elif finished:
                return
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + CHECK_SECONDS
                self._check(handle)

    @staticmethod
    def _take(events: queue.Queue, *, block: bool) -> list:
        batch = []
        try:
            batch.append(events.get(timeout=CHECK_SECONDS) if block else events.get_nowait())
            while True:
                batch.append(events.get_nowait())
        except queue.Empty:
            pass
        return batch

    def _check(self, handle: JobHandle) -> None:
        if handle.cancel.is_set():
            return
        job = handle.job
        if self.redis.exists(streams.cancel_key(job.pk)):
            handle.cancel.set()
        elif job.source == PromptJob.Source.PAGE and not self.redis.exists(streams.watch_key(job.pk)):
            logger.info("Job %s: no page has followed it for %d s; cancelling", job.pk,
                        settings.PLAYGROUND_PAGE_UNWATCHED_SECONDS)
            handle.cancel.set()


_current: WorkerRuntime | None = None


def install(runtime: WorkerRuntime) -> None:
    global _current
    _current = runtime


def current() -> WorkerRuntime:
    if _current is None:
        raise RuntimeError("gpu.generate runs only inside `python -m inference_worker.worker`")
    return _current
