"""Outbound HTTP to addresses that users choose, safely (no Django: the caller passes the settings).

`url_check` resolves the URL's host once and refuses it unless every address it names is public (or in a network
the operator allows): no loopback, private, link-local (cloud metadata at 169.254.169.254), multicast, reserved,
unspecified or shared address, and no IPv6 address that embeds an IPv4 one (mapped, compatible, 6to4, Teredo,
NAT64), whatever the notation: the resolver reads `2130706433`, `0177.0.0.1`, `0x7f.1` and `127.1` as 127.0.0.1,
and the check is made on what it read. `post` then connects to that checked address itself (never resolving the
name again, so a DNS answer that changes between the check and the call cannot move it), sends the name in the
Host header and, over https, uses it for SNI and the certificate's check; it follows no redirect, gives up after
the timeout (the whole exchange, not each read) and reads at most `max_bytes` of the answer.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from apps.core.errors import InvalidRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


class UnsafeURL(InvalidRequest):
    """A URL the store will not call; the message says why."""

    def __init__(self, message: str):
        super().__init__(message, param="url", code="invalid_url")


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str  # as the URL names it (IDNA-encoded): the Host header, SNI and the certificate's name
    port: int
    path: str  # path and query
    addresses: tuple[str, ...]  # the checked addresses the name resolved to, in the resolver's order

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes  # at most max_bytes
    duration_ms: int


def address_refusal(ip: IPAddress) -> str | None:
    """Why an address may not be called (None: it may), in words for the user."""
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return "an IPv4-mapped IPv6 address"
        if ip in _IPV4_COMPATIBLE:
            return "an IPv4-compatible IPv6 address"
        if ip.sixtofour is not None or ip.teredo is not None or any(ip in net for net in _NAT64):
            return "an IPv6 address that carries an IPv4 address"
    for test, words in ((ip.is_link_local, "a link-local address"), (ip.is_multicast, "a multicast address"),
                        (ip.is_reserved, "a reserved address"), (ip.is_private, "a private address")):
        if test:
            return words
    if not ip.is_global:  # shared (100.64/10), documentation and benchmarking ranges
        return "not a public address"
    return None


def _resolve(host: str, port: int) -> list[IPAddress]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnsafeURL(f"The host {host} could not be resolved: check the URL.") from exc
    addresses = []
    for info in infos:
        ip = ipaddress.ip_address(info[4][0].split("%", 1)[0])  # an IPv6 scope (fe80::1%eth0) is not part of it
        if ip not in addresses:
            addresses.append(ip)
    return addresses


def url_check(url: str, *, allow_http: bool, allowed_networks: tuple = ()) -> Target:
    """The URL's target once it is safe to call; UnsafeURL (a 400) otherwise. `allowed_networks`: networks
    (strings or ipaddress networks) whose addresses are allowed even though they are not public."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise UnsafeURL(f"The URL is not valid: {exc}.") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UnsafeURL("The URL must start with https:// (or http://).")
    if scheme == "http" and not allow_http:
        raise UnsafeURL("The URL must use https://.")
    if parts.username is not None or parts.password is not None:
        raise UnsafeURL("The URL may not hold a user name or password.")
    if not parts.hostname:
        raise UnsafeURL("The URL has no host.")
    try:
        host = parts.hostname.rstrip(".").encode("idna").decode("ascii") if not _is_ip(parts.hostname) else parts.hostname
    except UnicodeError as exc:
        raise UnsafeURL(f"The host {parts.hostname} is not a valid name.") from exc
    port = port or (443 if scheme == "https" else 80)
    networks = [ipaddress.ip_network(n) if isinstance(n, str) else n for n in allowed_networks]
    addresses = _resolve(host, port)
    for ip in addresses:
        if any(ip.version == net.version and ip in net for net in networks):
            continue
        refusal = address_refusal(ip)
        if refusal:
            named = "" if str(ip) == host else f" ({host} resolves to {ip})"
            raise UnsafeURL(f"The URL's host is {refusal}{named}; webhooks go to public addresses only.")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(scheme=scheme, host=host, port=port, path=path, addresses=tuple(str(ip) for ip in addresses))


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """TCP to the checked address; TLS with the URL's host name for SNI and the certificate's check."""

    def __init__(self, address: str, port: int, *, server_hostname: str, timeout: float):
        super().__init__(address, port, timeout=timeout, context=ssl.create_default_context())
        self.server_hostname = server_hostname

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self.server_hostname)


def _connection(target: Target, address: str, timeout: float) -> http.client.HTTPConnection:
    if target.scheme == "https":
        return _PinnedHTTPSConnection(address, target.port, server_hostname=target.host, timeout=timeout)
    return http.client.HTTPConnection(address, target.port, timeout=timeout)


def post(target: Target, body: bytes, headers: dict[str, str], *, timeout: float, max_bytes: int) -> Answer:
    """POST `body` to the checked target. Raises OSError (refused, timed out, TLS) or http.client.HTTPException
    (a malformed answer); any HTTP status is an Answer (a redirect is not followed)."""
    started = time.monotonic()
    last_error: OSError | None = None
    for address in target.addresses:
        conn = _connection(target, address, timeout)
        # Each socket operation has `timeout`; this bounds the whole exchange (an answer that trickles in a byte at a
        # time, a slow TLS handshake), closing the socket under the reader when the time is up.
        watchdog = threading.Timer(timeout, _abort, args=(conn,))
        watchdog.start()
        try:
            try:
                conn.connect()
            except (TimeoutError, ConnectionRefusedError) as exc:
                last_error = exc  # the next checked address, if the name has several
                continue
            conn.putrequest("POST", target.path, skip_host=True, skip_accept_encoding=True)
            conn.putheader("Host", target.host_header)
            for name, value in headers.items():
                conn.putheader(name, value)
            conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            response = conn.getresponse()
            data = response.read(max_bytes)
            return Answer(status=response.status, body=data, duration_ms=_ms(started))
        except (OSError, http.client.HTTPException):
            if time.monotonic() - started >= timeout:
                raise TimeoutError(f"no complete answer within {timeout:g} s") from None
            raise
        finally:
            watchdog.cancel()
            conn.close()
    raise last_error or OSError("no address to connect to")


def _abort(conn: http.client.HTTPConnection) -> None:
    sock = conn.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
