"""Signed download links: ``/dl/<token>``, bound to a user, a file and a grant generation.

Tokens are Django-signed (salted for this purpose only) and timestamped; revoking or
renewing a grant bumps its generation, which kills every link issued before.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from django.core import signing

SALT = "gatehouse.artifacts.download-link"


class LinkInvalid(Exception):
    """The token was altered, truncated or signed with another key."""


class LinkExpired(Exception):
    """The token is genuine but older than its lifetime."""


@dataclass(frozen=True)
class LinkClaims:
    user_id: int
    file_id: int
    grant_id: int
    generation: int
    link_id: str


def _signer() -> signing.TimestampSigner:
    return signing.TimestampSigner(salt=SALT)


def link_tokens_make(*, user_id: int, grant_id: int, generation: int, file_ids: list[int]) -> list[str]:
    """One fresh token per file (each with its own link id), signed with one signer."""
    signer = _signer()
    return [
        signer.sign_object({"u": user_id, "f": file_id, "g": grant_id, "n": generation, "l": secrets.token_hex(8)})
        for file_id in file_ids
    ]


def link_token_read(token: str, *, max_age: int) -> LinkClaims:
    try:
        payload = _signer().unsign_object(token, max_age=max_age)
    except signing.SignatureExpired as error:
        raise LinkExpired(str(error)) from error
    except signing.BadSignature as error:
        raise LinkInvalid(str(error)) from error
    try:
        return LinkClaims(int(payload["u"]), int(payload["f"]), int(payload["g"]), int(payload["n"]), str(payload["l"]))
    except (KeyError, TypeError, ValueError) as error:
        raise LinkInvalid("malformed payload") from error
