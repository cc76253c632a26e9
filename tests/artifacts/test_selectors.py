"""The download checks' hand-written queries: the Hub's finds the rows the request names, in
PostgreSQL's text (LATERAL) and in SQLite's alike."""

import datetime

import pytest
from django.db import connection
from django.utils import timezone

from access.services.tokens import api_token_create, api_token_hash
from artifacts import selectors
from artifacts.hub import variant_commit
from artifacts.models import ArtifactFile, DownloadEvent, Variant
from portal.prepared import fetch_one
from tests.artifacts.conftest import grant_for
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def variant_with(release, name: str, paths: list[str]) -> Variant:
    variant = Variant.objects.create(release=release, name=name, location=f"/weights/{name}")
    ArtifactFile.objects.bulk_create(ArtifactFile(variant=variant, path=path, storage_key=f"{name}/{path}", size=10,
                                                  sha256=f"{len(path):064x}", integrity="ok") for path in paths)
    return variant


def hub_check(raw_token: str, revision: str, path: str, *, slug: str = "opt-test", text: str = "sql"):
    """The Hub check's row for these names, run from ``text`` (the PostgreSQL or the SQLite one)."""
    params = {"token_hash": api_token_hash(raw_token), "slug": slug, "revision": revision, "path": path,
              "main": "main", "config": "config.json", "link": "link-1",
              "since": timezone.now() - datetime.timedelta(days=1), "ip": "127.0.0.1"}
    if text == "sql":
        return fetch_one(selectors.HUB_DOWNLOAD_CHECK, params)
    with connection.cursor() as cursor:
        cursor.execute(selectors.HUB_DOWNLOAD_CHECK.sqlite_sql, params)
        return cursor.fetchone()


def test_the_hub_check_finds_the_grant_the_revision_s_file_and_the_counted_downloads(user, release):
    if connection.vendor != "postgresql":
        pytest.skip("compares PostgreSQL's text with SQLite's, which PostgreSQL runs too")
    old = grant_for(user, release)
    old.revoked_at = timezone.now()
    old.save()
    grant = grant_for(user, release, signed=False)  # the unrevoked grant is the one judged
    metaseq = variant_with(release, "metaseq-mp2", ["dict.txt", "reshard-model_part-0.pt"])
    hub_format = variant_with(release, "hf-fp16", ["config.json", "pytorch_model.bin"])
    variant_with(release, "hf-later", ["config.json", "pytorch_model.bin", "only-here.txt"])  # main: first by name
    raw = api_token_create(user=user, name="hf", days=1, scopes=["download"], created_with_mfa=False)[1]
    other = api_token_create(user=UserFactory(), name="hf", days=1, scopes=["download"], created_with_mfa=False)[1]
    file = hub_format.files.get(path="pytorch_model.bin")
    DownloadEvent.objects.create(user=user, grant=grant, file=file, link_id="link-1", ip="127.0.0.1",
                                 counts_as_download=True, outcome="redirected")

    cases = {
        ("main", "pytorch_model.bin"): ("hf-fp16", "pytorch_model.bin"),
        ("main", "only-here.txt"): None,  # not in main's variant: no file, although a later variant has it
        ("metaseq-mp2", "dict.txt"): ("metaseq-mp2", "dict.txt"),
        (variant_commit(metaseq), "reshard-model_part-0.pt"): ("metaseq-mp2", "reshard-model_part-0.pt"),
        ("metaseq-mp2", "config.json"): None,
        ("no-such-revision", "dict.txt"): None,
    }
    for (revision, path), expected in cases.items():
        row = hub_check(raw, revision, path)
        assert row == hub_check(raw, revision, path, text="sqlite_sql"), (revision, path)
        token, check = selectors.hub_download_check(
            token_hash=api_token_hash(raw), slug="opt-test", revision=revision, path=path, link_id="link-1",
            ip="127.0.0.1")
        assert check.grant_id == grant.pk and check.user_id == user.pk and token.scopes == ["download"]
        found = None if check.file_id is None else ArtifactFile.objects.get(pk=check.file_id)
        assert (found and (found.variant.name, found.path)) == expected, (revision, path)

    _, check = selectors.hub_download_check(token_hash=api_token_hash(raw), slug="opt-test", revision="main",
                                            path="pytorch_model.bin", link_id="link-1", ip="127.0.0.1")
    assert (check.link_counted, check.counted_links, check.latest_licence_accepted) == (True, 1, True)
    for refused in ((other, "main", "config.json", "opt-test"),  # a token whose holder has no grant
                    ("gh_unknown", "main", "config.json", "opt-test"),
                    (raw, "main", "config.json", "no-such-release")):
        assert hub_check(*refused[:3], slug=refused[3]) is None
        assert hub_check(*refused[:3], slug=refused[3], text="sqlite_sql") is None
