"""Benchmark: the playground's whole path (HTTP API -> broker -> GPU worker -> Redis stream -> SSE)
against the same engine in one process, on a random opt-125m with the same weights and tokenizer.

    REDIS_URL=redis://127.0.0.1:6379/13 scripts/with-services.sh \\
        .venv/bin/python manage.py bench_playground [--quick] [--output results.json] [--threads N]

Needs PostgreSQL and Redis. It works in a throw-away database of its own, created, migrated and
dropped here (its setup writes audit rows, which a shared, hash-chained audit log could not lose
again), and deletes its keys from Redis; give it a Redis database of its own too (the test suite
flushes databases 1-3). Method, figures and how to read them: docs/playground-benchmark.md.
"""

from __future__ import annotations

import json
import logging
import os
import random
import statistics
import tempfile
import time
import uuid
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction
from django.utils import timezone

from inference_worker import bench_playground as bp

SLUG = "bench-opt-125m"
#: the playground's limits, lifted for the run (environment of the web and worker processes)
LIMITS = {"PLAYGROUND_MAX_CONCURRENT": "100000", "PLAYGROUND_DAILY_TOKENS": str(10**12),
          "PLAYGROUND_MAX_NEW_TOKENS": "2048", "PLAYGROUND_MAX_PROMPT_TOKENS": "2048",
          "PLAYGROUND_QUEUE_CAP": "100000", "PLAYGROUND_MAX_SEQUENCES": "256"}
PAUSE = 0.05  # seconds between sequential first-token requests: each starts on an idle worker


class Command(BaseCommand):
    help = "Time to first token and throughput of the playground's whole path against the engine in one process."

    def add_arguments(self, parser):
        parser.add_argument("--quick", action="store_true", help="a smoke run of about a minute")
        parser.add_argument("--output", help="write every measurement as JSON to this file")
        parser.add_argument("--threads", type=int, default=None, help="engine threads (default: all cores)")
        parser.add_argument("--max-batch", type=int, default=16, help="both engines' continuous batch")
        parser.add_argument("--rounds", type=int, default=None, help="throughput pairs (default 3; 1 with --quick)")

    def handle(self, *args, **options):
        if connection.vendor != "postgresql":
            raise CommandError("Run the benchmark against PostgreSQL: set DATABASE_URL.")
        if not (settings.PLAYGROUND_REDIS_URL and settings.CELERY_BROKER_URL.startswith("redis")):
            raise CommandError("The playground needs Redis as its broker and streams: set REDIS_URL.")
        from inference_worker import selectors

        if selectors.live_workers(release_slug=SLUG):
            raise CommandError(f"A worker already serves {SLUG} on this Redis: is another benchmark running?")
        from inference_worker.streams import redis_client

        self.hub_keys_before = set(redis_client().scan_iter(match="gh:hub:*"))
        from inference_worker.engine import bench  # torch: only now

        logging.getLogger("httpx2").setLevel(logging.WARNING)  # not a line per request

        quick = options["quick"]
        self.plan = {"quick": quick, "threads": options["threads"] or os.cpu_count(), "max_batch": options["max_batch"],
                     "rounds": options["rounds"] or (1 if quick else 3), "ttft_requests": 10 if quick else 50,
                     "users": 8 if quick else 32, "workload": bench.workload(quick)}
        results = {"date": timezone.now().isoformat(timespec="seconds"), "machine": bench.machine(),
                   "code": bp.code_fingerprint(),
                   "load_average_before": os.getloadavg(),
                   "plan": {k: v for k, v in self.plan.items() if k != "workload"}}
        self.started = time.monotonic()
        original_name = connection.settings_dict["NAME"]
        connection.settings_dict.setdefault("TEST", {})["NAME"] = f"{original_name}_bench_playground_{os.getpid()}"
        connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
        self.progress(f"created and migrated the throw-away database {connection.settings_dict['NAME']}")
        try:
            with tempfile.TemporaryDirectory(prefix="bench-playground-") as work:
                results.update(self.run(Path(work), bench))
            self.progress("stopped the processes")
        finally:
            try:
                self.clean_redis()
            finally:
                connection.creation.destroy_test_db(original_name, verbosity=0)
        results["load_average_after"] = os.getloadavg()
        self.stdout.write(bp.table(results))
        if options["output"]:
            Path(options["output"]).write_text(json.dumps(results, indent=2))

    # -- setup --------------------------------------------------------------------------------------

    def run(self, work: Path, bench) -> dict:
        from inference_worker.engine.writers import train_tokenizer
        from inference_worker.selectors import live_worker_ids

        checkpoint = work / SLUG
        bench.write_checkpoint(checkpoint)
        vocab_size = json.loads((checkpoint / "config.json").read_text())["vocab_size"]
        if train_tokenizer(checkpoint, bp.tokenizer_corpus(), vocab_size=vocab_size) != vocab_size:
            raise CommandError("The benchmark's tokenizer does not cover the model's vocabulary.")
        self.progress("wrote the random opt-125m and trained its tokenizer")
        tokens = fixtures(checkpoint, users=self.plan["users"])
        threads, max_batch = self.plan["threads"], self.plan["max_batch"]
        started: list = []
        with ExitStack() as stack:
            stack.callback(lambda: bp.stop(*started))  # all at once (the worker drains)
            worker = bp.start_worker(slug=SLUG, checkpoint=checkpoint, max_batch=max_batch, threads=threads,
                                     env=service_env(DATABASE_POOL="0", PLAYGROUND_DRAIN_SECONDS="5",
                                                     OMP_NUM_THREADS=str(threads)), log=work / "worker.log")
            started.append(worker)
            engine = bp.EngineChild(checkpoint=checkpoint, max_batch=max_batch, threads=threads,
                                    env=dict(os.environ, OMP_NUM_THREADS=str(threads)), log=work / "engine.log")
            started.append(engine.process)
            stack.callback(engine.close)
            web, url = bp.start_web(env=service_env(DATABASE_POOL="1", ALLOWED_HOSTS="127.0.0.1,localhost",
                                                    OMP_NUM_THREADS="1"), log=work / "web.log")
            started.append(web)
            self.worker_log = work / "worker.log"
            bp.wait_for_worker(worker, self.worker_log, live_worker_ids)
            engine.wait_ready()
            self.progress("the worker, uvicorn and the in-process engine are serving")
            self.pids = {"worker": worker.pid, "web": web.pid, "engine": engine.process.pid, "client": os.getpid()}
            try:
                return self.measure(url, tokens, engine, bench)
            except Exception:
                for name in ("worker.log", "web.log", "engine.log"):
                    self.stderr.write(f"--- the end of {name}:\n{(work / name).read_text()[-3000:]}")
                raise

    def clean_redis(self) -> None:
        """Only what this run created: its jobs' keys, its queue, its worker index."""
        import redis

        from inference_worker import streams
        from inference_worker.models import PromptJob
        from inference_worker.services import gpu_queue

        keys = [key(job_id) for job_id in PromptJob.objects.filter(release__slug=SLUG).values_list("id", flat=True)
                for key in (streams.job_stream_key, streams.cancel_key, streams.watch_key)]
        client = streams.redis_client()
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
        hub_keys = set(client.scan_iter(match="gh:hub:*")) - self.hub_keys_before  # the wake stream of our uvicorn
        client.delete(streams.workers_index_key(SLUG), *hub_keys)
        queue = gpu_queue(SLUG)
        redis.Redis.from_url(settings.CELERY_BROKER_URL).delete(queue, f"_kombu.binding.{queue}",
                                                                 f"_kombu.binding_permanent.{queue}")

    # -- measurements -------------------------------------------------------------------------------

    def measure(self, url: str, tokens: list[str], engine: bp.EngineChild, bench) -> dict:
        ttft = self.first_tokens(url, tokens[0], engine)
        workload = self.plan["workload"]
        bodies = [bp.completion_body(SLUG, prompt, n, seed=i) for i, (prompt, n) in enumerate(workload)]
        sides = {"path": lambda users: bp.closed_loop(url, tokens, bodies, users),
                 "engine": lambda users: engine.call("loop", requests=workload, users=users)}
        if not self.plan["quick"]:  # first uses of the batch shapes, on both sides
            warm = bench.workload(True)[:8]
            bp.closed_loop(url, tokens, [bp.completion_body(SLUG, p, n, seed=i) for i, (p, n) in enumerate(warm)], 8)
            engine.call("loop", requests=warm, users=8)
        pairs = []
        for number in range(1, self.plan["rounds"] + 1):  # whole path, in-process, whole path, ...
            pairs.append({side: self.timed(run, len(workload), bench) for side, run in sides.items()})
            self.progress(f"throughput pair {number}: whole path {pairs[-1]['path']['tokens_per_s']:.1f}, "
                          f"in-process {pairs[-1]['engine']['tokens_per_s']:.1f} tokens/s")
        throughput = {"pairs": pairs, "ratio": bp.paired_ratio(pairs, bench.PHASE_SWITCH),
                      "tokens_expected": sum(n for _, n in workload)}
        loop = {side: self.timed(run, self.plan["users"], bench) for side, run in sides.items()}
        self.progress(f"closed loop of {self.plan['users']} users: whole path {loop['path']['tokens_per_s']:.1f}, "
                      f"in-process {loop['engine']['tokens_per_s']:.1f} tokens/s")
        readings = [m[k] for measured in [*pairs, loop] for m in measured.values()
                    for k in ("bandwidth_before", "bandwidth_after")]
        return {"ttft": ttft, "throughput": throughput, "closed_loop": loop, "bandwidth": max(readings),
                "bandwidth_low": min(readings)}

    def first_tokens(self, url: str, token: str, engine: bp.EngineChild) -> dict:
        """Sequential single-token requests on an idle worker, each followed by the same prompt on
        the idle in-process engine; then where the whole path's time went, stage by stage."""
        import httpx2

        rng, warm = random.Random(1), 1 if self.plan["quick"] else 3
        prompts = [[2] + [rng.randrange(4, 50000) for _ in range(31)] for _ in range(warm + self.plan["ttft_requests"])]
        path, inproc = [], []
        require_worker()
        with httpx2.Client(timeout=60) as client:
            for i, prompt in enumerate(prompts):  # the first ``warm``: connections, caches, first uses
                path.append(bp.stream_once(client, url, token, bp.completion_body(SLUG, prompt, 1, seed=i)))
                time.sleep(PAUSE)
                inproc.append(engine.call("ttft", prompt=prompt))
                time.sleep(PAUSE)
        path, inproc = path[warm:], inproc[warm:]
        received = bp.celery_received(self.worker_log.read_text())[warm : warm + len(path)]
        ttft = {"path": bp.latency_ms([r["ttft_s"] for r in path]),
                "engine": bp.latency_ms([r["ttft_s"] for r in inproc]),
                "stages": bp.stage_medians(stage_rows(path, received))}
        ttft["added_ms"] = ttft["path"]["median"] - ttft["engine"]["median"]
        ttft["server_costs"] = server_costs(token, bp.completion_body(SLUG, prompts[0], 1, seed=0), runs=len(path))
        self.progress(f"time to first token: whole path {ttft['path']['median']:.1f} ms, "
                      f"in-process {ttft['engine']['median']:.1f} ms (medians)")
        return ttft

    def progress(self, message: str) -> None:
        self.stdout.write(f"[{time.monotonic() - self.started:6.1f} s] {message}")

    def timed(self, run, users: int, bench) -> dict:
        """One measurement between two bandwidth readings, with the CPU time each process used."""
        require_worker()
        before = bench.read_bandwidth()
        meter = bp.CpuMeter(self.pids)
        result = run(users)
        cpu = meter.stop()
        after = bench.read_bandwidth()
        requests = result.pop("requests")
        if "completion_id" in requests[0]:  # the whole path: where each first token's time went
            result["stage_rows"] = stage_rows(requests)
            result["stages"] = bp.stage_medians(result["stage_rows"], bp.CONCURRENT_STAGES)
        return {**result, "users": users, "ttft": bp.latency_ms([r["ttft_s"] for r in requests]),
                "bandwidth_before": before, "bandwidth_after": after, "cpu_s": cpu, "load_average": os.getloadavg()[0]}


# -- helpers ----------------------------------------------------------------------------------------


def require_worker() -> None:
    from inference_worker.selectors import live_workers

    if not live_workers(release_slug=SLUG):
        raise CommandError("The worker's heartbeat is gone from Redis: did another process flush this Redis "
                           "database? Give the benchmark one of its own (REDIS_URL=redis://127.0.0.1:6379/13).")


def service_env(**extra: str) -> dict[str, str]:
    """The environment of the worker and web processes: this run's database, broker and Redis."""
    db = connection.settings_dict
    password = f":{quote(db['PASSWORD'], safe='')}" if db["PASSWORD"] else ""
    user, host, port = quote(db["USER"] or "", safe=""), db["HOST"] or "127.0.0.1", db["PORT"] or 5432
    database_url = f"postgres://{user}{password}@{host}:{port}/{db['NAME']}"
    return dict(os.environ, DATABASE_URL=database_url, REDIS_URL=settings.REDIS_URL,
                CELERY_BROKER_URL=settings.CELERY_BROKER_URL, PLAYGROUND_REDIS_URL=settings.PLAYGROUND_REDIS_URL,
                CELERY_TASK_ALWAYS_EAGER="0", DEBUG="0", PYTHONPATH=str(bp.REPO_ROOT), **LIMITS, **extra)


@transaction.atomic
def fixtures(checkpoint: Path, *, users: int) -> list[str]:
    """The release (its config.json and tokenizer verified, as the web side requires), and ``users``
    researchers with a signed licence, a grant and an inference API token each; the raw tokens."""
    from access.models import Grant, Licence, LicenceAcceptance, LicenceVersion, User
    from access.services.tokens import api_token_create
    from artifacts.models import Release
    from artifacts.services.registration import files_hash, variant_register
    from inference_worker.release_model import MODEL_FILES

    licence = Licence.objects.create(slug=f"{SLUG}-licence", title="Benchmark licence")
    version = LicenceVersion.objects.create(licence=licence, number=1, text_markdown="Benchmark terms.",
                                            published_at=timezone.now())
    release = Release.objects.create(slug=SLUG, name="Playground benchmark (random opt-125m)", licence=licence)
    variant = variant_register(release=release, name="hf-safetensors", location=str(checkpoint))
    files_hash(files=[f for f in variant.files.all() if f.path in MODEL_FILES])  # the weights are never served
    raw_tokens = []
    for i in range(users):
        user = User.objects.create_user(email=f"bench-{i}@gatehouse.example")
        LicenceAcceptance.objects.create(user=user, licence_version=version, signature_name=f"Bench {i}",
                                         text_sha256=version.sha256)
        Grant.objects.create(user=user, release=release, licence_version=version,
                             expires_at=timezone.now() + timedelta(days=1))
        raw_tokens.append(api_token_create(user=user, name="bench_playground", days=1, scopes=["inference"],
                                           created_with_mfa=False)[1])
    return raw_tokens


class _Rollback(Exception):
    pass


def server_costs(raw_token: str, body: dict, *, runs: int) -> dict:
    """Median milliseconds of the database work on the first token's path, run here on this
    process's own connection: a new connection (what each job of the worker opens, with
    DATABASE_POOL=0 and CONN_MAX_AGE 0), the token check, ``job_submit`` and ``job_claim``, the last
    two rolled back (so nothing is queued)."""
    from access.services.tokens import api_token_authenticate
    from inference_worker import services
    from inference_worker.completions import parse_completion_request
    from inference_worker.models import PromptJob

    times: dict[str, list[float]] = {"new database connection": [], "api_token_authenticate": [],
                                     "job_submit (without its commit)": [], "job_claim (without its commit)": []}

    def timed(name: str, call):
        started = time.perf_counter()
        value = call()
        times[name].append((time.perf_counter() - started) * 1000)
        return value

    for _ in range(runs):
        connection.close()
        timed("new database connection", connection.ensure_connection)
        user = timed("api_token_authenticate", lambda: api_token_authenticate(raw=raw_token)).user
        try:
            with transaction.atomic():
                job = timed("job_submit (without its commit)", lambda: services.job_submit(
                    user=user, request=parse_completion_request(body), source=PromptJob.Source.API))
                timed("job_claim (without its commit)",
                      lambda: services.job_claim(job_id=job.pk, attempt=job.attempt, worker="bench"))
                raise _Rollback
        except _Rollback:
            pass
    return {name: statistics.median(values) for name, values in times.items()}


def stage_rows(records: list[dict], received: list[float] | None = None) -> list[dict]:
    """Each request's stamps (wall clock, seconds): the client's, the job row's, when Redis added the
    job's first ``queued``, ``started`` and ``token`` events (ids in milliseconds), and, for
    sequential requests, when the worker's consumer received each message (``received``, in order)."""
    from inference_worker import streams
    from inference_worker.models import PromptJob

    ids = [uuid.UUID(r["completion_id"].removeprefix("cmpl-")) for r in records]
    jobs = PromptJob.objects.in_bulk(ids)
    client = streams.redis_client()
    rows = []
    for record, job_id, got in zip(records, ids, received or [None] * len(ids), strict=True):
        job, first = jobs[job_id], {}
        for entry_id, fields in client.xrange(streams.job_stream_key(job_id)):
            first.setdefault(fields["type"], bp.stream_id_seconds(entry_id))
        rows.append({"sent": record["sent_wall"], "queued_at": job.queued_at.timestamp(),
                     "queued_event": first["queued"], "received": got, "started_at": job.started_at.timestamp(),
                     "started_event": first["started"], "token_event": first["token"],
                     "client_first": record["first_wall"]})
    return rows
