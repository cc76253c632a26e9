"""Benchmark the reviewer queue page and the review API list with many pending applications.

Creates N pending applications (bulk inserts, marked with the bench release), signs a reviewer in
through the real password + TOTP flow, times repeated requests and counts their queries, then
removes what it created (unless --keep). Run it on a database of its own:

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/gatehouse_bench python manage.py migrate
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/gatehouse_bench python manage.py bench_review_queue
"""

import random
import secrets
import statistics
import time
from datetime import timedelta

from allauth.account.models import EmailAddress
from allauth.mfa.totp.internal.auth import TOTP, format_hotp_value, generate_totp_secret, hotp_value
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from access.models import Application, Institution, Licence, LicenceVersion, User, VettingSignal
from artifacts.models import Release

BENCH_RELEASE = "bench-opt-175b"
BENCH_DOMAIN = "bench.gatehouse.example"
COUNTRIES = ["GB", "US", "DE", "FR", "IN", "BR", "JP", "CA", "NG", "KR"]
SIGNAL_CODES = ["email_verified", "email_domain", "disposable_email", "embargo", "duplicates", "earlier_rejections",
                "reference"]


class Command(BaseCommand):
    help = "Time the review queue page and review API list with N pending applications (p50/p95, queries)."

    def add_arguments(self, parser):
        parser.add_argument("--applications", type=int, default=10_000)
        parser.add_argument("--requests", type=int, default=60, help="timed requests per URL")
        parser.add_argument("--keep", action="store_true", help="keep the bench data afterwards")

    def handle(self, *args, applications: int, requests: int, keep: bool, **options) -> None:
        if Release.objects.filter(slug=BENCH_RELEASE).exists():
            raise CommandError(f"Bench data exists already (release {BENCH_RELEASE}); remove it or use a fresh DB.")
        started = time.perf_counter()
        release, reviewer, password, secret = self._create(applications)
        self.stdout.write(f"Created {applications} pending applications in {time.perf_counter() - started:.1f} s.")
        try:
            client = self._sign_in(reviewer, password, secret)
            urls = [
                ("queue page", reverse("access:review_queue")),
                ("queue page, filtered", reverse("access:review_queue") + "?country=DE&signal=email_domain"),
                ("queue page 100", reverse("access:review_queue") + "?page=100"),
                ("review API list", reverse("access:api_review_applications")),
                ("review API list, page 100", reverse("access:api_review_applications") + "?page=100"),
            ]
            self.stdout.write(f"{'URL':28} {'queries':>7} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
            for label, url in urls:
                self._measure(client, label, url, requests)
        finally:
            if not keep:
                self._remove()

    def _measure(self, client: Client, label: str, url: str, requests: int) -> None:
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
        p95 = timings[max(0, int(round(0.95 * len(timings))) - 1)]
        self.stdout.write(f"{label:28} {len(queries):>7} {statistics.median(timings):>8.1f} {p95:>8.1f} "
                          f"{timings[-1]:>8.1f}")

    @transaction.atomic
    def _create(self, count: int):
        licence, _ = Licence.objects.get_or_create(slug="bench-licence", defaults={"title": "Bench licence"})
        version = licence.versions.first() or LicenceVersion.objects.create(
            licence=licence, number=1, text_markdown="Bench.", published_at=timezone.now())
        release = Release.objects.create(slug=BENCH_RELEASE, name="Bench OPT-175B", licence=licence)
        institution, _ = Institution.objects.get_or_create(name="Bench University", defaults={
            "email_domains": [BENCH_DOMAIN]})
        password = secrets.token_urlsafe(16)
        reviewer = User.objects.create_superuser(email=f"reviewer@{BENCH_DOMAIN}", password=password, is_staff=True)
        EmailAddress.objects.create(user=reviewer, email=reviewer.email, verified=True, primary=True)
        secret = generate_totp_secret()
        TOTP.activate(reviewer, secret)
        users = User.objects.bulk_create(
            [User(email=f"applicant{i}@{BENCH_DOMAIN}", password="!") for i in range(count)], batch_size=2000)
        now = timezone.now()
        rng = random.Random(1)
        pending = [
            Application(user=user, release=release, institution=institution, legal_name=f"Applicant {i}",
                        role="researcher", country=rng.choice(COUNTRIES), intended_use="Bench." * 40,
                        status=rng.choice([Application.Status.SUBMITTED, Application.Status.IN_REVIEW]),
                        vetting=Application.Vetting.ATTENTION,
                        submitted_at=now - timedelta(minutes=rng.randint(1, 60 * 24 * 60)))
            for i, user in enumerate(users)
        ]
        pending = Application.objects.bulk_create(pending, batch_size=2000)
        signals = [
            VettingSignal(application=application, code=code,
                          level="amber" if code == "email_domain" and rng.random() < 0.2 else "green",
                          explanation="Bench signal.")
            for application in pending for code in SIGNAL_CODES
        ]
        VettingSignal.objects.bulk_create(signals, batch_size=5000)
        del version
        return release, reviewer, password, secret

    @staticmethod
    def _sign_in(reviewer: User, password: str, secret: str) -> Client:
        client = Client(HTTP_HOST="localhost")
        client.post(reverse("account_login"), {"login": reviewer.email, "password": password})
        code = format_hotp_value(hotp_value(secret, int(time.time()) // 30))
        response = client.post(reverse("mfa_authenticate"), {"code": code})
        if response.status_code != 302:
            raise CommandError("Could not sign the bench reviewer in with TOTP.")
        return client

    @transaction.atomic
    def _remove(self) -> None:
        release = Release.objects.get(slug=BENCH_RELEASE)
        Application.objects.filter(release=release).delete()
        User.objects.filter(email__endswith=f"@{BENCH_DOMAIN}").delete()
        release.delete()
        self.stdout.write("Removed the bench data.")
