"""Release pages: documents rendered safely, variants, what a visitor must do, withheld notices."""

import re

import pytest

from artifacts.models import ArtifactFile, ReleaseDocument
from tests.artifacts.conftest import grant_for
from tests.factories import DEFAULT_PASSWORD, UserFactory

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


def test_the_release_page_shows_each_visitor_their_own_next_step(client, release):
    from access.models import Application, Institution

    def access_box() -> str:
        html = client.get("/releases/opt-test/").content.decode()
        return html[html.index('id="access-heading"'):html.index("</section>", html.index('id="access-heading"'))]

    assert "Create an account" in access_box()
    unverified = UserFactory(verified=False)
    client.force_login(unverified)
    box = access_box()
    assert "Verify your e-mail address first" in box and "/apply/" not in box

    user = UserFactory()
    client.force_login(user)
    assert "/apply/?release=opt-test" in access_box()
    application = Application.objects.create(
        user=user, release=release, status="in_review", legal_name="Ada Lovelace", role="researcher", country="GB",
        institution=Institution.objects.create(name="University of Example"), intended_use="x" * 200)
    box = access_box()
    assert f"application #{application.pk}</a> is" in box and "in review" in box and "/apply/" not in box
    application.status = "needs_info"
    application.save()
    assert "answer it" in access_box()

    application.status = "approved"
    application.save()
    grant_for(user, release)
    box = access_box()
    assert "Download the weights" in box and "/playground/" in box and "/apply/" not in box


def test_my_access_links_to_the_downloads_of_each_active_grant(client, user, grant, local_variant):
    client.login(email=user.email, password=DEFAULT_PASSWORD)
    assert "/releases/opt-test/download/" in client.get("/access/").content.decode()


def test_the_download_page_offers_sha256sums_to_copy_and_download_and_dates_not_timestamps(client, user, grant,
                                                                                          local_variant):
    client.force_login(user)
    html = client.get("/releases/opt-test/download/").content.decode()
    file = ArtifactFile.objects.get(path="nested/dict.txt")
    assert f"{file.sha256}  nested/dict.txt" in html and 'data-copy="sha256sums"' in html
    assert re.search(r"<time datetime=\"[^\"]+\">\d{1,2} \w+ \d{4}, \d\d:\d\d</time>", html)
    sums = client.get("/releases/opt-test/download/SHA256SUMS?variant=metaseq-mp2")
    assert sums.status_code == 200 and sums["Content-Disposition"] == 'attachment; filename="SHA256SUMS"'
    assert f"{file.sha256}  nested/dict.txt\n" in sums.content.decode()


def test_sha256sums_follow_the_links_rules(client, user, release, local_variant):
    client.force_login(user)  # no grant
    refused = client.get("/releases/opt-test/download/SHA256SUMS")
    assert refused.status_code == 403 and ArtifactFile.objects.first().sha256 not in refused.content.decode()
    client.logout()
    assert client.get("/releases/opt-test/download/SHA256SUMS").status_code == 302  # to sign in


def test_the_hugging_face_variant_is_the_default_download(client, user, grant, local_variant, tmp_path):
    from artifacts.services.registration import variant_register

    hub = tmp_path / "hub"
    hub.mkdir()
    (hub / "config.json").write_text("{}")
    variant_register(release=grant.release, name="zz-hub-format", location=str(hub))
    client.force_login(user)
    html = client.get("/releases/opt-test/download/").content.decode()
    assert re.search(r'<option value="zz-hub-format" selected>', html)


def test_a_manifest_opened_in_a_browser_is_json_not_a_developer_page(client, user, grant, local_variant):
    client.force_login(user)
    browser = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"  # chromium's
    response = client.get("/api/v1/releases/opt-test/manifest", HTTP_ACCEPT=browser)
    assert response.status_code == 200 and response["Content-Type"].startswith("application/json")


def headings(html: str) -> list[str]:
    return [re.sub(r"\s+", " ", re.sub("<[^>]+>", "", h)).strip()
            for h in re.findall(r"<h[1-6][^>]*>(.*?)</h[1-6]>", html, re.S)]


def test_the_release_page_has_one_of_each_heading_a_citation_and_the_licence_by_the_access_box(client, release):
    html = client.get("/releases/opt-test/").content.decode()
    assert len(headings(html)) == len(set(headings(html))), headings(html)
    assert "@misc{gatehouse_opt_test," in html and "\\url{http://testserver/releases/opt-test/}" in html
    assert 'data-copy="bibtex"' in html
    assert html.index('id="access-heading"') < html.index('id="licence-heading"') < html.index('id="variants-heading"')
