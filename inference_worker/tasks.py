"""Web-side Celery tasks of the playground (beat): reap jobs of lost workers, delete expired texts.

The GPU task ``gpu.generate`` is not here: it lives in ``inference_worker/worker/`` and is sent by name.
"""

from celery import shared_task


@shared_task(name="inference.reap_jobs", ignore_result=True)
def reap_jobs_task() -> int:
    """Re-run or fail the running jobs whose worker stopped sending heartbeats."""
    from inference_worker.services import jobs_reap

    return jobs_reap()


@shared_task(name="inference.purge_expired_texts", ignore_result=True)
def purge_expired_texts_task() -> int:
    """Delete prompts and outputs older than PLAYGROUND_RETENTION_DAYS (kept while a flag is open)."""
    from inference_worker.services import job_texts_purge

    return job_texts_purge()
