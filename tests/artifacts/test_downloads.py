"""Manifests and /dl/ links: local streaming with Range, S3 redirects, refusals and limits."""

import datetime
import time
import urllib.error
import urllib.request

import pytest
from django.core import signing
from django.utils import timezone

from access.models import LicenceVersion
from access.services.grants import grant_renew, grant_revoke
from access.services.tokens import api_token_create
from artifacts.models import ArtifactFile, DownloadEvent
from tests.artifacts.conftest import grant_for
from tests.factories import DEFAULT_PASSWORD, StaffFactory, UserFactory

pytestmark = pytest.mark.django_db
SHARD = "checkpoint_last-model_part-0-shard0.pt"


@pytest.fixture
def signed_in(client, user):
    client.login(email=user.email, password=DEFAULT_PASSWORD)
    return client


def manifest(client, variant="metaseq-mp2", **headers):
    response = client.get(f"/api/v1/releases/opt-test/manifest?variant={variant}", **headers)
    assert response.status_code == 200, response.content
    return response.json()


def link(client, path=SHARD) -> str:
    url = next(f["url"] for f in manifest(client)["files"] if f["path"] == path)
    return url.removeprefix("http://testserver")


def body(response) -> bytes:
    return b"".join(response.streaming_content)


def test_manifest_lists_verified_files_with_checksums_and_fresh_links(signed_in, grant, local_variant):
    data = manifest(signed_in)
    assert data["release"] == "opt-test" and data["variant"] == "metaseq-mp2"
    files = {f["path"]: f for f in data["files"]}
    stored = ArtifactFile.objects.get(path=SHARD)
    assert files[SHARD]["sha256"] == stored.sha256 and files[SHARD]["size"] == stored.size
    assert files[SHARD]["url"].startswith("http://testserver/dl/")
    assert files[SHARD]["downloads_remaining"] == 10
    # Self-service re-issue: every request gives new links.
    assert manifest(signed_in)["files"][0]["url"] != data["files"][0]["url"]


def test_local_download_streams_the_file_and_supports_range_resume(signed_in, grant, local_variant, weight_dir):
    url, data = link(signed_in), (weight_dir / SHARD).read_bytes()

    response = signed_in.get(url)
    assert response.status_code == 200 and body(response) == data
    assert response["Content-Length"] == str(len(data))

    partial = signed_in.get(url, headers={"Range": "bytes=1000-"})
    assert partial.status_code == 206 and body(partial) == data[1000:]
    assert partial["Content-Range"] == f"bytes 1000-{len(data) - 1}/{len(data)}"

    assert signed_in.get(url, headers={"Range": f"bytes={len(data)}-"}).status_code == 416
    events = DownloadEvent.objects.filter(file__path=SHARD)
    assert events.count() == 3 and events.filter(counts_as_download=True).count() == 1
    assert manifest(signed_in)["files"][0]["downloads_remaining"] == 9


def test_links_work_without_a_session_because_the_token_is_the_credential(client, user, grant, local_variant):
    client.login(email=user.email, password=DEFAULT_PASSWORD)
    url = link(client)
    client.logout()
    assert client.get(url).status_code == 200


def test_a_tampered_link_is_refused_with_advice(signed_in, grant, local_variant):
    url = link(signed_in)
    tampered = url[:-3] + ("AAA" if not url.endswith("AAA") else "BBB")
    response = signed_in.get(tampered)
    assert response.status_code == 403
    assert "e-mail link protection" in response.content.decode()
    json_response = signed_in.get(tampered, headers={"Accept": "application/json"})
    assert json_response.json()["error"] == "invalid"


def test_an_expired_link_answers_410_and_says_how_to_get_a_new_one(signed_in, grant, local_variant, monkeypatch):
    two_days_ago = time.time() - 2 * 24 * 3600
    monkeypatch.setattr(signing.time, "time", lambda: two_days_ago)
    url = link(signed_in)
    monkeypatch.undo()
    response = signed_in.get(url, headers={"Accept": "application/json"})
    assert response.status_code == 410
    assert "re-issued at any time" in response.json()["detail"]


def test_revoking_a_grant_kills_every_issued_link(signed_in, grant, local_variant):
    url = link(signed_in)
    grant_revoke(grant=grant, by=StaffFactory(), reason="Weights were shared outside the licence.")
    response = signed_in.get(url)
    assert response.status_code == 403 and "revoked" in response.content.decode()
    refused = signed_in.get("/api/v1/releases/opt-test/manifest?variant=metaseq-mp2")
    assert refused.status_code == 403 and refused.json()["code"] == "no_active_grant"


def test_renewing_a_grant_supersedes_old_links(signed_in, user, grant, local_variant):
    old = link(signed_in)
    grant.expires_at = timezone.now() + datetime.timedelta(days=10)  # renewal opens in the last weeks
    grant.save()
    grant_renew(grant=grant, by=user)
    assert signed_in.get(old).status_code == 410
    assert signed_in.get(link(signed_in)).status_code == 200


def test_download_limit_counts_distinct_downloads_not_retries(signed_in, grant, local_variant, settings):
    settings.DOWNLOAD_LIMIT_PER_FILE = 2
    first, second, third = link(signed_in), link(signed_in), link(signed_in)
    assert signed_in.get(first).status_code == 200
    assert signed_in.get(first).status_code == 200  # a retry of the same link
    assert signed_in.get(first, headers={"Range": "bytes=10-"}).status_code == 206
    assert signed_in.get(second).status_code == 200

    refused = signed_in.get(third, headers={"Accept": "application/json"})
    assert refused.status_code == 429
    assert int(refused["Retry-After"]) > 0
    assert "Resuming a partial download with the same link is always allowed" in refused.json()["detail"]
    assert signed_in.get(first, headers={"Range": "bytes=5-"}).status_code == 206  # resuming still works
    assert manifest(signed_in)["files"][0]["downloads_remaining"] == 0


def test_a_fresh_link_counts_at_its_first_use_whatever_its_range(signed_in, grant, local_variant, settings):
    settings.DOWNLOAD_LIMIT_PER_FILE = 1
    first, second = link(signed_in), link(signed_in)
    assert signed_in.get(first, headers={"Range": "bytes=1-"}).status_code == 206
    assert signed_in.get(first, headers={"Range": "bytes=0-"}).status_code == 206  # the same download

    refused = signed_in.get(second, headers={"Range": "bytes=1-", "Accept": "application/json"})
    assert refused.status_code == 429 and refused.json()["error"] == "over_limit"
    assert refused.json()["detail"] == signed_in.get(second, headers={"Accept": "application/json"}).json()["detail"]


def test_a_link_shared_with_another_address_counts_again(signed_in, grant, local_variant, settings):
    settings.DOWNLOAD_LIMIT_PER_FILE = 2
    url = link(signed_in)
    assert signed_in.get(url, REMOTE_ADDR="192.0.2.1").status_code == 200
    assert signed_in.get(url, REMOTE_ADDR="192.0.2.1", headers={"Range": "bytes=10-"}).status_code == 206
    assert signed_in.get(url, REMOTE_ADDR="198.51.100.7", headers={"Range": "bytes=10-"}).status_code == 206
    assert manifest(signed_in)["files"][0]["downloads_remaining"] == 0
    assert signed_in.get(url, REMOTE_ADDR="203.0.113.9").status_code == 429
    assert signed_in.get(url, REMOTE_ADDR="192.0.2.1", headers={"Range": "bytes=20-"}).status_code == 206


def test_deactivating_a_user_kills_their_issued_links(signed_in, user, grant, local_variant):
    url = link(signed_in)
    user.is_active = False
    user.save(update_fields=["is_active"])
    response = signed_in.get(url, headers={"Accept": "application/json"})
    assert response.status_code == 403 and response.json()["error"] == "revoked"


def test_withheld_files_are_left_out_of_manifests_and_refused(signed_in, grant, local_variant):
    url = link(signed_in)
    ArtifactFile.objects.filter(path=SHARD).update(integrity=ArtifactFile.Integrity.CORRUPTED)
    data = manifest(signed_in)
    assert SHARD not in [f["path"] for f in data["files"]]
    assert data["withheld"] == [{"path": SHARD, "reason": "Stored bytes changed since registration"}]
    assert signed_in.get(url).status_code == 409


def test_manifest_errors_are_specific(signed_in, grant, local_variant, client):
    assert signed_in.get("/api/v1/releases/no-such/manifest").status_code == 404
    bad_variant = signed_in.get("/api/v1/releases/opt-test/manifest?variant=nope")
    assert bad_variant.status_code == 400 and "metaseq-mp2" in bad_variant.json()["variant"][0]
    client.logout()
    assert client.get("/api/v1/releases/opt-test/manifest").status_code in (401, 403)


def test_manifests_and_clients_need_a_token_with_the_download_scope(client, user, grant, local_variant):
    _, inference_only = api_token_create(user=user, name="chat", days=30, scopes=["inference"], created_with_mfa=False)
    _, download = api_token_create(user=user, name="cluster", days=30, scopes=["download"], created_with_mfa=False)
    message = "This API token lacks the 'download' scope; create a token with it at /access/tokens/."
    for name in ["manifest", "download.sh", "gatehouse_download.py"]:
        refused = client.get(f"/api/v1/releases/opt-test/{name}?variant=metaseq-mp2",
                             HTTP_AUTHORIZATION=f"Bearer {inference_only}")
        assert refused.status_code == 403 and refused.json()["detail"] == message
        allowed = client.get(f"/api/v1/releases/opt-test/{name}?variant=metaseq-mp2",
                             HTTP_AUTHORIZATION=f"Bearer {download}")
        assert allowed.status_code == 200, allowed.content
    assert manifest(client, HTTP_AUTHORIZATION=f"Bearer {download}")["files"]


def test_researchers_without_a_grant_get_no_links(client, release, local_variant):
    other = UserFactory()
    client.login(email=other.email, password=DEFAULT_PASSWORD)
    response = client.get("/api/v1/releases/opt-test/manifest?variant=metaseq-mp2")
    assert response.status_code == 403 and "Apply for it" in response.json()["detail"]


def test_s3_download_redirects_to_a_short_lived_presigned_url_the_server_checks(
    signed_in, grant, s3_variant, weight_dir, settings
):
    response = signed_in.get(link(signed_in))
    assert response.status_code == 302
    presigned = response["Location"]
    assert "X-Amz-Signature=" in presigned and "X-Amz-Expires=300" in presigned
    with urllib.request.urlopen(presigned) as s3_response:
        assert s3_response.read() == (weight_dir / SHARD).read_bytes()

    tampered = presigned.replace("X-Amz-Expires=300", "X-Amz-Expires=3000")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(tampered)
    assert refused.value.code == 403

    settings.DOWNLOAD_PRESIGN_SECONDS = 1
    short_lived = signed_in.get(link(signed_in))["Location"]
    time.sleep(2.5)
    with pytest.raises(urllib.error.HTTPError) as expired:
        urllib.request.urlopen(short_lived)
    assert expired.value.code == 403


def test_s3_range_requests_pass_through_to_storage(signed_in, grant, s3_variant, weight_dir):
    response = signed_in.get(link(signed_in), headers={"Range": "bytes=100-199"})
    request = urllib.request.Request(response["Location"], headers={"Range": "bytes=100-199"})
    with urllib.request.urlopen(request) as s3_response:
        assert s3_response.status == 206
        assert s3_response.read() == (weight_dir / SHARD).read_bytes()[100:200]


def test_every_use_of_a_link_is_recorded(signed_in, user, grant, local_variant):
    url = link(signed_in)
    signed_in.get(url, HTTP_USER_AGENT="wget/1.21")
    event = DownloadEvent.objects.get()
    assert (event.user, event.grant, event.file.path, event.outcome) == (user, grant, SHARD, "streamed")
    assert event.user_agent == "wget/1.21" and event.ip == "127.0.0.1"


def test_another_researchers_grant_does_not_extend_to_me(client, release, local_variant):
    owner, other = UserFactory(), UserFactory()
    grant_for(owner, release)
    client.login(email=other.email, password=DEFAULT_PASSWORD)
    assert client.get("/api/v1/releases/opt-test/manifest?variant=metaseq-mp2").status_code == 403


def test_a_new_licence_version_must_be_accepted_before_the_next_download(signed_in, grant, local_variant, release):
    url = link(signed_in)
    LicenceVersion.objects.create(licence=release.licence, number=2, text_markdown="# Terms v2", published_at=timezone.now())

    response = signed_in.get(url, headers={"Accept": "application/json"})
    assert response.status_code == 403
    assert "Accept version 2" in response.json()["detail"]
    assert "/access/licences/opt-test/" in response.json()["detail"]
    refused = signed_in.get("/api/v1/releases/opt-test/manifest?variant=metaseq-mp2")
    assert refused.status_code == 403 and refused.json()["code"] == "licence_acceptance_required"


def test_a_storage_failure_answers_503_and_does_not_count(signed_in, grant, s3_variant, settings):
    settings.S3_ACCESS_KEY_ID = settings.S3_SECRET_ACCESS_KEY = ""
    settings.S3_ENDPOINT_URL = "http://127.0.0.1:9"
    response = signed_in.get(link(signed_in), headers={"Accept": "application/json"})
    assert response.status_code == 503 and response["Retry-After"] == "30"
    assert not DownloadEvent.objects.filter(counts_as_download=True).exists()


def test_a_download_link_is_checked_and_recorded_in_three_queries(signed_in, grant, local_variant,
                                                                   django_assert_num_queries):
    url = link(signed_in)
    signed_in.logout()
    with django_assert_num_queries(3):
        response = signed_in.get(url)
    assert response.status_code == 200


def test_a_file_whose_key_escapes_the_storage_root_is_never_served(signed_in, grant, local_variant):
    from artifacts.services.registration import file_hash

    url = link(signed_in)
    stored = ArtifactFile.objects.get(path=SHARD)
    stored.storage_key = "../../../../../../etc/passwd"
    stored.save(update_fields=["storage_key"])
    response = signed_in.get(url, headers={"Accept": "application/json"})
    assert response.status_code == 409 and response.json()["error"] == "withheld"
    assert file_hash(file=stored).integrity != ArtifactFile.Integrity.OK
    assert "escapes the storage root" in ArtifactFile.objects.get(pk=stored.pk).integrity_detail


def test_the_admin_cannot_change_where_registered_files_are_read_from(client, local_variant):
    from allauth.mfa.totp.internal.auth import TOTP, generate_totp_secret

    from tests.access.conftest import log_in_with_totp

    admin = StaffFactory(is_superuser=True)
    admin.totp_secret = generate_totp_secret()
    TOTP.activate(admin, admin.totp_secret)
    log_in_with_totp(client, admin)
    stored = ArtifactFile.objects.get(path=SHARD)
    page = client.get(f"/admin/artifacts/artifactfile/{stored.pk}/change/").content.decode()
    assert "Change artifact file" in page
    assert 'name="storage_key"' not in page and stored.storage_key in page
    page = client.get(f"/admin/artifacts/variant/{local_variant.pk}/change/").content.decode()
    assert 'name="location"' not in page and local_variant.location in page
    # Nor can a variant or file be added there pointing elsewhere: only register_release adds them.
    assert client.get("/admin/artifacts/variant/add/").status_code == 403
    assert client.get("/admin/artifacts/artifactfile/add/").status_code == 403


def test_personal_links_are_never_stored_by_a_cache(signed_in, grant, local_variant):
    for path in ["/api/v1/releases/opt-test/manifest?variant=metaseq-mp2",
                 "/api/v1/releases/opt-test/download.sh?variant=metaseq-mp2",
                 "/api/v1/releases/opt-test/gatehouse_download.py?variant=metaseq-mp2",
                 "/releases/opt-test/download/"]:
        response = signed_in.get(path)
        assert response.status_code == 200, path
        assert "no-store" in response["Cache-Control"], path
