"""Download-link tokens: Django's signing format, bound to their purpose and their secret key."""

import pytest
from django.core import signing

from artifacts.links import SALT, LinkInvalid, link_token_read, link_tokens_make


def make(**claims) -> str:
    return link_tokens_make(user_id=7, grant_id=3, generation=2, file_ids=[11], **claims)[0]


def test_tokens_are_djangos_timestamp_signatures_salted_for_downloads():
    token = make()
    payload = signing.TimestampSigner(salt=SALT).unsign_object(token, max_age=60)
    assert {key: payload[key] for key in "ufgn"} == {"u": 7, "f": 11, "g": 3, "n": 2}
    claims = link_token_read(token, max_age=60)
    assert (claims.user_id, claims.file_id, claims.grant_id, claims.generation) == (7, 11, 3, 2)
    django_made = signing.TimestampSigner(salt=SALT).sign_object({"u": 1, "f": 2, "g": 3, "n": 4, "l": "ab"})
    assert link_token_read(django_made, max_age=60).link_id == "ab"


def test_a_token_signed_for_another_purpose_or_altered_is_refused():
    other_purpose = signing.TimestampSigner(salt="something-else").sign_object({"u": 7, "f": 11, "g": 3, "n": 2, "l": "x"})
    with pytest.raises(LinkInvalid):
        link_token_read(other_purpose, max_age=60)
    token = make()
    with pytest.raises(LinkInvalid):
        link_token_read(token[:-1] + ("A" if token[-1] != "A" else "B"), max_age=60)


def test_links_signed_with_a_rotated_key_still_work_through_the_fallbacks(settings):
    token = make()
    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "a-new-secret-key-" + "x" * 50
    assert link_token_read(token, max_age=60).file_id == 11
    settings.SECRET_KEY_FALLBACKS = []
    with pytest.raises(LinkInvalid):
        link_token_read(token, max_age=60)
