"""Fetching image URLs safely: one total deadline, public destinations only by default, bounded bodies.

:func:`fetch_url` returns the body of an ``http(s)`` URL or raises an
:class:`~bge_siglip_vectorizer.errors.ImageFetchError` / :class:`~bge_siglip_vectorizer.errors.ImageTooLargeError`
naming the item. What it promises, and how:

* **One deadline** (``limits.url_timeout_s``) for the whole fetch: name resolution, connecting, TLS, sending,
  headers, every redirect hop and the body. Every socket operation waits at most the time left, so a server that
  trickles a byte at a time cannot stretch it. Name resolution (``getaddrinfo`` has no timeout of its own) runs on
  a helper thread that is waited for at most the time left.
* **Destinations**: a host name is resolved once; each address is checked and the connection goes to that checked
  address, with the ``Host`` header and the TLS server name (SNI, certificate check) still the URL's host. No second
  lookup happens, so a DNS answer that changes between check and connect (rebinding) cannot reach another address.
  By default loopback, private, link-local, unique-local, multicast, reserved, unspecified and other non-public
  addresses (also when embedded in IPv6: ``::ffff:127.0.0.1``, 6to4, NAT64) are refused; ``allow_private_urls``
  allows all of them (``True``) or listed host names and networks.
* **Redirects** are followed here, not by the HTTP library: at most ``limits.max_redirects`` hops, each one checked
  like the first, http(s) targets only.
* **Size**: at most ``limits.max_download_bytes`` of body. We ask for no compression (images are compressed
  already); a server that compresses anyway is decoded in bounded steps, so a gzip bomb stops at the cap.

Proxies from the environment (``HTTP_PROXY`` ...) are not used: through a proxy the address finally connected to
could not be checked.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

from .errors import ImageFetchError, ImageTooLargeError, InvalidInputError

if TYPE_CHECKING:
    from .inputs import ImageLimits

__all__ = ["fetch_url", "is_url", "Resolver", "normalize_private_allowance", "parse_private_allowance",
           "destination_refusal"]

#: ``resolver(host, port) -> IP address strings``: replaces DNS (tests map names to private addresses with it).
Resolver = Callable[[str, int], Sequence[str]]

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*$")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_UNIQUE_LOCAL = ipaddress.ip_network("fc00::/7")
_USER_AGENT = b"bge-siglip-vectorizer"


def is_url(item: Any) -> bool:
    """Whether ``item`` is an ``http(s)://`` URL string (fetched on the fetch threads, not the decode pool)."""
    return isinstance(item, str) and item.lstrip()[:8].lower().startswith(("http://", "https://"))


# ------------------------------------------------------------------------------------------- allow_private_urls
def normalize_private_allowance(value: Any) -> bool | tuple[str, ...]:
    """``allow_private_urls`` in its one hashable form: ``True``/``False``, or a tuple of lower-case host names and
    networks (``"10.0.0.0/8"``, ``"fd00::/8"``, a single address). Lists and comma-separated strings are accepted;
    an entry that is neither a host name nor a network is a ``ValueError``."""
    if value is None or value is False or value is True:
        return bool(value)
    entries = value.split(",") if isinstance(value, str) else list(value)
    normal: list[str] = []
    for entry in entries:
        if not isinstance(entry, str):
            raise ValueError(f"allow_private_urls entries must be strings, got {type(entry).__name__}")
        entry = entry.strip().lower().rstrip(".")
        if not entry:
            continue
        try:
            normal.append(str(ipaddress.ip_network(entry.strip("[]"), strict=False)))
        except ValueError:
            if not _HOSTNAME.match(entry):
                raise ValueError(
                    f"allow_private_urls: {entry!r} is neither a host name nor an IP network (e.g. 10.0.0.0/8)"
                ) from None
            normal.append(entry)
    return tuple(dict.fromkeys(normal)) or False


def parse_private_allowance(text: str) -> bool | tuple[str, ...]:
    """The command-line / environment form: ``true``/``false`` or a comma-separated list of hosts and networks."""
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("", "0", "false", "no", "off", "none"):
        return False
    return normalize_private_allowance(text)


@lru_cache(maxsize=64)
def _allowance(entries: tuple[str, ...]) -> tuple[frozenset[str], tuple[Any, ...]]:
    hosts, networks = set(), []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            hosts.add(entry)
    return frozenset(hosts), tuple(networks)


def _special_kind(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """What kind of non-public address ``ip`` is, or None for a public one."""
    if ip.version == 6:
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            kind = _special_kind(embedded)
            if kind is not None or ip.ipv4_mapped:
                return kind
    for kind, test in (("loopback", ip.is_loopback), ("unspecified", ip.is_unspecified),
                       ("link-local", ip.is_link_local), ("multicast", ip.is_multicast), ("reserved", ip.is_reserved),
                       ("unique-local", ip.version == 6 and ip in _UNIQUE_LOCAL), ("private", ip.is_private),
                       ("non-public", not ip.is_global)):
        if test:
            return kind
    return None


def destination_refusal(host: str, address: str, allowance: bool | tuple[str, ...]) -> str | None:
    """Why connecting to ``address`` (for the URL host ``host``) is refused, or None if it is allowed."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    kind = _special_kind(ip)
    if kind is None or allowance is True:
        return None
    if allowance:
        hosts, networks = _allowance(allowance)
        if host in hosts or any(ip.version == net.version and ip in net for net in networks):
            return None
    return kind


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


# ------------------------------------------------------------------------------------------- time and addresses
class _Expired(Exception):
    """The fetch's deadline passed (turned into ImageFetchError 'timed out' at the boundary)."""


def _left(deadline: float, timeout: float | None = None) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise _Expired()
    return left if timeout is None else min(left, timeout)


_DNS_POOL: ThreadPoolExecutor | None = None
_DNS_LOCK = threading.Lock()


def _dns_pool() -> ThreadPoolExecutor:
    global _DNS_POOL
    with _DNS_LOCK:
        if _DNS_POOL is None:
            # A lookup stuck in the system resolver keeps its thread until the resolver gives up; callers only wait
            # until their deadline, and a few threads are enough for lookups that answer.
            _DNS_POOL = ThreadPoolExecutor(8, thread_name_prefix="bge-siglip-dns")
        return _DNS_POOL


def _system_resolve(host: str, port: int) -> list[str]:
    # Numeric forms such as "127.1" or "2130706433" come back from getaddrinfo as the address they denote.
    infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _lookup(host: str, port: int, deadline: float, resolver: Resolver | None) -> list[str]:
    try:
        return [str(ipaddress.ip_address(host))]  # a literal address needs no lookup
    except ValueError:
        pass
    # On a helper thread, waited for at most the time left: getaddrinfo (or an injected resolver) has no timeout.
    future = _dns_pool().submit(resolver or _system_resolve, host, port)
    try:
        return list(future.result(timeout=_left(deadline)))
    except FutureTimeout:
        raise _Expired() from None


# ------------------------------------------------------------------------------------------- the transport
def _httpcore():
    import httpcore  # imported lazily: most callers never fetch URLs

    return httpcore


def _pinned_backend(deadline: float):
    httpcore = _httpcore()

    class DeadlineStream(httpcore.NetworkStream):
        """Every read, write and TLS handshake waits at most until the fetch's deadline."""

        def __init__(self, stream) -> None:
            self._stream = stream

        def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
            return self._stream.read(max_bytes, _left(deadline, timeout))

        def write(self, buffer: bytes, timeout: float | None = None) -> None:
            self._stream.write(buffer, _left(deadline, timeout))

        def close(self) -> None:
            self._stream.close()

        def start_tls(self, ssl_context, server_hostname=None, timeout=None):
            return DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, _left(deadline, timeout)))

        def get_extra_info(self, info: str) -> Any:
            return self._stream.get_extra_info(info)

    class PinnedBackend(httpcore.SyncBackend):
        """Connects a (host, port) only to the addresses checked for it, never to anything resolved again."""

        def __init__(self) -> None:
            self.pins: dict[tuple[str, int], list[str]] = {}

        def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
            addresses = self.pins.get((host, port))
            if not addresses:
                raise httpcore.ConnectError(f"no checked address for {host}:{port}")
            error: Exception | None = None
            for address in addresses:
                try:
                    stream = super().connect_tcp(address, port, _left(deadline, timeout), local_address,
                                                 socket_options)
                    return DeadlineStream(stream)
                except httpcore.ConnectError as exc:  # try the next checked address
                    error = exc
            raise error  # type: ignore[misc]

        def connect_unix_socket(self, path, timeout=None, socket_options=None):
            raise httpcore.ConnectError("unix sockets are never connected to")

    return PinnedBackend()


@lru_cache(maxsize=1)
def _ssl_context():
    import ssl

    try:
        import certifi  # the CA bundle httpx itself uses (installed with it)
    except ImportError:  # pragma: no cover - certifi comes with httpx
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=certifi.where())


def _ascii_url(url: str) -> str:
    """The URL with an IDNA host and percent-encoded path, as HTTP needs on the wire."""
    if url.isascii():
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = host.encode("idna").decode("ascii") + (f":{parts.port}" if parts.port else "")
    safe = "/%:@!$&'()*+,;=~-._"
    return urlunsplit((parts.scheme, netloc, quote(parts.path, safe=safe), quote(parts.query, safe=safe + "?"), ""))


def fetch_url(url: str, index: int | None, limits: "ImageLimits") -> bytes:
    """The body of ``url`` within ``limits`` (deadline, destinations, redirects, size), or a typed error."""
    source = url.strip()
    if not limits.allow_urls:
        raise ImageFetchError("URL inputs are disabled (allow_urls=False)", index=index, source=source)
    httpcore = _httpcore()
    deadline = time.monotonic() + limits.url_timeout_s
    backend = _pinned_backend(deadline)
    current = source
    try:
        with httpcore.ConnectionPool(ssl_context=_ssl_context(), network_backend=backend, retries=0) as pool:
            for hop in range(limits.max_redirects + 1):
                target, host, port = _target(current, index, source, hop)
                backend.pins[(host, port)] = _checked_addresses(host, port, deadline, limits, index, source, current)
                headers = [(b"Host", _authority(target)), (b"Accept", b"image/*, */*;q=0.5"),
                           (b"Accept-Encoding", b"identity"), (b"User-Agent", _USER_AGENT)]
                timeouts = {kind: _left(deadline) for kind in ("connect", "read", "write", "pool")}
                with pool.stream("GET", target, headers=headers, extensions={"timeout": timeouts}) as response:
                    status = response.status
                    if status in REDIRECT_STATUSES:
                        location = _header(response.headers, b"location")
                        if not location:
                            raise ImageFetchError(f"HTTP {status} redirect without a Location header",
                                                  index=index, source=source)
                        current = urljoin(current, location.decode("latin-1").strip())
                        continue
                    if status >= 400:
                        raise ImageFetchError(f"HTTP {status}" + _via(current, source), index=index, source=source)
                    if not 200 <= status < 300:
                        raise ImageFetchError(f"HTTP {status} is not an image response", index=index, source=source)
                    return _read_body(response, limits, index, source)
            raise ImageFetchError(f"too many redirects (more than {limits.max_redirects})", index=index,
                                  source=source)
    except InvalidInputError:  # ours, typed already (they are ValueErrors: keep them out of the tuple below)
        raise
    except _Expired:
        raise ImageFetchError(
            f"timed out after {limits.url_timeout_s:g}s (url_timeout_s bounds the whole download, redirects "
            "included)", index=index, source=source,
        ) from None
    except httpcore.TimeoutException:  # a socket timeout at the deadline's edge
        raise ImageFetchError(f"timed out after {limits.url_timeout_s:g}s", index=index, source=source) from None
    except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol, OSError, ValueError,
            TypeError, UnicodeError, zlib.error) as exc:
        raise ImageFetchError(f"download failed ({type(exc).__name__}: {exc})" + _via(current, source),
                              index=index, source=source) from None


def _via(current: str, source: str) -> str:
    return "" if current == source else f" (after redirects, at {current})"


def _target(url: str, index: int | None, source: str, hop: int) -> tuple[str, str, int]:
    """The wire form of ``url`` and the host and port it connects to, parsed as the HTTP library parses it."""
    httpcore = _httpcore()
    try:
        wire = _ascii_url(url)
        parsed = httpcore.URL(wire)
        scheme = parsed.scheme.decode("ascii").lower()
        host = parsed.host.decode("ascii")
        port = parsed.port
    except (ValueError, TypeError, UnicodeError) as exc:  # e.g. an unbalanced IPv6 bracket, a bad port
        raise ImageFetchError(f"malformed URL ({exc})", index=index, source=source) from None
    if scheme not in ("http", "https"):
        what = f"redirect to {url!r}" if hop else "URL"
        raise ImageFetchError(f"{what} refused: only http and https are fetched", index=index, source=source)
    if not host:
        raise ImageFetchError("malformed URL (no host)", index=index, source=source)
    if not _HOSTNAME.match(host.rstrip(".")) and not _is_ip(host):  # nothing malformed is sent to the resolver
        raise ImageFetchError(f"malformed URL (invalid host {host!r})", index=index, source=source)
    return wire, host, port or (443 if scheme == "https" else 80)


def _authority(target: str) -> bytes:
    netloc = urlsplit(target).netloc.rsplit("@", 1)[-1]  # never send credentials from the URL
    return netloc.encode("ascii")


def _checked_addresses(host: str, port: int, deadline: float, limits: "ImageLimits", index: int | None,
                       source: str, current: str) -> list[str]:
    try:
        addresses = _lookup(host, port, deadline, limits.resolver)
    except socket.gaierror as exc:
        raise ImageFetchError(f"cannot resolve host {host!r} ({exc.strerror or exc})", index=index,
                              source=source) from None
    if not addresses:
        raise ImageFetchError(f"cannot resolve host {host!r} (no address)", index=index, source=source)
    allowed = [a for a in addresses if destination_refusal(host, a, limits.allow_private_urls) is None]
    if allowed:
        return allowed
    address = addresses[0]
    kind = destination_refusal(host, address, limits.allow_private_urls)
    named = address if host.strip("[]") == address else f"{host} resolves to {address}"
    where = "redirect refused" if current != source else "refused"
    raise ImageFetchError(
        f"{where}: {named}, a {kind} address ({current}); internal destinations are refused by default: to fetch "
        f"from an internal server pass allow_private_urls=True, or a list of allowed hosts and networks such as "
        f"allow_private_urls=[{host!r}]",
        index=index, source=source,
    )


def _header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def _read_body(response, limits: "ImageLimits", index: int | None, source: str) -> bytes:
    cap = limits.max_download_bytes

    def too_large(what: str) -> ImageTooLargeError:
        return ImageTooLargeError(f"{what} exceeds the cap of {cap:,} bytes", index=index, source=source)

    declared = (_header(response.headers, b"content-length") or b"").strip()
    if declared.isdigit() and int(declared) > cap:
        raise too_large(f"download of {int(declared):,} bytes")
    encoding = (_header(response.headers, b"content-encoding") or b"identity").strip().lower()
    if encoding not in (b"identity", b"gzip", b"x-gzip", b"deflate"):
        raise ImageFetchError(f"unsupported Content-Encoding {encoding.decode('latin-1')!r}", index=index,
                              source=source)
    decoder = None if encoding == b"identity" else zlib.decompressobj(wbits=47)  # 47: gzip or zlib header
    chunks: list[bytes] = []
    received = 0
    for chunk in response.iter_stream():
        while chunk:
            if decoder is None:
                data, chunk = chunk, b""
            else:
                # At most what still fits under the cap (+1 to notice going over): a bomb never inflates past it.
                data = decoder.decompress(chunk, cap - received + 1)
                chunk = decoder.unconsumed_tail
                if decoder.eof:  # concatenated gzip members are one valid body
                    chunk += decoder.unused_data
                    decoder = zlib.decompressobj(wbits=47) if chunk else decoder
            received += len(data)
            if received > cap:
                raise too_large("download")
            chunks.append(data)
    return b"".join(chunks)
