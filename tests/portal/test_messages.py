"""allauth's pages speak in the portal's voice: the en_GB catalogue is compiled from its source."""

import gettext
import re
from pathlib import Path

import pytest
from django.urls import reverse

CATALOGUE = Path(__file__).resolve().parents[2] / "portal" / "locale" / "en_GB" / "LC_MESSAGES"


def po_entries() -> dict[str, str]:
    text = (CATALOGUE / "django.po").read_text()
    unescape = lambda s: s.encode().decode("unicode_escape").encode("latin-1").decode("utf-8")  # noqa: E731
    return {unescape(i): unescape(s) for i, s in re.findall(r'^msgid "(.+)"\nmsgstr "(.*)"$', text, re.M)}


def test_the_compiled_catalogue_holds_exactly_the_source_s_messages():
    with open(CATALOGUE / "django.mo", "rb") as mo:
        compiled = gettext.GNUTranslations(mo)
    entries = po_entries()
    assert len(entries) > 100
    for msgid, msgstr in entries.items():
        assert compiled.gettext(msgid) == msgstr, "django.mo is stale: recompile it (scripts/make-en-gb-messages.py)"
    assert all("Email" not in s and " email" not in s.replace("%(email)s", "") for s in entries.values())


@pytest.mark.django_db
def test_allauth_pages_say_e_mail_in_sentence_case(client, user):
    client.force_login(user)
    page = client.get(reverse("account_email")).content.decode()
    assert "E-mail addresses" in page and "Email Addresses" not in page
    client.logout()
    reset = client.get(reverse("account_reset_password")).content.decode()
    assert "Password reset" in reset and "Password Reset" not in reset
