"""The SSRF guard refuses internal addresses at connect time and bad URLs before it.
(The allowed path, redirects and size caps: tests/integration/test_fetch_local.py.)"""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from services.errors import InvalidParameter
from services.net.fetch import SafeFetcher, UrlRefused, is_public


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1",
     "0.0.0.0", "224.0.0.1", "::1", "fc00::1", "fe80::1", "::ffff:127.0.0.1", "fd00:ec2::254",
     # IPv6 forms that embed an internal IPv4 address: compatible, NAT64, 6to4, Teredo
     "::127.0.0.1", "::a9fe:a9fe", "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "64:ff9b:1::a00:1",
     "2002:7f00:1::", "2002:a9fe:a9fe::1", "2001:0:4136:e378:8000:63bf:3fff:fdd2"],
)  # fmt: skip
def test_internal_addresses_are_not_public(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "64:ff9b::808:808", "2002:808:808::1"]
)
def test_public_addresses_are(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:9/x.png", "https://127.0.0.1/x.png", "https://localhost/x.png",
     "https://[::1]/x.png", "https://169.254.169.254/latest/meta-data/", "https://10.0.0.5/a"],
)  # fmt: skip
def test_internal_targets_are_refused_at_connect_time(url: str) -> None:
    fetcher = SafeFetcher(max_bytes=1000, allow_http=True)
    with pytest.raises(UrlRefused, match="non-public address"):
        asyncio.run(fetcher.get(url))


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/a", "file:///etc/passwd", "https://user:pw@example.com/", "https:///x"],
)
def test_bad_urls_are_refused_before_connecting(url: str) -> None:
    with pytest.raises(InvalidParameter):
        SafeFetcher(max_bytes=10).check_url(url)
