"""Real parts for the playground's end-to-end tests: a GPU-worker process on a tiny CPU model, an
ASGI web server (uvicorn) on the test database, and a release registered from the checkpoint."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import redis
from django.conf import settings
from django.utils import timezone

from access.models import Licence, LicenceVersion
from access.services.tokens import api_token_create
from artifacts.models import Release
from artifacts.services.registration import files_hash, variant_register
from inference_worker import selectors
from inference_worker.services import gpu_queue
from tests.artifacts.conftest import grant_for
from tests.browser import database_url_of_the_test_db
from tests.factories import UserFactory

REPO_ROOT = Path(__file__).resolve().parents[2]
SLUG = "opt-play"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def service_env(**extra: str) -> dict[str, str]:
    """The environment of a worker or web process sharing this test's database, broker and Redis."""
    return dict(
        os.environ, DATABASE_URL=database_url_of_the_test_db(), CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
        CELERY_TASK_ALWAYS_EAGER="0", PLAYGROUND_REDIS_URL=settings.PLAYGROUND_REDIS_URL,
        REDIS_URL=settings.REDIS_URL, PLAYGROUND_HEARTBEAT_SECONDS="0.5", PLAYGROUND_WORKER_TIMEOUT_SECONDS="3",
        OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT), DJANGO_ALLOW_ASYNC_UNSAFE="",
        **{k: str(v) for k, v in extra.items()},
    )


def playground_redis() -> redis.Redis:
    return redis.Redis.from_url(settings.PLAYGROUND_REDIS_URL, decode_responses=True)


def reset_playground_redis() -> None:
    """Streams, heartbeats and queued messages of earlier tests must not leak into this one."""
    playground_redis().flushdb()
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    broker.delete(gpu_queue(SLUG))


def release_from_checkpoint(checkpoint: Path, slug: str = SLUG) -> Release:
    licence = Licence.objects.create(slug=f"{slug}-licence", title="OPT non-commercial licence")
    LicenceVersion.objects.create(licence=licence, number=1, text_markdown="# Terms\nResearch only.",
                                  published_at=timezone.now())
    release = Release.objects.create(slug=slug, name="OPT playground test", licence=licence)
    variant = variant_register(release=release, name="hf-safetensors", location=str(checkpoint))
    files_hash(files=list(variant.files.all()))
    return release


def researcher_with_token(release: Release, scopes=("inference",)):
    """A researcher holding an active, signed grant for ``release`` and a raw API token."""
    user = UserFactory()
    grant_for(user, release)
    _, raw = api_token_create(user=user, name="script", days=30, scopes=list(scopes), created_with_mfa=False)
    return user, raw


@contextlib.contextmanager
def gpu_worker(checkpoint: Path, log_path: Path, *, max_batch: int = 4, concurrency: int | None = None,
               drain_seconds: float = 20, worker_id: str | None = None, tp: int | None = None,
               torchrun: bool = False):
    """``python -m inference_worker.worker`` for the test release; ready once its heartbeat is seen.
    ``torchrun``: launched by ``torch.distributed.run`` with ``tp`` processes instead (give a ``worker_id``)."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(tp),
                "--master-port", str(free_port())] if torchrun else [sys.executable]
    args = [*launcher, "-m", "inference_worker.worker", "--release", SLUG, "--checkpoint", str(checkpoint),
            "--max-batch", str(max_batch), "--threads", "1"]
    if tp and not torchrun:
        args += ["--tp", str(tp)]
    if concurrency:
        args += ["--concurrency", str(concurrency)]
    if worker_id:
        args += ["--worker-id", worker_id]
    with open(log_path, "w") as log:
        process = subprocess.Popen(args, cwd=REPO_ROOT, env=service_env(PLAYGROUND_DRAIN_SECONDS=drain_seconds),
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while not any(w["worker"].endswith(str(process.pid)) or w["worker"] == worker_id
                      for w in selectors.live_workers(release_slug=SLUG)) or "ready." not in log_path.read_text():
            assert process.poll() is None, f"the worker exited:\n{log_path.read_text()}"
            assert time.monotonic() < deadline, f"the worker did not start:\n{log_path.read_text()}"
            time.sleep(0.2)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        with contextlib.suppress(ProcessLookupError):  # whatever it started (ranks) goes with it
            os.killpg(process.pid, signal.SIGKILL)


class ServerURL(str):
    """A server's base URL, and the process serving it."""

    def __new__(cls, url: str, pid: int):
        self = super().__new__(cls, url)
        self.pid = pid
        return self

    def threads(self) -> int:
        status = Path(f"/proc/{self.pid}/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("Threads:")))


@contextlib.contextmanager
def asgi_server(log_path: Path, **settings_env):
    """The portal under uvicorn (async views, streaming) on the test database; yields its base URL.
    ``settings_env``: environment variables for its settings (it does not see this process's)."""
    port = free_port()
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "portal.asgi:application", "--host", "127.0.0.1", "--port", str(port),
             "--log-level", "warning"], cwd=REPO_ROOT, env=service_env(ALLOWED_HOSTS="127.0.0.1,localhost", **settings_env),
            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"uvicorn exited:\n{log_path.read_text()}"
            assert time.monotonic() < deadline, f"uvicorn did not start:\n{log_path.read_text()}"
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            time.sleep(0.2)
        yield ServerURL(f"http://127.0.0.1:{port}", process.pid)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def wait_until(condition, timeout: float = 30, interval: float = 0.1, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {message}")

