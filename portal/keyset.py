"""Keyset ("cursor") pagination: a page costs the same on the first page and the thousandth.

An offset makes the database walk past every row before the page, and a page count needs all
of them counted. A keyset page asks for the rows after (or before) the last one seen, in the
order of an index, so only the page's own rows are read. Pages are linked by opaque cursors.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Q, QuerySet


class CursorInvalid(ValueError):
    """A cursor that this pagination did not make (edited, truncated or from another list)."""


@dataclass(frozen=True)
class KeysetPage:
    rows: list
    next_cursor: str  # "" on the last page
    previous_cursor: str  # "" on the first page


def _encode(direction: str, at: datetime, pk: int) -> str:
    return base64.urlsafe_b64encode(f"{direction}|{at.isoformat()}|{pk}".encode()).decode().rstrip("=")


def _decode(cursor: str) -> tuple[str, datetime, int]:
    try:
        direction, at, pk = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().split("|")
        moment, number = datetime.fromisoformat(at), int(pk)
        if direction not in ("n", "p") or moment.tzinfo is None or not 0 < number < 2**63:
            raise ValueError(cursor)
        return direction, moment, number
    except (ValueError, UnicodeDecodeError, binascii.Error) as error:
        raise CursorInvalid("This page link is not valid: go back to the first page.") from error


def keyset_page(queryset: QuerySet, *, time_field: str, cursor: str, size: int) -> KeysetPage:
    """The page of ``queryset`` (ordered by ``time_field`` then pk, oldest first; the field never
    null) that ``cursor`` points at, or the first page when it is empty. Raises CursorInvalid."""
    if not cursor:
        direction, after = "n", None
    else:
        direction, at, pk = _decode(cursor)
        after = (at, pk)
    if direction == "n":
        if after:  # (time, pk) > (at, pk), written so that the index on time orders the scan
            queryset = queryset.filter(Q(**{f"{time_field}__gte": after[0]}),
                                       Q(**{f"{time_field}__gt": after[0]}) | Q(pk__gt=after[1]))
        rows = list(queryset.order_by(time_field, "pk")[: size + 1])
        more, rows = len(rows) > size, rows[:size]
        has_next, has_previous = more, after is not None
    else:
        queryset = queryset.filter(Q(**{f"{time_field}__lte": after[0]}),
                                   Q(**{f"{time_field}__lt": after[0]}) | Q(pk__lt=after[1]))
        rows = list(queryset.order_by(f"-{time_field}", "-pk")[: size + 1])
        more, rows = len(rows) > size, rows[:size][::-1]
        has_next, has_previous = True, more
    return KeysetPage(
        rows=rows,
        next_cursor=_encode("n", getattr(rows[-1], time_field), rows[-1].pk) if rows and has_next else "",
        previous_cursor=_encode("p", getattr(rows[0], time_field), rows[0].pk) if rows and has_previous else "",
    )
