"""Benchmark: manifest of a 992-file release, /dl/ redirects under gunicorn with wrk, the Hub's
resolve against /dl/ (--hub-requests) and the download checks at scale (--events).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/gatehouse_bench python manage.py migrate
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/gatehouse_bench python manage.py bench_downloads

Needs PostgreSQL (DATABASE_URL) and `wrk` (Debian package). The variant is registered at an
s3:// location so /dl/ answers with presigned redirects; presigning needs no S3 round trip.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
import psycopg
from django.db import connection
from django.utils import timezone

from access.models import Grant, LicenceAcceptance, LicenceVersion, Licence, User
from artifacts.models import ArtifactFile, DownloadEvent, Release, Variant
from artifacts.services.downloads import manifest_issue
from portal.percentiles import percentile

RELEASE_SLUG = "bench-opt-175b"
SCALE_AGENT = "bench-scale"  # the user agent of the events --events adds
WRK_SCRIPT = """
local urls = {%s}
local counter = 0
local statuses = {}
request = function()
  counter = counter + 1
  return wrk.format("GET", urls[(counter %% #urls) + 1])
end
response = function(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end
"""


class Command(BaseCommand):
    help = "Measure manifest time for a 992-file release and /dl/ redirect throughput under gunicorn."

    def add_arguments(self, parser):
        parser.add_argument("--files", type=int, default=992)
        parser.add_argument("--manifest-runs", type=int, default=30)
        parser.add_argument("--connections", type=int, default=64)
        parser.add_argument("--duration", type=int, default=20, help="seconds of wrk load")
        parser.add_argument("--workers", type=int, default=4, help="gunicorn workers")
        parser.add_argument("--worker-class", default="sync",
                            help="sync: the production downloads service; uvicorn_worker.UvicornWorker: the web service")
        parser.add_argument("--links", type=int, default=4000, help="distinct links cycled by wrk")
        parser.add_argument("--hub-requests", type=int, default=500,
                            help="requests each through /dl/ and the Hub's resolve, alternated (0: skip)")
        parser.add_argument("--skip-wrk", action="store_true", help="skip the wrk throughput run")
        parser.add_argument("--events", type=int, default=0,
                            help="also time the link check and the manifest with this many other download events "
                                 "in the table against an emptied copy of the database, side by side (the events "
                                 "are kept for later runs)")
        parser.add_argument("--timing-child", action="store_true", help=argparse.SUPPRESS)

    def handle(self, *args, **options):
        if connection.vendor != "postgresql":
            raise CommandError("Run the benchmark against PostgreSQL: set DATABASE_URL.")
        if options["timing_child"]:
            return self._serve_timings()
        user, variant = self._fixture(options["files"])
        self.stdout.write(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                          f"Python {platform.python_version()}, PostgreSQL via {settings.DATABASES['default']['HOST']}")
        self._bench_manifest(user, variant, options["manifest_runs"])
        if options["events"]:
            self._bench_at_scale(user, variant, options["events"])
        if options["hub_requests"]:
            self._bench_hub_against_dl(user, variant, options)
        if not options["skip_wrk"]:
            self._bench_redirects(user, variant, options)

    def _fixture(self, file_count: int) -> tuple[User, Variant]:
        licence, _ = Licence.objects.get_or_create(slug="bench-licence", defaults={"title": "Bench licence"})
        version, _ = LicenceVersion.objects.get_or_create(
            licence=licence, number=1, defaults={"text_markdown": "Bench terms.", "published_at": timezone.now()}
        )
        release, _ = Release.objects.get_or_create(slug=RELEASE_SLUG, defaults={"name": "Bench OPT-175B", "licence": licence})
        variant, _ = Variant.objects.get_or_create(
            release=release, name="fsdp-raw", defaults={"location": f"s3://{settings.S3_BUCKET}/bench/opt-175b"}
        )
        if variant.files.count() != file_count:
            variant.files.all().delete()
            ArtifactFile.objects.bulk_create(
                ArtifactFile(
                    variant=variant, path=f"checkpoint_last-model_part-{i % 8}-shard{i // 8}.pt",
                    storage_key=f"bench/opt-175b/checkpoint_last-model_part-{i % 8}-shard{i // 8}.pt",
                    size=330_000_000 + i, sha256=f"{i:064x}", md5=f"{i:032x}", integrity="ok",
                )
                for i in range(file_count)
            )
        user, created = User.objects.get_or_create(email="bench@gatehouse.example")
        if created or not LicenceAcceptance.objects.filter(user=user, licence_version=version).exists():
            LicenceAcceptance.objects.create(user=user, licence_version=version, signature_name="Bench",
                                             text_sha256=version.sha256)
        # Start each run from a realistic history: earlier runs' events would inflate the limit checks.
        DownloadEvent.objects.filter(user=user).delete()
        if not Grant.objects.filter(user=user, release=release, expires_at__gt=timezone.now()).exists():
            Grant.objects.create(user=user, release=release, licence_version=version,
                                 expires_at=timezone.now() + datetime.timedelta(days=30))
        return user, variant

    def _bench_manifest(self, user, variant, runs: int) -> None:
        timings = []
        for _ in range(runs):
            started = time.perf_counter()
            manifest = manifest_issue(user=user, release=variant.release, variant=variant, base_url="http://127.0.0.1")
            timings.append((time.perf_counter() - started) * 1000)
        self.stdout.write(
            f"Manifest of {len(manifest['files'])} files: median {statistics.median(timings):.1f} ms, "
            f"p95 {percentile(timings, 0.95):.1f} ms over {runs} runs (server time, in process)"
        )

    def _bench_at_scale(self, user, variant, events: int) -> None:
        """The link check, a whole /dl/ decision and the manifest against this database with
        ``events`` other download events (other researchers' downloads of the same files) and
        against a copy of it whose event table is empty, request by request in turn, each side going
        first every other time: side by side, so that the machine's changing speed is the same for both."""
        have = DownloadEvent.objects.filter(user_agent=SCALE_AGENT).count()
        if have < events:
            started = time.perf_counter()
            self._scale_events_add(variant, have, events)
            self.stdout.write(f"{events - have:,} other download events added in {time.perf_counter() - started:.0f} s "
                              "(they stay for later runs)")
        DownloadEvent.objects.filter(user=user).delete()
        _analyze()
        events = DownloadEvent.objects.count()
        empty_name = _empty_copy()
        children = {"empty": _timing_child(empty_name), "full": _timing_child(settings.DATABASES["default"]["NAME"])}
        try:
            timings: dict[tuple[str, str], list[float]] = {}
            steps = [(f"check {i}", "link check") for i in range(600)] + \
                    [(f"decide {i}", "/dl/ decision") for i in range(600)] + \
                    [("manifest", "manifest of 992 files") for _ in range(15)]
            for number, (command, name) in enumerate(steps):
                for side in (("empty", "full") if number % 2 else ("full", "empty")):
                    child = children[side]
                    child.stdin.write(command + "\n")
                    child.stdin.flush()
                    answer = child.stdout.readline().strip()
                    if not answer.replace(".", "", 1).isdigit():
                        raise CommandError(f"the {side} side failed: {answer or child.stderr.read()[-2000:]}")
                    timings.setdefault((side, name), []).append(float(answer))
        finally:
            for child in children.values():
                child.stdin.close()
                child.wait(timeout=60)
            _empty_copy_drop(empty_name)
        medians = {key: statistics.median(values[len(values) // 10:]) for key, values in timings.items()}
        self.stdout.write(f"{'':26} {'empty table':>16} {f'{events:,} events':>18} {'ratio':>7}")
        for name in ("link check", "/dl/ decision", "manifest of 992 files"):
            empty, full = medians[("empty", name)], medians[("full", name)]
            self.stdout.write(f"{name:26} {empty:>13.3f} ms {full:>15.3f} ms {full / empty:>6.2f}x")

    def _serve_timings(self) -> None:
        """The child side of ``_bench_at_scale``: time what stdin asks for, one line each, in ms."""
        from artifacts.selectors import download_check
        from artifacts.services.downloads import download_authorize

        user = User.objects.get(email="bench@gatehouse.example")
        variant = Variant.objects.get(release__slug=RELEASE_SLUG, name="fsdp-raw")
        grant = Grant.objects.filter(user=user, release=variant.release, revoked_at=None).latest("expires_at")
        links = [entry["url"].rsplit("/", 1)[1] for entry in
                 manifest_issue(user=user, release=variant.release, variant=variant, base_url="")["files"]]
        file_ids = list(variant.files.order_by("path").values_list("pk", flat=True))
        for line in sys.stdin:
            command, _, number = line.strip().partition(" ")
            index = int(number or 0) % len(file_ids)
            started = time.perf_counter()
            if command == "check":
                download_check(grant_id=grant.pk, user_id=user.pk, file_id=file_ids[index], link_id="x" * 16,
                               ip="127.0.0.1")
            elif command == "decide":
                decision = download_authorize(token=links[index], range_header="", ip="127.0.0.1", user_agent="")
                if decision.status != 302:
                    raise CommandError(f"/dl/ answered {decision.status}: {decision.message}")
            else:
                manifest_issue(user=user, release=variant.release, variant=variant, base_url="")
            sys.stdout.write(f"{(time.perf_counter() - started) * 1000:.4f}\n")
            sys.stdout.flush()
        DownloadEvent.objects.filter(user=user).delete()

    @staticmethod
    def _scale_events_add(variant, have: int, events: int) -> None:
        """Other researchers (with grants of their own) downloading the variant's files over the last
        90 days, a third of the events counted as downloads."""
        release = variant.release
        version = LicenceVersion.objects.filter(licence=release.licence).latest("number")
        User.objects.bulk_create([User(email=f"scale{i}@bench.gatehouse.example", password="!") for i in range(1000)],
                                 ignore_conflicts=True)
        researchers = list(User.objects.filter(email__startswith="scale", email__endswith="@bench.gatehouse.example"))
        Grant.objects.bulk_create([
            Grant(user=researcher, release=release, licence_version=version,
                  expires_at=timezone.now() + datetime.timedelta(days=365))
            for researcher in researchers if not researcher.grants.exists()])
        grants = dict(Grant.objects.filter(user__in=researchers).values_list("user_id", "pk"))
        user_ids = list(grants)
        file_ids = list(variant.files.values_list("pk", flat=True))
        with connection.cursor() as cursor:
            cursor.execute(
                """INSERT INTO artifacts_downloadevent
                       (user_id, grant_id, file_id, link_id, counts_as_download, at, ip, user_agent, range_header,
                        outcome)
                   SELECT users.ids[1 + n %% cardinality(users.ids)], grants.ids[1 + n %% cardinality(grants.ids)],
                          files.ids[1 + (n / 7) %% cardinality(files.ids)], md5(n::text)::varchar(16), n %% 3 = 0,
                          now() - (n %% 7776000) * interval '1 second', '10.0.0.1'::inet, %s, '', %s
                     FROM generate_series(%s, %s) AS n,
                          (SELECT %s::bigint[] AS ids) users, (SELECT %s::bigint[] AS ids) grants,
                          (SELECT %s::bigint[] AS ids) files""",
                [SCALE_AGENT, DownloadEvent.Outcome.REDIRECTED, have + 1, events,
                 user_ids, [grants[user_id] for user_id in user_ids], file_ids])

    def _bench_redirects(self, user, variant, options) -> None:
        if not _which("wrk"):
            raise CommandError("wrk is not installed (apt-get install wrk).")
        urls = []
        while len(urls) < options["links"]:
            manifest = manifest_issue(user=user, release=variant.release, variant=variant, base_url="")
            urls.extend(entry["url"] for entry in manifest["files"])
        urls = urls[: options["links"]]
        _analyze()
        server, port = self._start_server(options)
        try:
            with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
                script.write(WRK_SCRIPT % ",".join(f'"{url}"' for url in urls))
            warm_up = subprocess.run(["wrk", "-t2", "-c64", "-d3s", "-s", script.name, f"http://127.0.0.1:{port}"],
                                     capture_output=True, text=True)
            if warm_up.returncode:
                raise CommandError(f"wrk failed: {warm_up.stderr or warm_up.stdout}")
            started_events = DownloadEvent.objects.filter(outcome="redirected").count()
            result = subprocess.run(
                ["wrk", "-t2", f"-c{options['connections']}", f"-d{options['duration']}s", "--latency",
                 "-s", script.name, f"http://127.0.0.1:{port}"],
                capture_output=True, text=True, check=True,
            )
        finally:
            _stop(server)
        self._report(result.stdout, started_events, options)

    @staticmethod
    def _start_server(options) -> tuple[subprocess.Popen, int]:
        """gunicorn on a free port with the limits lifted, serving the portal as production does."""
        port = _free_port()
        env = dict(os.environ, DEBUG="0", DOWNLOAD_LIMIT_PER_FILE="1000000000", LOG_LEVEL="WARNING",
                   SECRET_KEY=settings.SECRET_KEY, GUNICORN_ACCESS_LOG="")
        if options["worker_class"] == "sync":
            env["DATABASE_CONN_MAX_AGE"] = "600"  # one persistent connection per single-threaded worker
        else:
            env["DATABASE_POOL"] = "1"  # threads under ASGI: connections come from a pool
        # Presigning is computed locally: placeholder keys suffice when none are configured.
        env.setdefault("S3_ACCESS_KEY_ID", settings.S3_ACCESS_KEY_ID or "bench-access-key")
        env.setdefault("S3_SECRET_ACCESS_KEY", settings.S3_SECRET_ACCESS_KEY or "bench-secret-key")
        server = subprocess.Popen(
            [str(Path(sys.executable).parent / "gunicorn"),
             "portal.asgi:application" if "uvicorn" in options["worker_class"].lower() else "portal.wsgi:application",
             "--config", "portal/gunicorn.conf.py",
             "--bind", f"127.0.0.1:{port}", "--workers", str(options["workers"]), "--worker-class", options["worker_class"]],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        _wait_for_port(port, server)
        return server, port

    def _bench_hub_against_dl(self, user, variant, options) -> None:
        """The same files fetched through ``/dl/`` links and through the Hub's ``resolve``, alternated
        request by request, each going first every other time: both answer 302 to presigned storage.

        Each request is written to a new connection as raw bytes and timed until the server closes
        it (a ``sync`` worker closes every connection), so what is measured is the server's work,
        not the client parsing the Hub's five extra headers."""
        from access.models import ApiToken
        from access.services.tokens import api_token_create

        ApiToken.objects.filter(user=user).delete()  # earlier runs' tokens, as a live portal's holder has one or two
        _, token = api_token_create(user=user, name="bench hub", days=1, scopes=["download"], created_with_mfa=False)
        manifest = manifest_issue(user=user, release=variant.release, variant=variant, base_url="")
        files = manifest["files"]
        _analyze()
        server, port = self._start_server(options)
        timings: dict[str, list[float]] = {"/dl/ link": [], "Hub resolve": []}
        try:
            requests = options["hub_requests"]
            for i in range(requests + 50):
                file = files[i % len(files)]
                pair = [("/dl/ link", file["url"], ""),
                        ("Hub resolve", f"/gatehouse/{RELEASE_SLUG}/resolve/{variant.name}/{file['path']}",
                         f"Authorization: Bearer {token}\r\n")]
                for name, path, headers in (pair if i % 2 else pair[::-1]):
                    elapsed, status = _timed_get(port, path, headers)
                    if status != 302:
                        raise CommandError(f"{name} answered {status} for {path}")
                    if i >= 50:  # after a warm-up of 50 each
                        timings[name].append(elapsed)
        finally:
            _stop(server)
        medians = {name: statistics.median(values) for name, values in timings.items()}
        for name, values in timings.items():
            p95 = percentile(values, 0.95)
            self.stdout.write(f"{name}: median {medians[name]:.2f} ms, p95 {p95:.2f} ms over {len(values)} sequential "
                              "requests")
        self.stdout.write(f"Hub resolve / /dl/ link, medians: {medians['Hub resolve'] / medians['/dl/ link']:.2f}x "
                          f"({len(files)}-file variant, {options['workers']} {options['worker_class']} workers)")

    def _report(self, output: str, events_before: int, options) -> None:
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
        p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", output)
        p99_ms = float(p99.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[p99.group(2)]
        transfer = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", output)
        requests = int(re.search(r"(\d+) requests in", output).group(1))
        non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
        redirects = DownloadEvent.objects.filter(outcome="redirected").count() - events_before
        self.stdout.write(output)
        self.stdout.write(
            f"/dl/ redirects: {rps:.0f} requests/s, p99 {p99_ms:.1f} ms, {options['connections']} connections, "
            f"{options['workers']} gunicorn workers ({options['worker_class']}); {requests} requests, "
            f"{redirects} recorded as redirects, non-2xx/3xx: {non_2xx.group(1) if non_2xx else 0}; "
            f"transfer {transfer.group(1)} {transfer.group(2)}/s (headers only: no weight bytes pass through Django)"
        )


def _which(program: str) -> bool:
    return any((Path(folder) / program).exists() for folder in os.environ.get("PATH", "").split(os.pathsep))


def _analyze() -> None:
    """Vacuumed, with statistics for the rows just written, as autovacuum leaves a live portal: without
    statistics PostgreSQL plans for tables it believes empty, and autovacuum would otherwise run
    through the timings."""
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")


def _empty_copy() -> str:
    """A copy of this database (PostgreSQL copies its files: seconds) whose download events are gone."""
    name = settings.DATABASES["default"]["NAME"]
    copy = f"{name}_empty_events"
    connection.close()
    with _maintenance_cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{copy}"')
        for attempt in range(30):  # autovacuum may be in the source for a moment
            try:
                cursor.execute(f'CREATE DATABASE "{copy}" TEMPLATE "{name}"')
                break
            except psycopg.errors.ObjectInUse:
                time.sleep(1)
        else:
            raise CommandError(f"Could not copy {name}: other sessions are using it.")
    with psycopg.connect(_url_of(copy), autocommit=True) as empty:
        empty.execute("TRUNCATE artifacts_downloadevent")
        empty.execute("VACUUM ANALYZE")
    return copy


def _empty_copy_drop(copy: str) -> None:
    with _maintenance_cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{copy}"')


def _url_of(dbname: str) -> str:
    """DATABASE_URL with another database's name."""
    return os.environ["DATABASE_URL"].split("?")[0].rsplit("/", 1)[0] + f"/{dbname}"


@contextlib.contextmanager
def _maintenance_cursor():
    with psycopg.connect(_url_of("postgres"), autocommit=True) as maintenance:
        yield maintenance.cursor()


def _timing_child(dbname: str) -> subprocess.Popen:
    env = dict(os.environ, DATABASE_URL=_url_of(dbname), DEBUG="0", DOWNLOAD_LIMIT_PER_FILE="1000000000",
               LOG_LEVEL="WARNING")
    env.setdefault("S3_ACCESS_KEY_ID", settings.S3_ACCESS_KEY_ID or "bench-access-key")
    env.setdefault("S3_SECRET_ACCESS_KEY", settings.S3_SECRET_ACCESS_KEY or "bench-secret-key")
    return subprocess.Popen([sys.executable, "manage.py", "bench_downloads", "--timing-child"], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=settings.BASE_DIR)


def _timed_get(port: int, path: str, headers: str) -> tuple[float, int]:
    """Milliseconds from connecting until the server has answered and closed, and the status."""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}Connection: close\r\n\r\n".encode()
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    elapsed = (time.perf_counter() - started) * 1000
    return elapsed, int(answer.split(b" ", 2)[1])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(timeout=40)
    except subprocess.TimeoutExpired:
        server.kill()


def _wait_for_port(port: int, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise CommandError(f"gunicorn exited: {server.stderr.read().decode()[-2000:]}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise CommandError("gunicorn did not start listening in 60 s")
