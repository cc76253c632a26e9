import pytest
from django.test import RequestFactory

from access.http import client_ip, normalised_ip


@pytest.mark.parametrize("given, stored", [
    ("::ffff:127.0.0.1", "127.0.0.1"),
    ("::1%eth0", "::1"),
    ("[2001:db8::1]", "2001:db8::1"),
    ("2001:0db8:0:0::1", "2001:db8::1"),
    (" 10.0.0.1 ", "10.0.0.1"),
])
def test_addresses_are_stored_in_one_spelling(given, stored):
    assert normalised_ip(given) == stored


@pytest.mark.parametrize("given", ["999.1.1.1", "not-an-ip", "", None, "1.2.3.4:80"])
def test_what_is_not_an_address_is_none(given):
    assert normalised_ip(given) is None


def request_from(remote_addr, forwarded=None):
    request = RequestFactory().get("/", REMOTE_ADDR=remote_addr)
    if forwarded is not None:
        request.META["HTTP_X_FORWARDED_FOR"] = forwarded
    return request


def test_without_trusted_proxies_a_forwarded_header_is_ignored(settings):
    settings.TRUSTED_PROXY_COUNT = 0
    assert client_ip(request_from("::ffff:10.0.0.7", "6.6.6.6")) == "10.0.0.7"


@pytest.mark.parametrize("hops, forwarded, expected", [
    (1, "6.6.6.6, 203.0.113.9", "203.0.113.9"),          # the client wrote 6.6.6.6; the proxy appended the rest
    (1, "203.0.113.9", "203.0.113.9"),
    (2, "6.6.6.6, 203.0.113.9, 10.0.0.2", "203.0.113.9"),
    (2, "203.0.113.9", "203.0.113.9"),                     # fewer entries than proxies: the furthest one
    (1, "::ffff:203.0.113.9", "203.0.113.9"),
    (1, "not-an-ip", "10.0.0.1"),
    (1, "999.1.1.1", "10.0.0.1"),
    (1, "", "10.0.0.1"),
    (1, " , ,", "10.0.0.1"),
])
def test_behind_proxies_the_client_is_the_rightmost_entry_they_did_not_write(settings, hops, forwarded, expected):
    settings.TRUSTED_PROXY_COUNT = hops
    assert client_ip(request_from("10.0.0.1", forwarded)) == expected


def test_no_address_at_all_is_none(settings):
    settings.TRUSTED_PROXY_COUNT = 1
    assert client_ip(request_from("garbage", "also garbage")) is None
