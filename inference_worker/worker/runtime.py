"""The GPU worker's state: one serving engine, the jobs in flight, heartbeats, cancellations, drain.

Celery's threads pool runs one ``gpu.generate`` task per job, many at once; each submits its
prompts to the one engine, whose continuous batch they share, and follows them until they end.
The engine's token events reach the jobs' Redis streams through the worker's one
``StreamWriter``. Nothing here writes to the database per token: a job is claimed, and later
completed or failed, in one write each.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from concurrent.futures import wait
from dataclasses import dataclass, field
from datetime import datetime

import redis
from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from inference_worker import services, streams
from inference_worker.engine import Engine
from inference_worker.engine.requests import Request, SamplingParams
from inference_worker.models import PromptJob
from inference_worker.worker import outputs
from inference_worker.worker.stream_writer import StreamWriter

logger = logging.getLogger(__name__)
#: how often a running job checks its cancel flag, its page watcher and the drain deadline
CHECK_SECONDS = 0.5


@dataclass
class JobHandle:
    job: PromptJob
    cancel: threading.Event = field(default_factory=threading.Event)
    first_token_at: datetime | None = None  # these three are kept by the StreamWriter
    tokens: int = 0
    write_error: Exception | None = None
    handed_back: bool = False  # drained or lost: re-run or failed instead of completed

    def __hash__(self) -> int:
        return id(self)


class WorkerRuntime:
    def __init__(self, engine: Engine, *, release: str, tp: int, device: str, dtype: str, load_seconds: float,
                 worker_id: str | None = None):
        self.engine, self.release, self.tp, self.device, self.dtype = engine, release, tp, device, dtype
        self.load_seconds = load_seconds
        self.worker_id = worker_id or f"{release}-{socket.gethostname()}-{os.getpid()}"
        self.redis = streams.redis_client()
        self.writer = StreamWriter(self.redis, engine.tokenizer)
        self.in_flight: dict[str, JobHandle] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.drain_deadline: float | None = None
        self._rate_mark = (time.monotonic(), 0)  # (when, tokens_total) at the last heartbeat
        self._started = time.time()

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        self.writer.start()
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
            "tokens_per_second": round(self._tokens_rate(), 1), "tokens_total": self.writer.tokens_total,
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
        now, (then, total), tokens_total = time.monotonic(), self._rate_mark, self.writer.tokens_total
        self._rate_mark = (now, tokens_total)
        return (tokens_total - total) / (now - then) if now > then else 0.0

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
        # queued, not written: the engine starts on the prompts while the writer sends it
        self.writer.event(handle, "started", {"attempt": job.attempt, "worker": self.worker_id})
        futures = []
        for prompt_index, ids in enumerate(job.prompt_ids):
            request = Request(list(ids), params, request_id=f"{job.pk}:{prompt_index}", cancel=handle.cancel)
            callback = self.writer.on_token(handle, prompt_index * params.n) if streamed else None
            futures.append(self.engine.submit(request, on_token=callback))
        while wait(futures, timeout=CHECK_SECONDS).not_done:
            self._check(handle)
        self.writer.flush(handle)  # every token of the job is in its stream before it ends
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
