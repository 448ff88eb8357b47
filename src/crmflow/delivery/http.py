"""Outbound HTTP for webhooks and the SMS provider: only http(s), only public addresses unless
CRMFLOW_WEBHOOK_ALLOW permits others, explicit timeouts, and each answer sorted into delivered,
retried or failed.

The address check is made on the RESOLVED addresses at send time, not on the URL's text: a
host name that resolves to 127.0.0.1, 10.x or 169.254.169.254 (a cloud's metadata service) is
refused like the address itself. Every address the name resolves to is checked, and the request
then goes to the checked address (the URL's host is kept in the Host header and, for https, in
SNI and the certificate check), so the name cannot resolve to another address between the check
and the connection (DNS rebinding). Redirects are not followed: a redirect could point anywhere.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit, urlunsplit

import httpx

from crmflow.delivery.email import Sent
from crmflow.errors import DeliveryError, RetryLaterError
from crmflow.settings import IpNetwork, Settings, allowed_networks

__all__ = [
    "ALLOW_SETTING",
    "HttpTarget",
    "RetryLaterError",
    "call_checked",
    "new_client",
    "outcome",
    "post_checked",
    "resolve_checked",
]

ALLOW_SETTING = "CRMFLOW_WEBHOOK_ALLOW"
REPLY_CHARS = 500  # how much of a server's answer is kept on the row (server_reply)
# How much of an answer is read at most: enough for the REPLY_CHARS kept; the rest is not waited
# for (the status is known from the headers), so a huge or endless answer holds nothing up.
_READ_BYTES = 4 * 1024

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _refusal(address: IpAddress) -> str | None:
    """Why a call may not go to `address` by default, or None when it may (a public address)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return _refusal(address.ipv4_mapped)
    if address.is_unspecified or address.is_multicast:
        return "not a public address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:  # 169.254.169.254 (cloud metadata) among them
        return "a link-local address (cloud metadata services live there)"
    if address.is_private:  # fd00:ec2::254, the other metadata address, among them
        return "a private address"
    if not address.is_global:
        return "not a public address"
    return None


@dataclass(frozen=True)
class HttpTarget:
    """A URL checked and resolved: where to connect (`address`) and what to call it (`host`)."""

    url: str  # the URL with the checked address in place of the host name
    host_header: str
    host: str
    https: bool


def resolve_checked(url: str, allow: tuple[IpNetwork, ...]) -> HttpTarget:
    """Resolve `url`'s host now and check every address it has; the first one is where the call
    goes. A URL that is not http(s), a host that does not resolve (temporary: DNS may come
    back) or one with a refused address raises DeliveryError saying why."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DeliveryError(
            f"only http:// and https:// URLs are called, not {url!r}", permanent=True
        )
    host = parts.hostname
    https = parts.scheme == "https"
    try:
        port = parts.port or (443 if https else 80)
    except ValueError:
        raise DeliveryError(f"{url!r} has an invalid port", permanent=True) from None
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise DeliveryError(f"{host} does not resolve: {exc}", permanent=False) from None
    addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
    if not addresses:
        raise DeliveryError(f"{host} resolves to no address", permanent=False)
    for address in addresses:
        why = _refusal(address)
        if why is not None and not any(address in network for network in allow):
            raise DeliveryError(
                f"refused: {host} resolves to {address}, {why}; calls go to public addresses "
                f"only unless {ALLOW_SETTING} lists it (e.g. {ALLOW_SETTING}={address}/"
                f"{address.max_prefixlen})",
                permanent=True,
            )
    chosen = addresses[0]
    netloc = f"[{chosen}]" if chosen.version == 6 else str(chosen)
    netloc = f"{netloc}:{port}"
    default_port = 443 if https else 80
    host_header = host if parts.port in (None, default_port) else f"{host}:{parts.port}"
    if ":" in host and not host_header.startswith("["):  # an IPv6 literal in the URL
        host_header = f"[{host}]" + (f":{parts.port}" if parts.port else "")
    checked = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
    return HttpTarget(checked, host_header, host, https)


def timeouts(settings: Settings, read_seconds: float | None = None) -> httpx.Timeout:
    """Connect within CRMFLOW_WEBHOOK_CONNECT_TIMEOUT; each read of the answer within the
    action's own timeout when it gives one, at most CRMFLOW_WEBHOOK_READ_TIMEOUT."""
    read = settings.webhook_read_timeout
    if read_seconds is not None:
        read = min(read, read_seconds)
    return httpx.Timeout(connect=settings.webhook_connect_timeout, read=read, write=read, pool=read)


def post_checked(
    client: httpx.Client,
    *,
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes | None,
    settings: Settings,
    read_seconds: float | None = None,
    now: datetime,
) -> Sent:
    """Call `url` (checked and resolved first) and sort the answer: 2xx delivered (the status
    and the start of the body as the reply); 408, 429, 5xx, timeouts and connection errors
    retried; any other answer a permanent failure."""
    sent, _ = call_checked(
        client,
        method=method,
        url=url,
        headers=headers,
        body=body,
        settings=settings,
        read_seconds=read_seconds,
        now=now,
    )
    return sent


def call_checked(
    client: httpx.Client,
    *,
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes | None,
    settings: Settings,
    read_seconds: float | None = None,
    now: datetime,
    read_bytes: int = _READ_BYTES,
) -> tuple[Sent, str | None]:
    """`post_checked`, with the answer's body as text as well (its first `read_bytes`; None
    when the answer was longer: cut, it is no whole document)."""
    target = resolve_checked(url, allowed_networks(settings.webhook_allow))
    sent_headers = {**headers, "Host": target.host_header}
    extensions = {"sni_hostname": target.host} if target.https else {}
    timeout = timeouts(settings, read_seconds)
    request = client.build_request(
        method,
        target.url,
        headers=sent_headers,
        content=body,
        timeout=timeout,
        extensions=extensions,
    )
    try:
        response = client.send(request, stream=True)
        try:
            text, whole = _read_start(response, seconds=timeout.read or 0.0, limit=read_bytes)
        finally:
            response.close()
    except httpx.TimeoutException as exc:
        raise DeliveryError(f"{url}: timed out ({type(exc).__name__})", permanent=False) from None
    except httpx.HTTPError as exc:
        raise DeliveryError(f"{url}: {type(exc).__name__}: {exc}", permanent=False) from None
    sent = outcome(url, response.status_code, response.headers, text, settings, now=now)
    return sent, text if whole else None


def _read_start(response: httpx.Response, *, seconds: float, limit: int) -> tuple[str, bool]:
    """The first `limit` bytes of the answer's body as text, read for at most `seconds` in all
    (each read has its own timeout; this bounds a body trickled a byte at a time), and whether
    that is the whole body: the status is already known, the body fills server_reply (and a
    webhook's write-back)."""
    data = bytearray()
    deadline = time.monotonic() + seconds
    whole = True
    for chunk in response.iter_raw():  # as sent: a compressed answer is not inflated here
        data += chunk
        if len(data) > limit or time.monotonic() > deadline:
            whole = False
            break
    return bytes(data[:limit]).decode("utf-8", errors="replace"), whole


def outcome(
    url: str,
    status: int,
    headers: Mapping[str, str],
    text: str,
    settings: Settings,
    *,
    now: datetime,
) -> Sent:
    """An answer sorted: Sent for a 2xx, else the DeliveryError the dispatcher acts on."""
    reply = f"{status} {text.strip()[:REPLY_CHARS]}".strip()
    if 200 <= status < 300:
        return Sent(reply=reply)
    said = f"{url} answered {reply}"
    if status in (429, 503):
        wait = retry_after(headers.get("retry-after"), now, settings)
        if wait is not None:
            raise RetryLaterError(
                f"{said} (Retry-After: {wait.total_seconds():.0f}s)", retry_after=wait
            )
    if status in (408, 429) or status >= 500:
        raise DeliveryError(said, permanent=False)
    if 300 <= status < 400:
        said += " (a redirect: not followed, call the final URL)"
    raise DeliveryError(said, permanent=True)


def retry_after(value: str | None, now: datetime, settings: Settings) -> timedelta | None:
    """The wait a Retry-After header asks for (seconds, or an HTTP date), at most
    CRMFLOW_DELIVERY_RETRY_MAX_SECONDS and at least a second; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    seconds: float
    if value.isascii() and value.isdigit():  # '²' is a digit to isdigit(), not to float()
        seconds = float(value)
    else:
        try:
            at = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        seconds = (at - now).total_seconds()
    seconds = min(max(seconds, 1.0), settings.delivery_retry_max_seconds)
    return timedelta(seconds=seconds)


def new_client(verify: ssl.SSLContext | bool = True) -> httpx.Client:
    """One client (one connection pool) per dispatcher: no redirects followed, no proxy taken
    from the environment (it would connect elsewhere than to the checked address). `verify`:
    the TLS check (default: the system's trusted roots; tests give their own)."""
    # No kept connections: the pool knows a connection by its address only, and one opened for
    # one host name (its TLS certificate checked for that name) must not carry another's call.
    return httpx.Client(
        follow_redirects=False,
        trust_env=False,
        verify=verify,
        limits=httpx.Limits(max_keepalive_connections=0),
    )
