"""Checks on what applicants type: ORCID iDs and e-mail domains."""

import re

ORCID_PATTERN = re.compile(r"^(?:https?://orcid\.org/)?(\d{4})-?(\d{4})-?(\d{4})-?(\d{3}[\dX])$", re.IGNORECASE)
# .edu, .edu.xx, .ac.xx: the usual academic suffixes.
ACADEMIC_DOMAIN = re.compile(r"(?:^|\.)(?:edu|edu\.[a-z]{2}|ac\.[a-z]{2})$")


def orcid_normalise(value: str) -> str | None:
    """The ORCID iD as ``0000-0002-1825-0097``, or None when it is malformed or its checksum fails."""
    match = ORCID_PATTERN.match(value.strip())
    if not match:
        return None
    digits = "".join(match.groups()).upper()
    total = 0
    for digit in digits[:-1]:
        total = (total + int(digit)) * 2
    check = (12 - total % 11) % 11
    expected = "X" if check == 10 else str(check)
    if digits[-1] != expected:
        return None
    return "-".join(digits[i:i + 4] for i in range(0, 16, 4))


ROR_PATTERN = re.compile(r"^(?:https?://ror\.org/)?(0[a-hj-km-np-tv-z0-9]{6}[0-9]{2})/?$", re.IGNORECASE)


def ror_normalise(value: str) -> str | None:
    """A ROR id as ``https://ror.org/052gg0110``, or None when it is not one (format only)."""
    match = ROR_PATTERN.match(value.strip())
    return f"https://ror.org/{match.group(1).lower()}" if match else None


def email_domain(email: str) -> str:
    return email.rsplit("@", 1)[-1].strip().lower()


def domain_matches(domain: str, allowed: list[str]) -> bool:
    """True when ``domain`` is one of ``allowed`` or a subdomain of one."""
    domain = domain.lower()
    return any(domain == entry.lower() or domain.endswith("." + entry.lower()) for entry in allowed if entry)


def is_academic_domain(domain: str) -> bool:
    return bool(ACADEMIC_DOMAIN.search(domain.lower()))
