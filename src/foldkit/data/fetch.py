"""Fetching one URL safely: the HTTP client under `download`.

Standard library only (http.client; no extra to install): every worker thread keeps one open
connection per host (keep-alive, so a server is not paid a TCP and TLS handshake per image), each
host has its own limit of requests in flight and a minimum delay between their starts, and a request
is retried with exponential backoff on 429, 5xx, timeouts and dropped connections, waiting what a
`Retry-After` header asks (up to a cap).

Safety: only http and https, checked again on every redirect hop (a redirect to file:// or ftp:// is
refused); optional list of allowed hosts; a body larger than the limit is refused from its
Content-Length or stopped while streaming at the limit (never read in whole first); a timeout per
socket operation and for the whole response (a server trickling bytes is cut off).
"""
from __future__ import annotations

import email.utils
import http.client
import random
import ssl
import threading
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

USER_AGENT = "foldkit-download (+https://github.com/foldkit)"
SCHEMES = ("http", "https")
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
MAX_REDIRECTS = 5
CHUNK = 1 << 16


@dataclass(frozen=True)
class Limits:
    timeout: float = 20.0          # seconds for one request: each socket operation and the whole response
    max_bytes: int = 20 << 20      # largest body accepted
    retries: int = 3               # further tries after a 429, 5xx, timeout or dropped connection
    backoff: float = 1.0           # first wait between tries (doubled each try, with jitter)
    max_wait: float = 60.0         # longest Retry-After honoured; a longer one ends the tries
    per_host: int = 8              # requests in flight to one host
    delay: float = 0.0             # seconds between the starts of two requests to one host
    allow_hosts: tuple = ()        # when given, the only hosts fetched (redirects included)


@dataclass
class Fetched:
    outcome: str                   # ok | http | timeout | network | too_large | refused | redirects
    body: bytes = b""
    status: int = 0                # the last HTTP status (0: none received)
    detail: str = ""
    attempts: int = 0
    url: str = ""                  # the final URL after redirects


class Stopped(Exception):
    """The run's overall deadline passed before this URL was tried: it stays to do."""


class _Final(Exception):
    def __init__(self, outcome: str, detail: str, status: int = 0):
        super().__init__(detail)
        self.outcome, self.detail, self.status = outcome, detail, status


class _Retry(Exception):
    def __init__(self, outcome: str, detail: str, status: int = 0, wait: float | None = None):
        super().__init__(detail)
        self.outcome, self.detail, self.status, self.wait = outcome, detail, status, wait


class _Host:
    """One host's gate: at most `per_host` requests in flight, starts at least `delay` apart; a 429's
    Retry-After pauses every thread's requests to the host, not only the one that got it."""

    def __init__(self, per_host: int, delay: float):
        self.slots = threading.BoundedSemaphore(per_host)
        self.delay = delay
        self.lock = threading.Lock()
        self.next_start = 0.0

    def wait_turn(self) -> None:
        with self.lock:
            now = time.monotonic()
            start = max(now, self.next_start)
            self.next_start = start + self.delay
        if start > now:
            time.sleep(start - now)

    def pause(self, seconds: float) -> None:
        with self.lock:
            self.next_start = max(self.next_start, time.monotonic() + seconds)


def retry_after(value: str | None) -> float | None:
    """Seconds a Retry-After header asks for (a number or an HTTP date), None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class Client:
    """Fetches URLs from many threads; `deadline` (time.monotonic) ends the run's new tries."""

    def __init__(self, limits: Limits, deadline: float = 0.0):
        self.limits = limits
        self.deadline = deadline
        self.hosts: dict[str, _Host] = {}
        self.lock = threading.Lock()
        self.local = threading.local()
        self.context = ssl.create_default_context()

    def fetch(self, url: str) -> Fetched:
        """GET `url` with the retries; a Fetched whatever happened (Stopped when the run's time is up)."""
        lim = self.limits
        attempt = 0
        while True:
            if self.deadline and time.monotonic() > self.deadline:
                raise Stopped(url)
            attempt += 1
            try:
                body, final_url = self._follow(url)
                return Fetched("ok", body, 200, "", attempt, final_url)
            except _Final as e:
                return Fetched(e.outcome, b"", e.status, e.detail, attempt, url)
            except _Retry as e:
                wait = e.wait if e.wait is not None else lim.backoff * 2 ** (attempt - 1) * (0.5 + random.random())
                if attempt > lim.retries or wait > lim.max_wait:
                    detail = e.detail + (f" (Retry-After {wait:.0f} s is over the {lim.max_wait:.0f} s cap)"
                                         if wait > lim.max_wait else f" after {attempt} tries")
                    return Fetched(e.outcome, b"", e.status, detail, attempt, url)
                if e.wait is not None:
                    self._host(urlsplit(url).hostname or "").pause(wait)
                time.sleep(wait)

    def _host(self, name: str) -> _Host:
        with self.lock:
            if name not in self.hosts:
                self.hosts[name] = _Host(self.limits.per_host, self.limits.delay)
            return self.hosts[name]

    def _check(self, url: str) -> tuple:
        parts = urlsplit(url)
        if parts.scheme.lower() not in SCHEMES:
            raise _Final("refused", f"scheme {parts.scheme or '(none)'}: only http and https are fetched")
        host = (parts.hostname or "").lower()
        if not host:
            raise _Final("refused", "no host in the URL")
        if self.limits.allow_hosts and host not in self.limits.allow_hosts:
            raise _Final("refused", f"host {host} is not in --allow-host")
        return parts.scheme.lower(), host, parts.port, (parts.path or "/") + (f"?{parts.query}" if parts.query else "")

    def _follow(self, url: str) -> tuple[bytes, str]:
        for _ in range(MAX_REDIRECTS + 1):
            where = self._check(url)
            status, location, body = self._request(*where)
            if location is None:
                return body, url
            url = urljoin(url, location)
            if urlsplit(url).scheme.lower() not in SCHEMES:
                raise _Final("refused", f"redirect to {urlsplit(url).scheme}: only http and https are "
                             "fetched", status)
        raise _Final("redirects", f"more than {MAX_REDIRECTS} redirects", status)

    def _connection(self, scheme: str, host: str, port: int | None) -> http.client.HTTPConnection:
        conns = self.local.__dict__.setdefault("conns", {})
        key = (scheme, host, port)
        if key not in conns:
            conns[key] = (http.client.HTTPSConnection(host, port, timeout=self.limits.timeout, context=self.context)
                          if scheme == "https" else http.client.HTTPConnection(host, port, timeout=self.limits.timeout))
        return conns[key]

    def _drop(self, scheme: str, host: str, port: int | None) -> None:
        conn = self.local.__dict__.get("conns", {}).pop((scheme, host, port), None)
        if conn is not None:
            conn.close()

    def _request(self, scheme: str, host: str, port: int | None, target: str,
                 reused_ok: bool = True) -> tuple[int, str | None, bytes]:
        """One GET: (status, redirect location or None, body). The connection is kept for the next
        request only when the response was read to its end."""
        gate = self._host(host)
        with gate.slots:
            gate.wait_turn()
            conn = self._connection(scheme, host, port)
            reused = conn.sock is not None
            start = time.monotonic()
            try:
                conn.request("GET", target, headers={"User-Agent": USER_AGENT, "Accept": "image/*,*/*;q=0.5",
                                                     "Accept-Encoding": "identity"})
                resp = conn.getresponse()
                status = resp.status
                if status in RETRY_STATUS:
                    raise _Retry("http", f"HTTP {status} {resp.reason}".strip(), status,
                                 retry_after(resp.getheader("Retry-After")) if status in (429, 503) else None)
                if 300 <= status < 400 and resp.getheader("Location"):
                    self._read(resp, start, limit=CHUNK)
                    return status, resp.getheader("Location"), b""
                if status != 200:
                    raise _Final("http", f"HTTP {status} {resp.reason}".strip(), status)
                length = resp.getheader("Content-Length")
                if length and length.isdigit() and int(length) > self.limits.max_bytes:
                    raise _Final("too_large", f"Content-Length {int(length):,} bytes is over --max-bytes "
                                 f"{self.limits.max_bytes:,}", status)
                return status, None, self._read(resp, start, self.limits.max_bytes)
            except (_Final, _Retry):
                self._drop(scheme, host, port)     # a response not read to its end spoils the connection
                raise
            except TimeoutError:
                self._drop(scheme, host, port)
                raise _Retry("timeout", f"no answer within --timeout {self.limits.timeout:g} s") from None
            except (OSError, http.client.HTTPException) as e:
                self._drop(scheme, host, port)
                stale = reused and reused_ok and isinstance(e, (http.client.RemoteDisconnected, ConnectionError))
                if not stale:
                    raise _Retry("network", f"{type(e).__name__}: {e}".rstrip(": ")) from None
        # a kept-alive connection the server has closed meanwhile: once more on a new one, not a failed try
        return self._request(scheme, host, port, target, reused_ok=False)

    def _read(self, resp: http.client.HTTPResponse, start: float, limit: int) -> bytes:
        """The body, streamed: stops at `limit` bytes (too_large) or when the request's time is up."""
        chunks, size = [], 0
        while True:
            chunk = resp.read(CHUNK)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > limit:
                raise _Final("too_large", f"body over --max-bytes {limit:,} (stopped at {size:,} bytes)", resp.status)
            if time.monotonic() - start > self.limits.timeout:
                raise TimeoutError
            chunks.append(chunk)
