"""Keyset pages: every row once, in order, forward and back, ties included; edited cursors refused."""

import base64
from datetime import timedelta

import pytest
from django.utils import timezone

from access.models import User
from portal.keyset import CursorInvalid, keyset_page
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def _users_joined_with_ties() -> list[int]:
    """Nine users, three of them joined at the same instant, in the order pages must give them."""
    start = timezone.now() - timedelta(days=1)
    moments = [start, start + timedelta(seconds=1), *[start + timedelta(seconds=2)] * 3,
               start + timedelta(seconds=3), start + timedelta(seconds=4), start + timedelta(seconds=5),
               start + timedelta(seconds=6)]
    users = [UserFactory() for _ in moments]
    for user, moment in zip(users, moments):
        User.objects.filter(pk=user.pk).update(date_joined=moment)
    return [user.pk for user in sorted(users, key=lambda u: (moments[users.index(u)], u.pk))]


def _page(cursor: str = ""):
    return keyset_page(User.objects.all(), time_field="date_joined", cursor=cursor, size=4)


def test_pages_go_forward_and_back_through_every_row_once_in_order():
    expected = _users_joined_with_ties()
    first = _page()
    second = _page(first.next_cursor)
    third = _page(second.next_cursor)
    assert [[u.pk for u in page.rows] for page in (first, second, third)] == [expected[:4], expected[4:8], expected[8:]]
    assert first.previous_cursor == "" and third.next_cursor == ""
    back = _page(third.previous_cursor)
    assert [u.pk for u in back.rows] == expected[4:8]
    assert [u.pk for u in _page(back.previous_cursor).rows] == expected[:4]
    assert _page(back.previous_cursor).previous_cursor == ""


def _encoded(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize("cursor", [
    "not base64!", _encoded("not-a-cursor"), _encoded("x|2026-01-01|1"),
    _encoded("n|2026-01-01T00:00:00+00:00|" + "9" * 30),  # a pk past bigint (the database would fail)
    _encoded("n|2026-01-01T00:00:00|5"),  # a time without its zone
    _encoded("x|2026-01-01T00:00:00+00:00|5"),  # an unknown direction
])
def test_a_cursor_it_did_not_make_is_refused(cursor):
    with pytest.raises(CursorInvalid):
        _page(cursor)
