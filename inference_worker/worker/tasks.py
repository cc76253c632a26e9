"""The one task GPU workers run; the web side sends it by name (``gpu.generate``), never imports it."""

from portal.celery import app

from inference_worker.worker import runtime


@app.task(name="gpu.generate", acks_late=True, ignore_result=True)
def generate(*, job_id: str, attempt: int) -> None:
    """Run one job on this worker's engine; a stale or repeated delivery is dropped by ``job_claim``."""
    runtime.current().run_job(job_id, attempt)
