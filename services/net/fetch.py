"""Fetch user-supplied URLs without letting them reach inside the network (SSRF guard).

The check happens at connect time, inside the HTTP client's network backend: the host
is resolved once, every address is checked, and the connection goes to a checked
address, so DNS rebinding between a check and the connect cannot slip through.
Loopback, private, link-local (cloud metadata at 169.254.169.254 included), CGNAT,
multicast, reserved and unspecified addresses are refused; redirects are never
followed; bodies are capped.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

import httpcore

from services.errors import InvalidParameter, PixserveError

AddressPolicy = Callable[[ipaddress.IPv4Address | ipaddress.IPv6Address], bool]


class UrlRefused(PixserveError):
    """The URL, its address, its answer or its size is not acceptable."""

    code = "url_refused"
    status = 422


_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 form carries (mapped, compatible, NAT64, 6to4, Teredo):
    a router or translator may deliver to them, so each is checked like a plain one."""
    found = [address.ipv4_mapped, address.sixtofour]
    if address.teredo is not None:
        found.extend(address.teredo)
    if address in _IPV4_COMPATIBLE or any(address in net for net in _NAT64):
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return [item for item in found if item is not None]


def is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """The default policy: only globally routable unicast addresses, and an IPv6 form
    that embeds an IPv4 address only when that address is public too."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return is_public(address.ipv4_mapped)
        if not all(is_public(item) for item in embedded_ipv4(address)):
            return False
        if address in _IPV4_COMPATIBLE or any(address in net for net in _NAT64):
            return True  # a translator's prefix: what counts is the embedded address
    return address.is_global and not address.is_multicast


def public_or_in(networks: Iterable[str]) -> AddressPolicy:
    """Public addresses plus the listed networks (e.g. an in-cluster webhook receiver)."""
    allowed = [ipaddress.ip_network(network) for network in networks]

    def policy(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return is_public(address) or any(address in network for network in allowed)

    return policy


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves, checks every address against ``policy``, connects to a checked one."""

    def __init__(self, policy: AddressPolicy = is_public) -> None:
        self.policy = policy
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        address = await self._checked_address(host, port)
        return await self.inner.connect_tcp(
            address, port, timeout=timeout, local_address=local_address,
            socket_options=socket_options,
        )  # fmt: skip

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)

    async def _checked_address(self, host: str, port: int) -> str:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except socket.gaierror as exc:
            raise UrlRefused(f"cannot resolve {host}: {exc}") from exc
        addresses = {ipaddress.ip_address(info[4][0]) for info in infos}
        refused = sorted(str(a) for a in addresses if not self.policy(a))
        if refused or not addresses:
            raise UrlRefused(f"{host} resolves to a non-public address ({', '.join(refused)})")
        return str(sorted(addresses, key=str)[0])


class SafeFetcher:
    """GETs (and POSTs, for webhooks) to public hosts only, with caps and no redirects."""

    def __init__(
        self,
        max_bytes: int,
        timeout_s: float = 20.0,
        allow_http: bool = False,
        policy: AddressPolicy = is_public,
    ) -> None:
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.schemes = ("https", "http") if allow_http else ("https",)
        self.pool = httpcore.AsyncConnectionPool(network_backend=GuardedBackend(policy))

    def check_url(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in self.schemes or not parts.hostname:
            allowed = " or ".join(self.schemes)
            raise InvalidParameter(f"URL must be {allowed} with a host: {url!r}")
        if parts.username or parts.password:
            raise InvalidParameter("URLs with credentials are not accepted")

    async def get(self, url: str) -> tuple[bytes, str]:
        """The body and content type of a 200 answer; anything else is refused."""
        status, headers, body = await self.request("GET", url)
        if status != 200:
            raise UrlRefused(f"{url} answered {status}" + _redirect_note(status))
        return body, headers.get("content-type", "application/octet-stream")

    async def request(
        self, method: str, url: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        self.check_url(url)
        timeouts = {key: self.timeout_s for key in ("connect", "read", "write", "pool")}
        try:
            async with self.pool.stream(
                method, url, headers=list((headers or {}).items()), content=body,
                extensions={"timeout": timeouts},
            ) as response:  # fmt: skip
                data = await self._read_capped(response, url)
                answer = {k.decode().lower(): v.decode() for k, v in response.headers}
                return response.status, answer, data
        except httpcore.TimeoutException as exc:
            raise UrlRefused(f"{url} timed out after {self.timeout_s:g} s") from exc
        except (httpcore.NetworkError, httpcore.ProtocolError) as exc:
            raise UrlRefused(f"{url} could not be fetched: {exc}") from exc

    async def _read_capped(self, response: httpcore.Response, url: str) -> bytes:
        chunks, size = [], 0
        async for chunk in response.aiter_stream():
            size += len(chunk)
            if size > self.max_bytes:
                raise UrlRefused(f"{url} is larger than {self.max_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def close(self) -> None:
        await self.pool.aclose()


def _redirect_note(status: int) -> str:
    return " (redirects are not followed)" if 300 <= status < 400 else ""
