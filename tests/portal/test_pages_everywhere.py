"""Every page of the journey, as each role, in chromium: on a phone (390 x 844) nothing is wider than
the screen and the menu is behind a button; on a phone and on a desktop (1280 x 800) axe-core finds
no serious or critical accessibility violation."""

import json
import re
from pathlib import Path

import pytest
from allauth.mfa.totp.internal.auth import TOTP, generate_totp_secret
from django.contrib.auth.models import Group
from playwright.sync_api import sync_playwright

from access.models import Application, Institution
from access.services.tokens import api_token_create
from artifacts.services.registration import files_hash, variant_register
from tests.access.conftest import INTENDED_USE
from tests.access.factories import ReleaseFactory
from tests.artifacts.conftest import grant_for
from tests.browser import CHROMIUM, CHROMIUM_ARGS
from tests.conftest import totp_code
from tests.factories import DEFAULT_PASSWORD, StaffFactory, UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

AXE = Path(__file__).resolve().parents[1] / "axe" / "node_modules" / "axe-core" / "axe.min.js"
PHONE, DESKTOP = {"width": 390, "height": 844}, {"width": 1280, "height": 800}


def application_for(user, release, status: str) -> Application:
    return Application.objects.create(
        user=user, release=release, status=status, legal_name="Grace Hopper", role="researcher", country="US",
        institution=Institution.objects.get_or_create(name="Example University")[0], intended_use=INTENDED_USE)


@pytest.fixture
def journey(tmp_path):
    """A release with files, a researcher holding access with an open application too, a reviewer."""
    release = ReleaseFactory(slug="opt-demo", name="OPT demo")
    other = ReleaseFactory(slug="opt-175b", name="OPT-175B")
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "reshard-model_part-0.pt").write_bytes(b"x" * 1000)
    files_hash(files=list(variant_register(release=release, name="hf-safetensors", location=str(weights)).files.all()))
    researcher = UserFactory(email="grace@uni.example.edu", first_name="Grace", last_name="Hopper")
    approved = application_for(researcher, release, "approved")
    grant_for(researcher, release)
    asked = application_for(researcher, other, "needs_info")
    api_token_create(user=researcher, name="laptop", days=30, scopes=["download"], created_with_mfa=False)
    reviewer = StaffFactory(is_superuser=False)
    reviewer.groups.add(Group.objects.get(name="Reviewers"))
    secret = generate_totp_secret()
    TOTP.activate(reviewer, secret)
    new_staff = StaffFactory(is_superuser=False)  # no authenticator app yet: sent to set one up
    new_staff.groups.add(Group.objects.get(name="Reviewers"))
    return {"release": release, "researcher": researcher, "approved": approved, "asked": asked,
            "reviewer": reviewer, "secret": secret, "new staff": new_staff}


def sign_in(page, base_url: str, email: str, totp_secret: str | None = None) -> None:
    page.goto(f"{base_url}/accounts/login/")
    page.get_by_label("E-mail address").fill(email)
    page.get_by_label("Password:", exact=True).fill(DEFAULT_PASSWORD)
    page.locator("main").get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()
    if totp_secret:
        page.get_by_label("Code").fill(totp_code(totp_secret))
        page.locator("main").get_by_role("button", name="Sign in").click()
        page.wait_for_load_state()


def pages_of(role: str, journey: dict) -> list[str]:
    slug = journey["release"].slug
    public = ["/", "/releases/", f"/releases/{slug}/", "/transparency/"]
    if role == "visitor":
        return [*public, "/accounts/login/", "/accounts/signup/", "/accounts/password/reset/", "/no-such-page/"]
    if role == "researcher":
        return [*public, f"/releases/{slug}/download/", "/apply/", "/access/",
                f"/access/applications/{journey['approved'].pk}/", f"/access/applications/{journey['asked'].pk}/",
                "/access/tokens/", "/playground/", "/playground/history/", "/accounts/email/",
                "/accounts/password/change/", "/review/moderation/"]  # the last: the portal's 403 page
    if role == "new staff":
        return ["/accounts/2fa/totp/activate/"]
    return ["/review/", f"/review/applications/{journey['asked'].pk}/", "/review/moderation/", "/review/workers/",
            "/access/tokens/", "/accounts/2fa/"]


def wider_than_the_screen(page) -> list[str]:
    """The innermost elements that reach past the right edge of the viewport (to say what overflows)."""
    return page.evaluate("""() => [...document.querySelectorAll("body *")]
        .filter(e => e.getBoundingClientRect().right > window.innerWidth + 0.5
                     && ![...e.children].some(c => c.getBoundingClientRect().right > window.innerWidth + 0.5))
        .slice(0, 5).map(e => `${e.tagName.toLowerCase()}.${e.className} (${Math.round(e.getBoundingClientRect().right)} px)`)""")


def serious_violations(page) -> list[str]:
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("""async () => {
        const result = await axe.run(document, {resultTypes: ["violations"]});
        return result.violations.filter(v => v.impact === "serious" || v.impact === "critical")
            .map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.map(n => n.target.join(" ")).slice(0, 5)}));
    }""")
    return [json.dumps(v) for v in result]


EXPECTED_STATUS = {"/no-such-page/": 404, "/review/moderation/": 403}


@pytest.mark.parametrize("role", ["visitor", "researcher", "reviewer", "new staff"])
def test_every_page_fits_a_phone_and_passes_axe_on_a_phone_and_a_desktop(role, journey, live_server):
    assert AXE.is_file(), "axe-core is missing: run `make install-test` (npm ci in tests/axe)"
    problems = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            # bypass_csp: axe is injected as an inline script, which the portal's policy rightly forbids
            context = browser.new_context(viewport=PHONE, bypass_csp=True)
            page = context.new_page()
            if role != "visitor":
                sign_in(page, live_server.url, journey[role].email,
                        journey["secret"] if role == "reviewer" else None)
                assert "Signed in as" in page.content(), f"{role} could not sign in"
            for path in pages_of(role, journey):
                response = page.goto(f"{live_server.url}{path}")
                expected = 200 if role == "reviewer" else EXPECTED_STATUS.get(path, 200)
                if response.status != expected:
                    problems.append(f"{path}: answered {response.status}")
                    continue
                for size in (PHONE, DESKTOP):
                    page.set_viewport_size(size)
                    if size is PHONE:
                        width = page.evaluate("document.documentElement.scrollWidth")
                        if width > PHONE["width"]:
                            problems.append(f"{path}: {width} px wide on a {PHONE['width']} px phone, past its "
                                            f"edge: {wider_than_the_screen(page)}")
                        if not page.get_by_role("button", name="Menu").is_visible():
                            problems.append(f"{path}: no Menu button on a phone")
                    problems += [f"{path} at {size['width']} px: {v}" for v in serious_violations(page)]
                    page.reload()
                page.set_viewport_size(PHONE)
        finally:
            browser.close()
    assert not problems, "\n".join(problems)


def test_the_phone_menu_opens_and_closes(journey, live_server):
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport=PHONE).new_page()
            page.goto(f"{live_server.url}/")
            releases = page.get_by_role("link", name="Releases")
            menu = page.get_by_role("button", name="Menu")
            header = page.locator("header").bounding_box()["height"]
            assert not releases.is_visible() and header < 120, f"the collapsed header is {header} px high"
            menu.click()
            assert releases.is_visible() and menu.get_attribute("aria-expanded") == "true"
            menu.click()
            assert not releases.is_visible()
        finally:
            browser.close()


SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def test_the_readme_screenshots_show_the_journey(journey, live_server, tmp_path):
    """The README's screenshots, taken here: GATEHOUSE_UPDATE_SCREENSHOTS=1 writes them to docs/screenshots/."""
    import os

    out = SCREENSHOTS if os.environ.get("GATEHOUSE_UPDATE_SCREENSHOTS") == "1" else tmp_path
    out.mkdir(parents=True, exist_ok=True)
    slug = journey["release"].slug
    shots = {
        "researcher": [("release-page.png", f"/releases/{slug}/", None),
                       ("apply-errors.png", "/apply/", lambda page: page.get_by_role("button", name="Submit application").click()),
                       ("downloads.png", f"/releases/{slug}/download/", None)],
        "reviewer": [("review-queue.png", "/review/", None)],
    }
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for role, pages in shots.items():
                page = browser.new_context(viewport=DESKTOP).new_page()
                sign_in(page, live_server.url, journey[role].email, journey["secret"] if role == "reviewer" else None)
                for name, path, action in pages:
                    page.goto(f"{live_server.url}{path}")
                    if action:
                        action(page)
                        page.wait_for_load_state()
                    page.screenshot(path=str(out / name))
                    assert (out / name).stat().st_size > 10_000, name
        finally:
            browser.close()


def test_errors_states_and_helpers_work_in_the_browser(journey, live_server):
    """The error summary takes the focus, the counter counts, the release page shows each visitor their
    state, and a reviewer's reason template fills the reason box with only its action's templates offered."""
    slug = journey["release"].slug
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            visitor = browser.new_context(viewport=DESKTOP).new_page()
            visitor.goto(f"{live_server.url}/releases/{slug}/")
            assert visitor.locator("section.access-box").get_by_role("link", name="Create an account").is_visible()

            page = browser.new_context(viewport=DESKTOP).new_page()
            sign_in(page, live_server.url, journey["researcher"].email)
            page.goto(f"{live_server.url}/releases/{slug}/")
            box = page.locator("section.access-box")
            assert box.get_by_role("link", name="Download the weights").is_visible()
            assert box.get_by_role("link", name="Apply").count() == 0

            page.goto(f"{live_server.url}/apply/")
            page.get_by_label("Intended research use").fill("Too short")
            assert "9 characters: 191 more needed" in page.locator(".char-counter").inner_text()
            page.get_by_label("ORCID iD (optional)").fill("0000-0002-1825-0098")
            page.get_by_role("button", name="Submit application").click()
            page.wait_for_load_state()
            summary = page.locator("#error-summary")
            assert summary.is_visible()
            assert page.evaluate("document.activeElement.id") == "error-summary"
            assert summary.get_by_role("link", name=re.compile("not a valid ORCID")).is_visible()
            summary.get_by_role("link", name=re.compile("at least 200 characters")).click()
            assert page.evaluate("location.hash") == "#id_intended_use"

            reviewer = browser.new_context(viewport=DESKTOP).new_page()
            sign_in(reviewer, live_server.url, journey["reviewer"].email, journey["secret"])
            reviewer.goto(f"{live_server.url}/review/applications/{journey['asked'].pk}/")
            offered = "options => options.filter(o => !o.hidden).map(o => o.dataset.kind)"
            reviewer.get_by_role("radio", name="Reject").check()
            assert set(reviewer.eval_on_selector_all("#reason-template option[data-kind]", offered)) == {"reject"}
            reviewer.get_by_role("radio", name="Request information").check()
            assert set(reviewer.eval_on_selector_all("#reason-template option[data-kind]", offered)) == {
                "request_info"}
            reviewer.get_by_role("radio", name="Reject").check()
            first = reviewer.locator('#reason-template option[data-kind="reject"]').first
            reviewer.locator("#reason-template").select_option(first.get_attribute("value"))
            assert reviewer.locator("#reason").input_value() == first.get_attribute("data-text")
        finally:
            browser.close()


def test_a_reviewer_pages_through_the_queue_on_a_phone_and_a_desktop(journey, live_server, settings):
    """Next and Previous work in the browser (keyset pages), and the paged queue fits a phone and passes axe."""
    from django.utils import timezone

    settings.ACCESS_REVIEW_PAGE_SIZE = 2
    for index in range(5):
        application = application_for(UserFactory(), journey["release"], "submitted")
        application.legal_name = f"Queued Person {index}"
        application.submitted_at = timezone.now() - timezone.timedelta(days=5 - index)
        application.save()
    problems = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport=PHONE, bypass_csp=True).new_page()
            sign_in(page, live_server.url, journey["reviewer"].email, journey["secret"])
            page.goto(f"{live_server.url}/review/")
            seen = [re.findall(r"Queued Person \d", page.content())]
            while page.get_by_role("link", name="Next").count():
                page.get_by_role("link", name="Next").click()
                page.wait_for_load_state()
                seen.append(re.findall(r"Queued Person \d", page.content()))
            for size in (PHONE, DESKTOP):
                page.set_viewport_size(size)
                if size is PHONE and page.evaluate("document.documentElement.scrollWidth") > PHONE["width"]:
                    problems.append(f"the last queue page is wider than a phone: {wider_than_the_screen(page)}")
                problems += [f"at {size['width']} px: {v}" for v in serious_violations(page)]
                page.reload()
            page.get_by_role("link", name="Previous").click()
            page.wait_for_load_state()
            back = re.findall(r"Queued Person \d", page.content())
        finally:
            browser.close()
    assert seen == [["Queued Person 0", "Queued Person 1"], ["Queued Person 2", "Queued Person 3"], ["Queued Person 4"]]
    assert back == ["Queued Person 2", "Queued Person 3"]
    assert not problems, "\n".join(problems)
