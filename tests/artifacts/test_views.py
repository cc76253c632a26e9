"""Release pages: documents rendered safely, variants, what a visitor must do, withheld notices."""

import pytest

from artifacts.models import ArtifactFile, ReleaseDocument
from tests.factories import DEFAULT_PASSWORD

pytestmark = pytest.mark.django_db


def test_release_list_and_page_show_the_release(client, release, local_variant):
    assert "OPT test" in client.get("/releases/").content.decode()
    html = client.get("/releases/opt-test/").content.decode()
    assert "metaseq-mp2" in html and "All files verified" in html
    assert "Research only." in html  # the licence text, rendered
    assert "Create an account" in html


def test_documents_are_rendered_from_markdown_without_scripts(client, release):
    ReleaseDocument.objects.create(
        release=release, kind="model_card", title="Model card",
        body_markdown="## Intended use\n\n*Research* only.<script>alert(1)</script>\n\n[x](javascript:alert(1))",
    )
    html = client.get("/releases/opt-test/").content.decode()
    assert "<h3>Intended use</h3>" in html and "<em>Research</em>" in html
    assert "<script>alert" not in html and "javascript:" not in html


def test_withheld_files_are_announced_on_the_release_page(client, release, local_variant):
    ArtifactFile.objects.filter(path="nested/dict.txt").update(integrity="missing")
    html = client.get("/releases/opt-test/").content.decode()
    assert "1 file withheld after an integrity check" in html


def test_unknown_releases_are_404(client, db):
    assert client.get("/releases/nope/").status_code == 404
    assert client.get("/releases/nope/download/").status_code in (302, 404)


def test_the_download_page_gives_links_checksums_and_clients_to_grant_holders(client, user, grant, local_variant):
    client.login(email=user.email, password=DEFAULT_PASSWORD)
    assert "Download the weights" in client.get("/releases/opt-test/").content.decode()
    html = client.get("/releases/opt-test/download/").content.decode()
    file = ArtifactFile.objects.get(path="nested/dict.txt")
    assert file.sha256 in html and "/dl/" in html
    assert "download.sh" in html and "gatehouse_download.py" in html


def test_the_download_page_tells_others_what_to_do(client, user, release, local_variant):
    client.login(email=user.email, password=DEFAULT_PASSWORD)
    html = client.get("/releases/opt-test/download/").content.decode()
    assert "no active access" in html and "/dl/" not in html


def test_the_release_page_sends_signed_in_visitors_to_apply(client, user, release):
    client.login(email=user.email, password=DEFAULT_PASSWORD)
    html = client.get("/releases/opt-test/").content.decode()
    assert "/apply/?release=opt-test" in html


def test_my_access_links_to_the_downloads_of_each_active_grant(client, user, grant, local_variant):
    client.login(email=user.email, password=DEFAULT_PASSWORD)
    assert "/releases/opt-test/download/" in client.get("/access/").content.decode()
