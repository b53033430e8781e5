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
