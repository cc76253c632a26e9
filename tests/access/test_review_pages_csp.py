"""The reviewer pages run under the strict Content-Security-Policy: no inline code or styles."""

import re

import pytest

from tests.access.conftest import apply

pytestmark = pytest.mark.django_db
INLINE = [r"<script(?![^>]*\bsrc=)(?![^>]*type=\"application/json\")[^>]*>", r"\shx-on[:-]", r"\son[a-z]+=",
          r"\sstyle="]


def test_the_review_pages_have_no_inline_scripts_handlers_or_styles(reviewer_client, release, researcher):
    application = apply(researcher, release)
    for path in ["/review/", f"/review/applications/{application.pk}/"]:
        response = reviewer_client.get(path)
        assert response.status_code == 200
        assert "script-src 'self'" in response["Content-Security-Policy"]
        html = response.content.decode()
        for pattern in INLINE:
            assert not re.search(pattern, html), (path, pattern)
        assert "access/review" in html and ".js" in html  # the shortcuts come from a static file
