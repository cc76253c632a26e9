"""Signed download links: ``/dl/<token>``, bound to a user, a file and a grant generation.

Tokens are Django-signed (salted for this purpose only) and timestamped; revoking or
renewing a grant bumps its generation, which kills every link issued before.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from django.conf import settings
from django.core import signing
from django.utils.encoding import force_bytes

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


class _LinkSigner(signing.TimestampSigner):
    """Django's TimestampSigner, same tokens, with the HMAC key derived once per signer instead of
    once per signature: a 992-file manifest signs 992 links."""

    def __init__(self):
        super().__init__(salt=SALT)
        # As django.utils.crypto.salted_hmac derives it for Signer.signature().
        derived = hashlib.sha256(force_bytes(self.salt + "signer") + force_bytes(self.key)).digest()
        self._mac = hmac.new(derived, digestmod=hashlib.sha256)

    def signature(self, value, key=None):
        if key is not None and key != self.key:  # SECRET_KEY_FALLBACKS, when checking old links
            return super().signature(value, key)
        mac = self._mac.copy()
        mac.update(force_bytes(value))
        return base64.urlsafe_b64encode(mac.digest()).strip(b"=").decode()


def _signer() -> signing.TimestampSigner:
    return _LinkSigner()


def link_tokens_make(*, user_id: int, grant_id: int, generation: int, file_ids: list[int]) -> list[str]:
    """One fresh token per file (each with its own link id), signed with one signer."""
    signer = _signer()
    return [
        signer.sign_object({"u": user_id, "f": file_id, "g": grant_id, "n": generation, "l": secrets.token_hex(8)})
        for file_id in file_ids
    ]


def hub_link_id(*, token_hash: str, slug: str, path: str, day: str) -> str:
    """The link id of a file fetched through the Hub's resolve: the same all ``day`` for this token,
    release and path, so that a client's retries and resumes stay one download."""
    digest = _keyed_mac(settings.SECRET_KEY).copy()
    digest.update(force_bytes(f"{SALT}:hub:{token_hash}:{slug}:{path}:{day}"))
    return digest.hexdigest()[:16]


@functools.lru_cache(maxsize=4)
def _keyed_mac(key: str):
    """An HMAC-SHA256 keyed with ``key`` and nothing hashed yet: copied for each message."""
    return hmac.new(force_bytes(key), digestmod=hashlib.sha256)


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
