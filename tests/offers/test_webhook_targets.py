"""Where a webhook may go and what lists show of it, without any server (addresses given as literals resolve
without DNS)."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from offers.delivery import private_address
from offers.messages import MASK, masked_url

SECRET = st.text(alphabet="abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789", min_size=6, max_size=40)


@given(SECRET, SECRET, st.sampled_from(["token", "key", "sig", "auth"]))
def test_a_listed_url_never_shows_its_password_or_query_values(password: str, value: str, name: str) -> None:
    shown = masked_url(f"https://crm:Zq{password}@hooks.example.com/in?{name}=Zq{value}")
    assert f"Zq{password}" not in shown and f"Zq{value}" not in shown
    assert shown == f"https://{MASK}@hooks.example.com/in?{name}={MASK}"


@given(st.sampled_from(["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "169.254.0.0/16",
                        "100.64.0.0/10", "0.0.0.0/8"]), st.integers(min_value=0, max_value=2**32 - 1))
def test_every_address_of_loopback_link_local_private_and_shared_ranges_is_refused(network: str, number: int) -> None:
    net = ipaddress.ip_network(network)
    address = net[number % net.num_addresses]
    refused = private_address(f"http://{address}:8080/hooks")
    assert refused is not None and str(address) in refused


def test_a_public_address_is_let_through_and_an_ipv6_mapped_loopback_is_not() -> None:
    assert private_address("https://93.184.216.34/hooks") is None
    assert "loopback" in private_address("http://[::ffff:127.0.0.1]/hooks")
    assert "link-local" in private_address("http://[fe80::1]/hooks")
    assert "names no host" in private_address("http:///hooks")


def test_ipv6_forms_that_carry_a_private_ipv4_address_are_refused_for_that_address() -> None:
    carried = {
        "http://[::127.0.0.1]/": "127.0.0.1",  # IPv4-compatible ::/96
        "http://[::a9fe:a9fe]/": "169.254.169.254",
        "http://[64:ff9b::7f00:1]/": "127.0.0.1",  # NAT64 64:ff9b::/96
        "http://[64:ff9b::a9fe:a9fe]/latest/": "169.254.169.254",
        "http://[64:ff9b::a00:1]/": "10.0.0.1",
        "http://[64:ff9b:1::a00:1]/": "10.0.0.1",  # local-use NAT64 64:ff9b:1::/48
        "http://[2002:7f00:1::]/": "127.0.0.1",  # 6to4 2002::/16
        "http://[2002:a9fe:a9fe::]/": "169.254.169.254",
        # Teredo 2001::/32: a public server (65.54.227.120) for a private client (10.0.0.1, stored inverted)
        "http://[2001:0:4136:e378:8000:63bf:f5ff:fffe]/": "10.0.0.1",
        # Teredo with the server itself on loopback
        "http://[2001:0:7f00:1::ffff:ffff]/": "127.0.0.1",
    }
    for url, ipv4 in carried.items():
        refused = private_address(url)
        assert refused is not None and f"carries {ipv4}," in refused, (url, refused)


def test_ipv6_forms_that_carry_a_public_ipv4_address_are_let_through() -> None:
    assert private_address("http://[64:ff9b::5db8:d822]/hooks") is None  # NAT64 of 93.184.216.34
    assert private_address("http://[2002:5db8:d822::1]/hooks") is None  # 6to4 of 93.184.216.34
    assert "loopback" in private_address("http://[::1]/hooks")
    assert private_address("http://[::]/hooks") is not None
