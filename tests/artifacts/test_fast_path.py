"""The WSGI fast path for /dl/: redirects answered without the middleware stack, everything else
handed to Django exactly once."""

import io

import pytest
from django.core import signals
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections

from artifacts.fast_path import DownloadLinkFastPath
from artifacts.models import DownloadEvent
from portal.wsgi import application
from tests.artifacts.test_downloads import SHARD, link, signed_in  # noqa: F401  (fixture)

pytestmark = pytest.mark.django_db


def wsgi_get(path: str, *, method: str = "GET", host: str = "testserver", app=application,
             **headers) -> tuple[int, dict, bytes]:
    """Call the production WSGI application as a server would."""
    environ = {
        "REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": "", "SERVER_NAME": "testserver",
        "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_HOST": host, "REMOTE_ADDR": "10.1.2.3",
        "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(b""), "wsgi.errors": io.StringIO(),
        **{f"HTTP_{name.upper().replace('-', '_')}": value for name, value in headers.items()},
    }
    answer = {}

    def start_response(status, response_headers, exc_info=None):
        answer["status"], answer["headers"] = int(status.split()[0]), dict(response_headers)

    # Like Django's test client: the request's end must not close the test transaction's connection.
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        chunks = app(environ, start_response)
        content = b"".join(chunks)
        getattr(chunks, "close", lambda: None)()
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)
    return answer["status"], answer["headers"], content


def test_a_redirect_is_answered_with_security_and_no_cache_headers(signed_in, grant, s3_variant):
    status, headers, content = wsgi_get(link(signed_in), User_Agent="curl/8.5")
    assert status == 302 and content == b""
    assert "X-Amz-Signature=" in headers["Location"] and headers["Content-Length"] == "0"
    assert "no-store" in headers["Cache-Control"]
    assert headers["X-Content-Type-Options"] == "nosniff" and headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] == "same-origin"
    event = DownloadEvent.objects.get()
    assert (event.outcome, event.counts_as_download, event.ip, event.user_agent) == (
        "redirected", True, "10.1.2.3", "curl/8.5")


def test_a_refusal_is_decided_once_and_rendered_by_django(signed_in, grant, s3_variant):
    url = link(signed_in)
    status, headers, content = wsgi_get(url[:-3] + "xyz")
    assert status == 403 and headers["Content-Type"].startswith("text/html")
    assert b"not valid" in content and b"My access" in content
    status, _, content = wsgi_get(url[:-3] + "xyz", Accept="application/json")
    assert status == 403 and b'"error": "invalid"' in content
    assert DownloadEvent.objects.filter(outcome="invalid").count() == 2


def test_local_files_are_streamed_by_django_with_range_support(signed_in, grant, local_variant, weight_dir):
    data = (weight_dir / SHARD).read_bytes()
    status, headers, content = wsgi_get(link(signed_in), Range="bytes=10-19")
    assert status == 206 and content == data[10:20]
    assert headers["Content-Range"] == f"bytes 10-19/{len(data)}"
    assert DownloadEvent.objects.get().outcome == "streamed"


def test_other_methods_and_unknown_hosts_get_djangos_answers(signed_in, grant, s3_variant):
    url = link(signed_in)
    assert wsgi_get(url, method="OPTIONS")[0] == 405
    assert wsgi_get(url, host="evil.example")[0] == 400
    assert not DownloadEvent.objects.exists()


def test_plain_http_is_sent_to_https_before_anything_is_decided(signed_in, grant, s3_variant, settings):
    url = link(signed_in)
    settings.SECURE_SSL_REDIRECT = True
    https_only = DownloadLinkFastPath(get_wsgi_application())  # middleware read their settings when loaded
    status, headers, _ = wsgi_get(url, app=https_only)
    assert status == 301 and headers["Location"] == f"https://testserver{url}"
    assert not DownloadEvent.objects.exists()


def test_other_pages_go_through_django(client):
    status, _, content = wsgi_get("/releases/")
    assert status == 200 and b"Releases" in content


def test_the_fast_path_refuses_links_of_a_deactivated_user_and_counts_fresh_ranged_links(
        signed_in, user, grant, s3_variant, settings):
    settings.DOWNLOAD_LIMIT_PER_FILE = 1
    first, second = link(signed_in), link(signed_in)
    assert wsgi_get(first, Range="bytes=1-")[0] == 302
    assert wsgi_get(first, Range="bytes=0-")[0] == 302  # the same download, same address
    assert wsgi_get(second, Range="bytes=1-")[0] == 429
    user.is_active = False
    user.save(update_fields=["is_active"])
    status, _, content = wsgi_get(first, Accept="application/json")
    assert status == 403 and b"revoked" in content


def hub_token(user) -> str:
    from access.services.tokens import api_token_create

    return api_token_create(user=user, name="hf", days=30, scopes=["download"], created_with_mfa=False)[1]


def test_a_hub_resolve_is_answered_as_a_dl_link_is_in_as_many_queries(signed_in, user, grant, s3_variant):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from artifacts import hub

    bearer = f"Bearer {hub_token(user)}"
    resolve = f"/gatehouse/opt-test/resolve/metaseq-mp2/{SHARD}"
    hub.variant_commit(s3_variant)  # kept once the client has seen the repository
    wsgi_get(resolve, Authorization=bearer)  # the token's first use of the minute also notes it
    with CaptureQueriesContext(connection) as hub_queries:
        status, headers, content = wsgi_get(resolve, Authorization=bearer, User_Agent="huggingface_hub/2")
    url = link(signed_in)
    with CaptureQueriesContext(connection) as dl_queries:
        assert wsgi_get(url)[0] == 302
    assert status == 302 and content == b"" and "X-Amz-Signature=" in headers["Location"]
    file = s3_variant.files.get(path=SHARD)
    assert headers["ETag"] == headers["X-Linked-Etag"] == f'"{file.sha256}"'
    assert headers["X-Repo-Commit"] == hub.variant_commit(s3_variant) and headers["X-Linked-Size"] == str(file.size)
    assert "no-store" in headers["Cache-Control"] and headers["X-Frame-Options"] == "DENY"
    assert len(hub_queries) == len(dl_queries) == 2, [q["sql"][:60] for q in hub_queries]
    assert DownloadEvent.objects.filter(file=file, outcome="redirected", user_agent="huggingface_hub/2").count() == 1


def test_hub_refusals_and_local_streams_are_decided_once_and_explained_by_django(user, grant, local_variant,
                                                                                weight_dir, settings):
    from access.services.licences import licence_version_publish

    bearer = f"Bearer {hub_token(user)}"
    data = (weight_dir / SHARD).read_bytes()
    resolve = f"/opt-test/resolve/metaseq-mp2/{SHARD}"
    status, headers, content = wsgi_get(resolve, Authorization=bearer, Range="bytes=10-19")  # commit id not kept yet
    assert status == 206 and content == data[10:20] and headers["X-Repo-Commit"]
    status, headers, _ = wsgi_get("/opt-test/resolve/metaseq-mp2/no-such-file.pt", Authorization=bearer)
    assert status == 404 and headers["X-Error-Code"] == "EntryNotFound"
    status, headers, _ = wsgi_get(resolve, Authorization="Bearer gh_not-a-token")
    assert status == 401
    licence_version_publish(licence=grant.release.licence, text_markdown="# Terms v2", by=None)
    status, headers, _ = wsgi_get(resolve, Authorization=bearer)
    assert status == 403 and headers["X-Error-Code"] == "GatedRepo" and "Accept version 2" in headers["X-Error-Message"]
    assert list(DownloadEvent.objects.order_by("pk").values_list("outcome", flat=True)) == [
        "streamed", "licence_required"]
