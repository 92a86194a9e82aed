"""A safe fetch of one https URL into memory: one deadline, public addresses only, bounded size.

It exists apart from the job code because nothing in it is about jobs: it takes a URL and an
HttpsPolicy and returns the body. Its one caller today is the reference audio
(job/fetch.py's RefAudioFetcher), whose words its errors use: every failure is BAD_REF_AUDIO
with a short message that never repeats the URL (whose query string or user info can hold
credentials).

One deadline for the whole fetch. Resolving the name, connecting, TLS, every redirect, the
headers and the body all end at HttpsPolicy.total_timeout_s. requests (and the RunPod SDK's
rp_ssrf.safe_get built on it) cannot promise that: its timeout is per socket read, so a server
sending its headers a byte a second held a job for minutes. Here aiohttp runs in a private
event loop (asyncio.run) on the calling thread, inside one asyncio.timeout that cancels the
fetch wherever it is; leaving the session then aborts its sockets.

No server-side request forgery. Only https (plain http to loopback only in tests, with
HttpsPolicy.allow_http_loopback), and every address the worker connects to must be public
(rp_ssrf.is_safe_address: no 169.254.169.254 metadata, no 10/8, no loopback, ...):

- _PublicResolver resolves a name and refuses it when any of its addresses is not public;
  aiohttp then connects to exactly those addresses, so a second DNS answer cannot point
  somewhere else (no DNS rebinding);
- aiohttp never resolves an IP literal, so each hop checks literals itself, and the socket
  factory checks every address once more right before connecting;
- redirects are followed here (at most URL_MAX_REDIRECTS), each hop checked like the first,
  never from https to http; no proxy is used (trust_env off), as a proxy would connect
  somewhere unchecked;
- the body is asked for without compression (Accept-Encoding: identity, aiohttp's
  decompression off); a gzip or deflate body sent anyway is inflated a bounded piece at a time,
  so a gzip bomb stops at max_bytes, like a body that is merely long.

The SDK's escape hatch RUNPOD_ALLOW_PRIVATE_DOWNLOAD_URLS (read by config.py; the worker passes
it in the policy) switches the public-address check off; https and the limits still apply.

Names are resolved by socket.getaddrinfo (the system resolver, as requests does) in a short-lived
daemon thread rather than by aiohttp's own resolvers: ThreadedResolver runs on the loop's default
executor, which asyncio.run joins on the way out, so a slow DNS server would hold the job past
the deadline; the aiodns resolver's pycares starts threads that live as long as the process.
Lookup threads are joined before fetch_https returns; one still stuck in the system resolver at
the deadline is left to end on its own (the resolver's own timeout bounds it). Never torch.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from runpod.serverless.utils.rp_ssrf import is_safe_address
from yarl import URL

from f5worker.config import private_download_urls_allowed
from f5worker.config.table import default as setting_default
from f5worker.errors import BadRefAudio

log = logging.getLogger(__name__)

URL_CONNECT_TIMEOUT_S = 5.0
URL_MAX_REDIRECTS = 3
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MUST_BE_HTTPS = "ref_audio URL must be https://host/path"
NOT_PUBLIC = "ref_audio URL is not allowed: its host must resolve to public addresses"
CANNOT_RESOLVE = "ref_audio URL failed: cannot resolve host"
DOWNGRADE = "ref_audio URL refused: redirect from https to http"
_AI_ADDRCONFIG = getattr(socket, "AI_ADDRCONFIG", 0)


@dataclass(frozen=True)
class HttpsPolicy:
    """The limits of one fetch_https."""

    max_bytes: int  # the body, on the wire and after inflating
    # The whole URL fetch, redirects included (REF_AUDIO_URL_TIMEOUT_S).
    total_timeout_s: float = setting_default("ref_audio_url_timeout_s")
    connect_timeout_s: float = URL_CONNECT_TIMEOUT_S  # each address tried, within the total
    allow_http_loopback: bool = False  # tests only: plain http to 127.0.0.1 / ::1 / localhost
    # Connect to non-public addresses (RUNPOD_ALLOW_PRIVATE_DOWNLOAD_URLS); None: as the
    # environment says at the time of the fetch.
    allow_private_addresses: bool | None = None

    def private_allowed(self) -> bool:
        if self.allow_private_addresses is None:
            return private_download_urls_allowed()
        return self.allow_private_addresses


class NotPublicAddress(OSError):
    """A URL's host is, or resolves to, a non-public address. Carries no host: it is user text."""


class CannotResolve(OSError):
    """A URL's host has no address."""


def fetch_https(url: str, policy: HttpsPolicy) -> bytes:
    """GET url under policy: its body, or BAD_REF_AUDIO saying why not (module docstring)."""
    check_url(url, policy)
    deadline = time.monotonic() + policy.total_timeout_s
    resolver = _PublicResolver(policy.private_allowed())
    try:
        return asyncio.run(_download(url, deadline, resolver, policy))
    except BadRefAudio:
        raise
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        log.debug("ref_audio URL failed: %s", type(exc).__name__)
        if time.monotonic() >= deadline:  # cancelled at the deadline, whatever it became
            raise BadRefAudio(_too_slow(policy)) from None
        raise BadRefAudio(_url_failure(exc, policy)) from None
    finally:
        resolver.join_lookups(deadline)


async def _download(
    url: str, deadline: float, resolver: _PublicResolver, policy: HttpsPolicy
) -> bytes:
    timeout = asyncio.timeout(deadline - time.monotonic())
    try:
        async with timeout, _session(policy, resolver) as session:
            return await _follow(session, url, resolver.private_ok, policy)
    except TimeoutError:
        if not timeout.expired():  # aiohttp's own connect timeout: _url_failure words it
            raise
        raise BadRefAudio(_too_slow(policy)) from None


def _too_slow(policy: HttpsPolicy) -> str:
    return f"ref_audio URL did not finish within {policy.total_timeout_s:g} s"


async def _follow(
    session: aiohttp.ClientSession, url: str, private_ok: bool, policy: HttpsPolicy
) -> bytes:
    """GET url, following at most URL_MAX_REDIRECTS redirects, each hop checked."""
    redirects = 0
    while True:
        target = URL(url)
        _check_literal(target.raw_host, private_ok)
        async with session.get(target, allow_redirects=False) as response:
            if response.status not in REDIRECT_STATUSES:
                if response.status != 200:
                    raise BadRefAudio(f"ref_audio URL answered HTTP {response.status}")
                return await _read_body(response, policy.max_bytes)
            location = response.headers.get("Location")
        redirects += 1
        if redirects > URL_MAX_REDIRECTS:
            raise BadRefAudio(
                f"ref_audio URL made too many redirects (more than {URL_MAX_REDIRECTS})"
            )
        url = redirect_target(url, location, policy)


def check_url(url: str, policy: HttpsPolicy) -> None:
    """https://host/... (or http to loopback where the policy allows it); BAD_REF_AUDIO if not."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        _ = parts.port  # a port that is not a number raises here
    except ValueError:
        raise BadRefAudio(MUST_BE_HTTPS) from None
    if parts.scheme == "https" and host:
        return
    if parts.scheme == "http" and policy.allow_http_loopback and _loopback(host):
        return
    raise BadRefAudio(MUST_BE_HTTPS)


def redirect_target(current: str, location: str | None, policy: HttpsPolicy) -> str:
    """The URL a redirect from `current` leads to, if it may be followed; BAD_REF_AUDIO if not."""
    if not location or not location.strip():
        raise BadRefAudio("ref_audio URL answered a redirect without a Location")
    try:
        target = urljoin(current, location.strip())
        downgrade = urlsplit(current).scheme == "https" and urlsplit(target).scheme == "http"
    except ValueError:
        raise BadRefAudio(MUST_BE_HTTPS) from None
    if downgrade:  # the rest of the fetch could be read or changed on the way
        raise BadRefAudio(DOWNGRADE)
    check_url(target, policy)
    return target


def _check_literal(host: str | None, private_ok: bool) -> None:
    """aiohttp connects to an IP literal without asking the resolver, so check it here. The
    test is aiohttp's own (helpers.is_ip_address): anything with a colon or only digits and
    dots; what is not a valid public address is refused."""
    if private_ok or not host:
        return
    if (":" in host or host.replace(".", "").isdigit()) and not is_safe_address(host):
        raise NotPublicAddress()


def _public_socket(private_ok: bool) -> Callable[[Any], socket.socket]:
    """aiohttp's socket_factory: the last check, on the very address about to be connected."""

    def factory(addr_info: Any) -> socket.socket:
        family, type_, proto, _, address = addr_info
        if not private_ok and not is_safe_address(str(address[0])):
            raise NotPublicAddress()
        return socket.socket(family, type_, proto)

    return factory


def _session(policy: HttpsPolicy, resolver: _PublicResolver) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        resolver=resolver,
        use_dns_cache=False,
        force_close=True,  # one connection per hop, closed with its response
        limit=1,
        socket_factory=_public_socket(resolver.private_ok),
    )
    return aiohttp.ClientSession(
        connector=connector,
        # The total is asyncio.timeout's; this only moves on from an address that is silent.
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=policy.connect_timeout_s),
        headers={"Accept-Encoding": "identity"},
        auto_decompress=False,
        trust_env=False,
        cookie_jar=aiohttp.DummyCookieJar(),
    )


async def _read_body(response: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    """The body, at most max_bytes on the wire and after inflating; read as it arrives."""
    too_large = f"ref_audio is larger than {max_bytes} bytes"
    inflate = _inflater(response.headers.get("Content-Encoding", ""))
    if response.content_length is not None and response.content_length > max_bytes:
        raise BadRefAudio(too_large)
    parts: list[bytes] = []
    wire = size = 0
    async for chunk in response.content.iter_any():
        wire += len(chunk)
        if inflate is not None:
            try:
                # Never more than one byte past the limit, however well it compresses.
                chunk = inflate.decompress(chunk, max_bytes + 1 - size)
            except zlib.error:
                raise BadRefAudio("ref_audio URL sent a body that does not decompress") from None
        size += len(chunk)
        if wire > max_bytes or size > max_bytes:
            raise BadRefAudio(too_large)
        parts.append(chunk)
    return b"".join(parts)


def _inflater(content_encoding: str) -> Any:
    """None for an identity body, a zlib decompressor for gzip or deflate."""
    encoding = content_encoding.strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj(zlib.MAX_WBITS)
    raise BadRefAudio("ref_audio URL sent a Content-Encoding other than identity, gzip or deflate")


def _url_failure(exc: BaseException, policy: HttpsPolicy) -> str:
    """What happened, in words that hold neither the URL nor the server's text."""
    if _caused_by(exc, NotPublicAddress):
        return NOT_PUBLIC
    if _caused_by(exc, CannotResolve) or isinstance(exc, aiohttp.ClientConnectorDNSError):
        return CANNOT_RESOLVE
    if isinstance(exc, aiohttp.InvalidURL) or (
        isinstance(exc, ValueError) and not isinstance(exc, aiohttp.ClientError)
    ):
        return MUST_BE_HTTPS
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return "ref_audio URL could not be fetched (TLS certificate not valid)"
    if isinstance(exc, aiohttp.ClientSSLError):
        return "ref_audio URL could not be fetched (TLS error)"
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return f"ref_audio URL did not connect within {policy.connect_timeout_s:g} s"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "ref_audio URL could not be fetched (ConnectionError)"
    return f"ref_audio URL could not be fetched ({type(exc).__name__})"


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    cause: BaseException | None = exc
    for _ in range(10):  # chains are short; a cycle must not loop forever
        if cause is None:
            return False
        if isinstance(cause, kind):
            return True
        cause = cause.__cause__ or cause.__context__ or getattr(cause, "os_error", None)
    return False


class _PublicResolver(AbstractResolver):
    """Resolves names with the system resolver and refuses any that has a non-public address
    (unless private_ok). aiohttp connects only to the addresses returned here."""

    def __init__(self, private_ok: bool) -> None:
        self.private_ok = private_ok
        self._lookups: list[threading.Thread] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        name = host.rstrip(".").lower()
        if name == "invalid" or name.endswith(".invalid"):
            raise CannotResolve()  # RFC 6761 6.4: never resolves; no need to ask a server
        results: list[ResolveResult] = []
        for fam, _, proto, _, sockaddr in await self._getaddrinfo(host, port, family):
            address = str(sockaddr[0])
            if not self.private_ok and not is_safe_address(address):
                raise NotPublicAddress()  # one private address is enough: it may be the one used
            results.append(
                ResolveResult(
                    hostname=host,
                    host=address,
                    port=int(sockaddr[1]),
                    family=fam,
                    proto=proto,
                    flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
                )
            )
        if not results:
            raise CannotResolve()
        return results

    async def close(self) -> None:
        """Nothing is held: each lookup's thread ends with it."""

    async def _getaddrinfo(self, host: str, port: int, family: int) -> list[Any]:
        """socket.getaddrinfo in a daemon thread of its own, awaited (and so cancelled at the
        deadline) like any coroutine; see the module docstring for why not an executor."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[list[Any]] = loop.create_future()

        def settle(infos: list[Any] | None) -> None:
            if answer.done():  # the fetch has moved on (cancelled at its deadline)
                return
            if infos is None:
                answer.set_exception(CannotResolve())
            else:
                answer.set_result(infos)

        def lookup() -> None:
            infos: list[Any] | None = None
            with contextlib.suppress(OSError, UnicodeError):  # no address: settle(None)
                infos = socket.getaddrinfo(
                    host, port, family, socket.SOCK_STREAM, 0, _AI_ADDRCONFIG
                )
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
                loop.call_soon_threadsafe(settle, infos)

        thread = threading.Thread(target=lookup, name="ref-audio-dns", daemon=True)
        self._lookups.append(thread)
        thread.start()
        return await answer

    def join_lookups(self, deadline: float) -> None:
        """Wait for lookup threads, but never past the fetch's deadline (+ a moment for one
        that has just handed over its answer)."""
        for thread in self._lookups:
            thread.join(max(0.05, deadline - time.monotonic()))


def _loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False
