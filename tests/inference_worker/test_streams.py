"""The web process's StreamHub against the real Redis: readers get every event of their job, also
after a quiet spell longer than the Redis client's default read timeout."""

import asyncio
import uuid

from inference_worker import streams
from tests.inference_worker.playground import reset_playground_redis


def test_a_stream_that_stays_quiet_past_the_client_s_read_timeout_still_delivers():
    reset_playground_redis()
    job_id = uuid.uuid4()

    async def follow() -> list[str]:
        hub = streams.stream_hub()
        subscription = await hub.subscribe(job_id)
        try:
            await asyncio.sleep(6.5)  # redis-py gives up on a reply after 5 s unless told otherwise
            await asyncio.to_thread(streams.append_event, job_id, "token", {"index": 0, "text": "late"})
            await asyncio.to_thread(streams.append_event, job_id, streams.TERMINAL, {"status": "succeeded"})
            events = []
            while not events or events[-1].type != streams.TERMINAL:
                event = await subscription.next(timeout=5)
                assert event is not None, "the hub stopped delivering"
                events.append(event)
            return [event.type for event in events]
        finally:
            subscription.close()

    assert asyncio.run(follow()) == ["token", streams.TERMINAL]
    reset_playground_redis()


def test_a_reader_cancelled_as_an_event_arrives_is_still_cancelled():
    """A client that leaves just as a token arrives must not be streamed to until the job ends: the
    cancellation reaches the view whichever comes first (Python 3.11's ``wait_for`` lost it)."""

    async def cancel_as_an_event_arrives(steps_between: int) -> bool:
        subscription = streams.Subscription(hub=None, key="k", last_id="0-0")
        reader = asyncio.create_task(subscription.next(timeout=5))
        await asyncio.sleep(0)  # the reader now waits on its queue
        subscription.deliver("1-0", {"type": "token", "data": "{}"})
        for _ in range(steps_between):
            await asyncio.sleep(0)
        if reader.done():  # it returned the event before the client left: nothing was lost
            return True
        reader.cancel()
        try:
            await reader
        except asyncio.CancelledError:
            return True
        return False

    assert all(asyncio.run(cancel_as_an_event_arrives(steps)) for steps in range(4))
