"""Benchmark what reviewers and applicants open, at the sizes a real release meets.

For each size N given (``--applications 10000 100000``) the data grows to N pending applications
(7 vetting signals each) and ``--decided-per-pending`` (10) times as many decided ones, built in
bulk; then every page and API a reviewer or an applicant uses is timed (p50/p95 of ``--requests``
requests, after a warm-up) with its query count, and the sizes are reported side by side. A
reviewer signs in through the real password + TOTP flow; the applicant is one of the pending ones.
The data is removed afterwards unless ``--keep``. Run it on a database of its own:

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/gatehouse_bench python manage.py migrate
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/gatehouse_bench python manage.py bench_review_queue \
        --applications 10000 100000
"""

import html
import os
import random
import re
import secrets
import statistics
import time
from datetime import timedelta

from allauth.account.models import EmailAddress
from allauth.mfa.totp.internal.auth import TOTP, format_hotp_value, generate_totp_secret, hotp_value
from django.core.cache import cache
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from access.models import Application, Institution, Licence, LicenceVersion, User, VettingSignal
from access.services.figures import figures_refresh
from artifacts.models import Release

BENCH_RELEASE = "bench-opt-175b"
BENCH_DOMAIN = "bench.gatehouse.example"
COUNTRIES = ["GB", "US", "DE", "FR", "IN", "BR", "JP", "CA", "NG", "KR"]
SIGNAL_CODES = ["email_verified", "email_domain", "disposable_email", "embargo", "duplicates", "earlier_rejections",
                "reference"]
CHUNK = 20_000
S = Application.Status


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Command(BaseCommand):
    help = "Time the reviewer's and applicant's pages and APIs at N pending applications (p50/p95, queries)."

    def add_arguments(self, parser):
        parser.add_argument("--applications", type=int, nargs="+", default=[10_000],
                            help="pending applications, one or more sizes measured in turn")
        parser.add_argument("--decided-per-pending", type=int, default=10,
                            help="decided (approved, rejected, withdrawn) applications per pending one")
        parser.add_argument("--requests", type=int, default=40, help="timed requests per URL")
        parser.add_argument("--deep-pages", type=int, default=100, help="how far in the deep pages are")
        parser.add_argument("--keep", action="store_true",
                            help="keep the bench data afterwards (a later run starts from it)")

    def handle(self, *args, applications: list[int], decided_per_pending: int, requests: int, deep_pages: int,
               keep: bool, **options) -> None:
        if connection.vendor != "postgresql":
            raise CommandError("Run the benchmark against PostgreSQL: set DATABASE_URL.")
        results: dict[int, dict[str, tuple[int, float, float]]] = {}
        try:
            release, reviewer, password, secret = self._setup()
            made = {"pending": release.applications.filter(status__in=[S.SUBMITTED, S.IN_REVIEW]).count(),
                    "decided": release.applications.filter(status__in=[S.APPROVED, S.REJECTED, S.WITHDRAWN]).count()}
            for size in sorted(applications):
                started = time.perf_counter()
                self._grow(release, made, pending=size, decided=size * decided_per_pending)
                with connection.cursor() as cursor:  # as autovacuum leaves a live database
                    cursor.execute("VACUUM ANALYZE")
                self.stdout.write(f"{made['pending']:,} pending and {made['decided']:,} decided applications "
                                  f"ready in {time.perf_counter() - started:.0f} s.")
                cache.clear()
                results[size] = self._measure_all(release, reviewer, password, secret, requests, deep_pages)
            self._report(results)
        finally:
            if not keep:
                self._remove()

    # The data --------------------------------------------------------------------------------------

    @transaction.atomic
    def _setup(self):
        """The bench release (an earlier ``--keep`` run's, with its applications, when there is one) and
        a reviewer with a new password and TOTP secret."""
        licence, _ = Licence.objects.get_or_create(slug="bench-licence", defaults={"title": "Bench licence"})
        if not licence.versions.exists():
            LicenceVersion.objects.create(licence=licence, number=1, text_markdown="Bench.", published_at=timezone.now())
        release, _ = Release.objects.get_or_create(slug=BENCH_RELEASE,
                                                   defaults={"name": "Bench OPT-175B", "licence": licence})
        Institution.objects.get_or_create(name="Bench University", defaults={"email_domains": [BENCH_DOMAIN]})
        password = secrets.token_urlsafe(16)
        User.objects.filter(email=f"reviewer@{BENCH_DOMAIN}").delete()
        reviewer = User.objects.create_superuser(email=f"reviewer@{BENCH_DOMAIN}", password=password, is_staff=True)
        EmailAddress.objects.create(user=reviewer, email=reviewer.email, verified=True, primary=True)
        secret = generate_totp_secret()
        TOTP.activate(reviewer, secret)
        return release, reviewer, password, secret

    def _grow(self, release: Release, made: dict, *, pending: int, decided: int) -> None:
        """Add applications, in chunks of bulk inserts, until there are ``pending`` and ``decided`` of them."""
        institution = Institution.objects.get(name="Bench University")
        now = timezone.now()
        rng = random.Random(made["pending"] * 7 + made["decided"])
        for kind, target in (("pending", pending), ("decided", decided)):
            while made[kind] < target:
                count = min(CHUNK, target - made[kind])
                with transaction.atomic():
                    first = made["pending"] + made["decided"]
                    users = User.objects.bulk_create(
                        [User(email=f"applicant{first + i}@{BENCH_DOMAIN}", password="!") for i in range(count)],
                        batch_size=5000)
                    rows = [self._application(kind, user, release, institution, now, rng) for user in users]
                    rows = Application.objects.bulk_create(rows, batch_size=5000)
                    if kind == "pending":
                        VettingSignal.objects.bulk_create([
                            VettingSignal(application=application, code=code, explanation="Bench signal.",
                                          level="amber" if code == "email_domain" and rng.random() < 0.2 else "green")
                            for application in rows for code in SIGNAL_CODES], batch_size=10_000)
                made[kind] += count

    @staticmethod
    def _application(kind: str, user: User, release: Release, institution: Institution, now, rng) -> Application:
        application = Application(
            user=user, release=release, institution=institution, legal_name=f"Applicant {user.email}",
            role="researcher", country=rng.choice(COUNTRIES), intended_use="Bench. " * 40,
            vetting=Application.Vetting.ATTENTION)
        if kind == "pending":
            application.status = rng.choice([S.SUBMITTED, S.IN_REVIEW])
            application.submitted_at = now - timedelta(minutes=rng.randint(1, 60 * 24 * 60))
        else:  # decided over the last year, most within a fortnight of submission
            application.status = rng.choices([S.APPROVED, S.REJECTED, S.WITHDRAWN], weights=[70, 25, 5])[0]
            application.submitted_at = now - timedelta(minutes=rng.randint(60 * 24 * 15, 60 * 24 * 380))
            application.decided_at = application.submitted_at + timedelta(minutes=rng.randint(10, 60 * 24 * 14))
            application.decision_reason = "Bench decision."
        return application

    @transaction.atomic
    def _remove(self) -> None:
        release = Release.objects.filter(slug=BENCH_RELEASE).first()
        if release is not None:
            with connection.cursor() as cursor:  # the ORM would collect a million rows to delete them
                cursor.execute("DELETE FROM access_vettingsignal WHERE application_id IN "
                               "(SELECT id FROM access_application WHERE release_id = %s)", [release.pk])
                cursor.execute("DELETE FROM access_application WHERE release_id = %s", [release.pk])
                cursor.execute("DELETE FROM access_user WHERE email LIKE %s", [f"applicant%@{BENCH_DOMAIN}"])
            release.delete()
        User.objects.filter(email__endswith=f"@{BENCH_DOMAIN}").delete()
        self.stdout.write("Removed the bench data.")

    # The measurements ------------------------------------------------------------------------------

    def _measure_all(self, release, reviewer, password, secret, requests, deep_pages) -> dict:
        reviewer_client = self._sign_in(reviewer, password, secret)
        pending = (Application.objects.filter(release=release, status__in=[S.SUBMITTED, S.IN_REVIEW])
                   .order_by("submitted_at", "pk"))
        middle = pending[pending.count() // 2]
        applicant_client = Client(HTTP_HOST="localhost")
        applicant_client.force_login(middle.user)
        queue, api = reverse("access:review_queue"), reverse("access:api_review_applications")
        deep_queue = self._follow_next(reviewer_client, queue, pages=deep_pages, api=False)
        deep_api = self._follow_next(reviewer_client, api, pages=deep_pages, api=True)
        urls = [
            ("queue page", reviewer_client, queue),
            ("queue page, filtered", reviewer_client, queue + "?country=DE&signal=email_domain"),
            ("queue page, a filter nobody meets", reviewer_client, queue + "?country=IS&signal=embargo"),
            (f"queue page {deep_pages + 1}", reviewer_client, deep_queue),
            ("queue page, decided", reviewer_client, queue + "?status=decided"),
            ("queue page, decided in Iceland", reviewer_client, queue + "?status=decided&country=IS"),
            ("review API list", reviewer_client, api),
            (f"review API list, page {deep_pages + 1}", reviewer_client, deep_api),
            ("application (reviewer)", reviewer_client, reverse("access:review_detail", args=[middle.pk])),
            ("status page (applicant)", applicant_client, reverse("access:application_detail", args=[middle.pk])),
            ("application API (applicant)", applicant_client, reverse("access:api_application",
                                                                 args=[middle.pk])),
            ("My access", applicant_client, reverse("access:my_access")),
            ("home page (applicant)", applicant_client, "/"),
            ("apply page", applicant_client, reverse("access:apply")),
            ("release page (applicant)", applicant_client, reverse("artifacts:release_detail", args=[release.slug])),
            ("transparency page", Client(HTTP_HOST="localhost"), reverse("access:transparency")),
        ]
        results = {}
        began = time.perf_counter()
        figures_refresh()
        refresh = (time.perf_counter() - began) * 1000
        results["figures refresh (beat task)"] = ("-", refresh, refresh)
        self.stdout.write(f"  figures refresh: {refresh:.0f} ms")
        for label, client, url in urls:
            results[label] = self._measure(client, url, requests)
            self.stdout.write(f"  {label}: {results[label]}")
        for fmt in ("csv", "json"):
            url = reverse("access:review_export", args=[release.slug, fmt])
            label = f"export .{fmt} (first byte; whole)"
            results[label] = self._measure_export(reviewer_client, url)
            self.stdout.write(f"  {label}: {results[label]}")
        return results

    @staticmethod
    def _follow_next(client: Client, url: str, *, pages: int, api: bool) -> str:
        """The URL of the page ``pages`` pages after ``url``, followed through the 'next' links."""
        for _ in range(pages):
            response = client.get(url)
            if api:
                following = response.json()["next"]
            else:
                found = re.search(r'<a href="([^"]+)" rel="next">', response.content.decode())
                following = found and html.unescape(found.group(1))
            if not following:
                raise CommandError(f"{url} has no next page")
            url = following.removeprefix("http://localhost")
        return url

    @staticmethod
    def _measure(client: Client, url: str, requests: int) -> tuple[int, float, float]:
        client.get(url)  # warm up
        queries = []
        with connection.execute_wrapper(lambda execute, sql, *rest: queries.append(sql) or execute(sql, *rest)):
            response = client.get(url)
        if response.status_code != 200:
            raise CommandError(f"{url} answered {response.status_code}")
        timings = []
        for _ in range(requests):
            began = time.perf_counter()
            client.get(url)
            timings.append((time.perf_counter() - began) * 1000)
        timings.sort()
        return len(queries), statistics.median(timings), timings[max(0, int(round(0.95 * len(timings))) - 1)]

    @staticmethod
    def _measure_export(client: Client, url: str) -> tuple[str, float, float]:
        """The size and the growth of the process's memory while it streamed, the first byte and the
        whole export in ms."""
        before = peak = _resident_bytes()
        began = time.perf_counter()
        response = client.get(url)
        if response.status_code != 200:
            raise CommandError(f"{url} answered {response.status_code}")
        chunks = iter(response.streaming_content) if response.streaming else iter([response.content])
        size = len(next(chunks))
        first = (time.perf_counter() - began) * 1000
        for number, chunk in enumerate(chunks):
            size += len(chunk)
            if number % 5000 == 0:
                peak = max(peak, _resident_bytes())
        whole = (time.perf_counter() - began) * 1000
        peak = max(peak, _resident_bytes())
        return f"{size / 1e6:.0f} MB, +{(peak - before) / 1e6:.0f} MB", first, whole

    @staticmethod
    def _sign_in(reviewer: User, password: str, secret: str) -> Client:
        client = Client(HTTP_HOST="localhost")
        client.post(reverse("account_login"), {"login": reviewer.email, "password": password})
        code = format_hotp_value(hotp_value(secret, int(time.time()) // 30))
        response = client.post(reverse("mfa_authenticate"), {"code": code})
        if response.status_code != 302:
            raise CommandError("Could not sign the bench reviewer in with TOTP.")
        return client

    def _report(self, results: dict) -> None:
        sizes = sorted(results)
        header = f"{'URL':36}" + "".join(f" | {f'{size:,} pending':>26}" for size in sizes)
        self.stdout.write(header)
        self.stdout.write(f"{'':36}" + "".join(f" | {'queries   p50 ms   p95 ms':>26}" for _ in sizes))
        for label in results[sizes[0]]:
            cells = []
            for size in sizes:
                queries, p50, p95 = results[size][label]
                if isinstance(queries, int):
                    cells.append(f"{queries:>7} {p50:>8.1f} {p95:>8.1f}")
                elif queries == "-":  # one timing
                    cells.append(f"{p50:>8.0f} ms once")
                else:
                    cells.append(f"{queries} {p50:>6.0f} {p95:>6.0f}")
            self.stdout.write(f"{label:36}" + "".join(f" | {cell:>26}" for cell in cells))
