"""One thread that writes every running job's events to Redis.

The engine's loop only puts each token on this writer's queue; the writer takes whatever has
gathered (one engine step of the whole batch, typically) and sends it in one pipeline, so a
full batch costs one Redis round trip per step instead of one per job, and no thread per job
competes for the interpreter to do it. Events of one job keep their order: they share the queue.
"""

from __future__ import annotations

import logging
import queue
import threading

import redis
from django.utils import timezone

from inference_worker import streams
from inference_worker.engine.requests import TokenEvent
from inference_worker.tokenization import OPTTokenizer
from inference_worker.worker import outputs

logger = logging.getLogger(__name__)
_TOKEN, _EVENT, _FLUSH = "token", "event", "flush"


class StreamWriter:
    def __init__(self, client: redis.Redis, tokenizer: OPTTokenizer):
        self._client, self._tokenizer = client, tokenizer
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self.tokens_total = 0

    def start(self) -> None:
        threading.Thread(target=self._run, name="stream-writer", daemon=True).start()

    def on_token(self, handle, first_index: int):
        """The engine callback of one prompt of ``handle``'s job, whose choices start at ``first_index``."""
        put = self._queue.put

        def callback(event: TokenEvent) -> None:  # runs in the engine's loop: only a queue put
            put((_TOKEN, handle, (first_index + event.index, event)))
        return callback

    def event(self, handle, kind: str, data: dict) -> None:
        """Queue one event of ``handle``'s job, in order with its tokens."""
        self._queue.put((_EVENT, handle, (kind, data)))

    def flush(self, handle) -> None:
        """Wait until everything queued so far is written; raise the error that lost any of ``handle``'s."""
        written = threading.Event()
        self._queue.put((_FLUSH, handle, written))
        written.wait()
        if handle.write_error is not None:
            raise handle.write_error

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            try:
                while True:
                    batch.append(self._queue.get_nowait())
            except queue.Empty:
                pass
            try:
                self._write(batch)
            except Exception as error:  # noqa: BLE001  (the writer must outlive any one bad batch)
                logger.exception("Could not write a batch of stream events")
                for kind, handle, item in batch:
                    handle.write_error = handle.write_error or error
                    if kind == _FLUSH:
                        item.set()

    def _write(self, batch: list) -> None:
        pipe = self._client.pipeline(transaction=False)
        involved, flushed = set(), []
        for kind, handle, item in batch:
            if kind == _FLUSH:
                flushed.append(item)
                continue
            involved.add(handle)
            key = streams.job_stream_key(handle.job.pk)
            if kind == _EVENT:
                pipe.xadd(key, streams.event_fields(*item))
                continue
            index, event = item
            if event.token_id is not None or event.text:  # a cancel flushes held-back text
                pipe.xadd(key, streams.event_fields("token", outputs.token_event_data(self._tokenizer, event, index)))
            if event.finish_reason is not None and not handle.handed_back:  # a handed-back job runs again elsewhere
                pipe.xadd(key, streams.event_fields("finish", {"index": index, "finish_reason": event.finish_reason}))
            if event.token_id is not None:
                handle.tokens += 1
                self.tokens_total += 1
                if handle.first_token_at is None:
                    handle.first_token_at = timezone.now()
        try:
            if len(pipe):
                pipe.execute()
        except redis.RedisError as error:
            logger.warning("Lost the stream events of %d jobs", len(involved), exc_info=True)
            for handle in involved:
                handle.write_error = handle.write_error or error
        finally:
            pipe.reset()
        for written in flushed:
            written.set()
