import pytest

from access.http import normalised_ip


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
