"""A fault-injecting HTTP/1.1 proxy between an S3 client and a real S3 server on loopback.

The client's ``endpoint_url`` points at the proxy (``proxy.url``), so the client signs its
requests for the proxy's ``host:port``. The proxy forwards every request byte for byte to the
server (``upstream``): the server sees exactly the Host header that was signed, so SigV4
signatures verify (SeaweedFS checks them) without the proxy knowing any credentials. The
server's answer is read in full and sent back re-framed with a ``Content-Length`` (never
chunked); the status, headers and body are otherwise unchanged.

Per request, the proxy can inject one fault (``FAULTS``):

``"500"``, ``"503"``  answer with that status and an S3 XML error body, without forwarding
                      (the server never sees the request);
``"200_error"``       answer 200 with an S3 XML error body, without forwarding (S3 may answer
                      a multipart upload's completion so when it failed); rules only;
``"404"``             answer 404 ``NoSuchUpload``, without forwarding (what S3 may say to a
                      completion sent again after the first was applied); rules only;
``"reset"``           reset the connection (TCP RST) without forwarding;
``"truncate"``        forward (the server applies the request), then send the status line,
                      the headers and half of the body under the full ``Content-Length``, and
                      close (a response with no body is cut in its status line);
``"delay"``           wait ``delay`` seconds, then forward normally;
``"lost_reply"``      forward (the server applies the request), then reset the connection
                      instead of answering: the client cannot tell whether it happened.

Two ways to drive it:

* **Rules**, for deterministic tests. ``add_rule(match, fault, times, hold)`` applies to the
  next ``times`` requests for which ``match(request)`` is true (``times=None``: every one).
  Rules are tried in the order they were added; the first live rule that matches wins. A rule
  can *hold* a request, before forwarding it (``hold="before"``) or after the server answered
  and before the client gets the answer (``hold="after"``), until the test calls
  ``rule.release()``; ``rule.reached`` tells that a request is being held. ``rule.fired`` is
  set at the rule's first match and ``rule.requests`` lists what it matched, so a test can
  wait for a request to happen and look at it. A rule with ``fault=None`` changes nothing
  (useful to hold, or to observe).
* **Random faults**, for campaigns: ``randomize(p, seed, kinds)`` gives each request that no
  rule matched a fault with probability ``p``, its kind drawn from ``kinds``, from a seeded
  RNG (decisions are taken in the order requests arrive). ``calm()`` turns it off.

Counters (``stats``): requests, bytes from the clients and to them, and faults by kind.
``log`` records every request (method, target, status or None, fault, and when it arrived and
was answered), before its answer is sent: a client that got an answer always finds it logged.
:func:`sequential_depth` reads the longest chain of requests each sent after the previous one
was answered: the round trips an operation waits for, whatever latency the store adds. Any problem of the
proxy itself (the server unreachable, a hold never released) is recorded in ``errors``, and
the connection is reset.

Urllib3 (under s3func) retries a request itself: ``S3Connection(retries=n)`` gives each
request up to ``n + 1`` attempts, for connection errors (resets, truncated answers) and for
500/503 on idempotent methods (GET, PUT, DELETE, HEAD; not POST, so the DeleteObjects POST is
tried once), with a backoff of 0 s before the second attempt and 2, 4, ... s before later
ones. A rule meant to defeat every attempt of a request needs ``times >= n + 1`` (or None).

Example::

    with FaultProxy(server.endpoint_url) as proxy:
        conn = ebooklet.S3Connection(key_id, secret, "dbs/x", bucket, endpoint_url=proxy.url)
        rule = proxy.add_rule(lambda r: r.method == "PUT" and r.key == "dbs/x", "lost_reply")
        ...
        assert rule.fired.is_set()
"""

from __future__ import annotations

import collections
import contextlib
import http.client
import random
import socket
import socketserver
import struct
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

FAULTS = ("500", "503", "reset", "truncate", "delay", "lost_reply")
#: Faults for rules only (a random one would hit requests that S3 never answers so).
RULE_FAULTS = (*FAULTS, "200_error", "404")
#: Faults that forward the request first: the server applies it whatever the client sees.
FORWARDING_FAULTS = ("truncate", "delay", "lost_reply")
HOLDS = (None, "before", "after")
#: serve_forever's poll interval: stop() returns within about this time.
POLL_INTERVAL = 0.01
_MAX_LINE = 65536
_ERROR_BODY = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
    "<Message>injected by the test fault proxy</Message></Error>"
)
_ERROR_CODES = {
    "500": (500, "Internal Server Error", "InternalError"),
    "503": (503, "Service Unavailable", "SlowDown"),
    "200_error": (200, "OK", "InternalError"),
    "404": (404, "Not Found", "NoSuchUpload"),
}
# Hop-by-hop headers of the server's answer that the proxy replaces with its own framing.
_FRAMING = {"content-length", "transfer-encoding", "connection", "keep-alive"}


@dataclass(frozen=True)
class Request:
    """One request as the proxy received it."""

    method: str
    target: str  # the request target as sent, e.g. "/bucket/dbs/x?delete"
    headers: dict[str, str]  # lower-cased names
    body: bytes
    received: float = 0.0  # time.monotonic() when the whole request had been read

    @property
    def path(self) -> str:
        """The target's path, percent-decoded (``/bucket/key``)."""
        return urllib.parse.unquote(urllib.parse.urlsplit(self.target).path)

    @property
    def query(self) -> str:
        return urllib.parse.urlsplit(self.target).query

    @property
    def bucket(self) -> str:
        return self.path.lstrip("/").split("/", 1)[0]

    @property
    def key(self) -> str:
        """The object key of a path-style request (empty for bucket requests)."""
        parts = self.path.lstrip("/").split("/", 1)
        return parts[1] if len(parts) > 1 else ""

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)

    def __str__(self) -> str:
        return f"{self.method} {self.target}"


@dataclass
class Rule:
    """A deterministic fault (or hold) for the requests that ``match`` selects."""

    match: Callable[[Request], bool]
    fault: str | None = None
    times: int | None = 1
    hold: str | None = None
    delay: float = 0.2
    hits: int = 0
    requests: list[Request] = field(default_factory=list)
    #: Set when the rule first matches a request.
    fired: threading.Event = field(default_factory=threading.Event)
    #: Set while (and after) a request is held by this rule.
    reached: threading.Event = field(default_factory=threading.Event)
    _released: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        if self.fault is not None and self.fault not in RULE_FAULTS:
            raise ValueError(f"unknown fault {self.fault!r}; choose one of {RULE_FAULTS}")
        if self.hold not in HOLDS:
            raise ValueError(f"hold must be one of {HOLDS}, not {self.hold!r}")
        if self.hold == "after" and self.fault in (*_ERROR_CODES, "reset"):
            raise ValueError(f"fault {self.fault!r} does not forward: there is no answer to hold")

    @property
    def live(self) -> bool:
        return self.times is None or self.hits < self.times

    def release(self) -> None:
        """Let held requests (now and later) go on."""
        self._released.set()

    def wait(self, timeout: float = 30.0) -> bool:
        """Wait until the rule has matched a request."""
        return self.fired.wait(timeout)


@dataclass(frozen=True)
class LogEntry:
    method: str
    target: str
    status: int | None  # None when the client got no status line
    fault: str | None
    #: time.monotonic() when the request was read, and when its answer (or fault) was decided
    #: and about to go out: requests that overlap in time were in flight together.
    started: float = 0.0
    answered: float = 0.0


@dataclass
class Stats:
    requests: int = 0
    bytes_in: int = 0  # from the clients
    bytes_out: int = 0  # to the clients
    faults: collections.Counter = field(default_factory=collections.Counter)

    def snapshot(self) -> dict:
        return {
            "requests": self.requests,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "faults": dict(sorted(self.faults.items())),
        }


class _Dropped(Exception):
    """The client's connection is over (closed by the client, or reset by a fault)."""


class FaultProxy:
    """A threaded proxy on 127.0.0.1 (a free port) in front of ``upstream`` (an http URL)."""

    def __init__(self, upstream: str, hold_timeout: float = 60.0) -> None:
        parts = urllib.parse.urlsplit(upstream)
        if parts.scheme != "http" or parts.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"the proxy forwards to a plain http server on loopback, not {upstream!r}")
        self.upstream = (parts.hostname, parts.port or 80)
        self.hold_timeout = hold_timeout
        self.stats = Stats()
        self.log: list[LogEntry] = []
        self.errors: list[str] = []
        self._rules: list[Rule] = []
        self._lock = threading.Lock()
        self._rng = random.Random(0)
        self._p = 0.0
        self._kinds: tuple[str, ...] = FAULTS
        self._random_delay = 0.2
        self._conns: set[socket.socket] = set()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.proxy = self
        self.port: int = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(POLL_INTERVAL,), name="FaultProxy", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, release every hold and drop open connections."""
        with self._lock:
            rules = list(self._rules)
            conns = list(self._conns)
        for rule in rules:
            rule.release()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- driving it ------------------------------------------------------------------------

    def add_rule(
        self,
        match: Callable[[Request], bool],
        fault: str | None = None,
        times: int | None = 1,
        hold: str | None = None,
        delay: float = 0.2,
    ) -> Rule:
        """Apply ``fault`` (and/or ``hold``) to the next ``times`` requests ``match`` selects."""
        rule = Rule(match, fault, times, hold, delay)
        with self._lock:
            self._rules.append(rule)
        return rule

    def hold(self, match: Callable[[Request], bool], times: int | None = 1, where: str = "before") -> Rule:
        """A gate: hold the matching request(s) until ``rule.release()``."""
        return self.add_rule(match, None, times, where)

    def remove_rule(self, rule: Rule) -> None:
        rule.release()
        with self._lock:
            if rule in self._rules:
                self._rules.remove(rule)

    def clear_rules(self) -> None:
        with self._lock:
            rules, self._rules = self._rules, []
        for rule in rules:
            rule.release()

    def randomize(
        self, p: float, seed: int = 0, kinds: Iterable[str] = FAULTS, delay: float = 0.2
    ) -> None:
        """Give each request no rule matched a random fault with probability ``p``."""
        kinds = tuple(kinds)
        for kind in kinds:
            if kind not in FAULTS:
                raise ValueError(f"unknown fault {kind!r}; choose from {FAULTS}")
        with self._lock:
            self._rng = random.Random(seed)
            self._p = p
            self._kinds = kinds
            self._random_delay = delay

    def calm(self) -> None:
        """No more random faults (rules stay)."""
        with self._lock:
            self._p = 0.0

    def requests(self, match: Callable[[LogEntry], bool] | None = None) -> list[LogEntry]:
        """The log entries (all, or those ``match`` selects)."""
        with self._lock:
            log = list(self.log)
        return [e for e in log if match is None or match(e)]

    # -- per request -----------------------------------------------------------------------

    def _decide(self, req: Request, nbytes: int) -> tuple[Rule | None, str | None, float]:
        with self._lock:
            self.stats.requests += 1
            self.stats.bytes_in += nbytes
            for rule in self._rules:
                if rule.live and self._matches(rule, req):
                    rule.hits += 1
                    rule.requests.append(req)
                    rule.fired.set()
                    if rule.fault:
                        self.stats.faults[rule.fault] += 1
                    return rule, rule.fault, rule.delay
            if self._p and self._rng.random() < self._p:
                kind = self._rng.choice(self._kinds)
                self.stats.faults[kind] += 1
                return None, kind, self._random_delay
        return None, None, 0.0

    def _matches(self, rule: Rule, req: Request) -> bool:
        try:
            return bool(rule.match(req))
        except Exception as exc:  # noqa: BLE001 - a broken matcher is the test's bug: report it
            self.errors.append(f"{req}: rule matcher raised {exc!r}")
            return False

    def _wait_hold(self, rule: Rule, req: Request) -> None:
        rule.reached.set()
        if not rule._released.wait(self.hold_timeout):
            self._error(f"{req}: held for {self.hold_timeout:g} s and never released")
            raise _Dropped

    def _record(self, req: Request, status: int | None, fault: str | None, sent: int) -> None:
        with self._lock:
            self.log.append(LogEntry(req.method, req.target, status, fault, req.received, time.monotonic()))
            self.stats.bytes_out += sent

    def _error(self, message: str) -> None:
        with self._lock:
            self.errors.append(message)

    def _forward(self, raw: bytes, method: str) -> tuple[int, str, list[tuple[str, str]], bytes]:
        """Send the request bytes to the server unchanged; read its whole answer."""
        with socket.create_connection(self.upstream, timeout=120) as up:
            up.sendall(raw)
            resp = http.client.HTTPResponse(up, method=method)
            try:
                resp.begin()
                body = resp.read()
            finally:
                resp.close()
        return resp.status, resp.reason, resp.msg.items(), body


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False
    proxy: FaultProxy


class _Handler(socketserver.BaseRequestHandler):
    """One client connection: requests are read and answered in turn (keep-alive)."""

    def setup(self) -> None:
        self.proxy: FaultProxy = self.server.proxy  # type: ignore[attr-defined]
        self.sock: socket.socket = self.request
        self.rfile = self.sock.makefile("rb")
        with self.proxy._lock:
            self.proxy._conns.add(self.sock)

    def finish(self) -> None:
        with self.proxy._lock:
            self.proxy._conns.discard(self.sock)
        with contextlib.suppress(OSError):
            self.rfile.close()

    def handle(self) -> None:
        try:
            while self._one():
                pass
        except (_Dropped, OSError, ValueError):
            pass

    # -- reading a request -------------------------------------------------------------------

    def _read_request(self) -> tuple[Request, bytes] | None:
        line = self.rfile.readline(_MAX_LINE)
        while line in (b"\r\n", b"\n"):
            line = self.rfile.readline(_MAX_LINE)
        if not line:
            return None
        try:
            method, target, _version = line.decode("latin-1").split()
        except ValueError:
            self.proxy._error(f"malformed request line {line!r}")
            raise _Dropped from None
        head = [line]
        headers: dict[str, str] = {}
        while True:
            h = self.rfile.readline(_MAX_LINE)
            if not h:
                raise _Dropped
            head.append(h)
            if h in (b"\r\n", b"\n"):
                break
            name, _, value = h.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("expect", "").lower() == "100-continue":
            self.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        body_raw, body = b"", b""
        if "chunked" in headers.get("transfer-encoding", "").lower():
            raw_chunks, chunks = [], []
            while True:
                size_line = self.rfile.readline(_MAX_LINE)
                raw_chunks.append(size_line)
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while True:  # trailers, then the empty line
                        t = self.rfile.readline(_MAX_LINE)
                        raw_chunks.append(t)
                        if t in (b"\r\n", b"\n", b""):
                            break
                    break
                data = self.rfile.read(size + 2)
                raw_chunks.append(data)
                chunks.append(data[:size])
            body_raw, body = b"".join(raw_chunks), b"".join(chunks)
        elif "content-length" in headers:
            body = body_raw = self.rfile.read(int(headers["content-length"]))
        raw = b"".join(head) + body_raw
        return Request(method, target, headers, body, time.monotonic()), raw

    # -- answering ---------------------------------------------------------------------------

    def _reset(self) -> None:
        """Close with a TCP RST (SO_LINGER 0), so the client sees a reset, not a clean close."""
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with contextlib.suppress(OSError):
            self.rfile.close()
        with contextlib.suppress(OSError):
            self.sock.close()
        raise _Dropped

    def _one(self) -> bool:
        """Serve one request; False when the connection is over."""
        got = self._read_request()
        if got is None:
            return False
        req, raw = got
        proxy = self.proxy
        rule, fault, delay = proxy._decide(req, len(raw))
        keep_alive = req.header("connection", "").lower() != "close"
        if rule is not None and rule.hold == "before":
            proxy._wait_hold(rule, req)
        if fault in _ERROR_CODES:
            status, reason, code = _ERROR_CODES[fault]
            body = _ERROR_BODY.format(code=code).encode()
            head = (
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\n"
                f"Content-Length: {len(body)}\r\n"
                f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
            ).encode()
            proxy._record(req, status, fault, len(head) + len(body))
            self.sock.sendall(head + body)
            return keep_alive
        if fault == "reset":
            proxy._record(req, None, fault, 0)
            self._reset()
        if fault == "delay":
            time.sleep(delay)
        try:
            status, reason, headers, body = proxy._forward(raw, req.method)
        except (OSError, http.client.HTTPException) as exc:
            proxy._error(f"{req}: forwarding to the server failed: {exc!r}")
            proxy._record(req, None, "upstream-error", 0)
            self._reset()
        if rule is not None and rule.hold == "after":
            proxy._wait_hold(rule, req)
        if fault == "lost_reply":
            proxy._record(req, None, fault, 0)
            self._reset()
        no_body = req.method == "HEAD" or status in (204, 304) or status < 200
        lines = [f"HTTP/1.1 {status} {reason}\r\n"]
        for name, value in headers:
            lname = name.lower()
            if lname in _FRAMING and not (no_body and lname == "content-length"):
                continue
            lines.append(f"{name}: {value}\r\n")
        if not no_body:
            lines.append(f"Content-Length: {len(body)}\r\n")
        lines.append(f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n")
        head = "".join(lines).encode("latin-1")
        if no_body:
            body = b""
        if fault == "truncate":
            # Half the body under the full Content-Length; with no body, half the status line
            # (cut headers alone would still parse: http.client takes EOF as their end).
            cut = head + body[: len(body) // 2] if body else head[: len(lines[0]) // 2]
            proxy._record(req, status if body else None, fault, len(cut))
            self.sock.sendall(cut)
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_WR)
            raise _Dropped
        proxy._record(req, status, fault, len(head) + len(body))
        self.sock.sendall(head + body)
        return keep_alive


def sequential_depth(entries: Iterable[LogEntry]) -> int:
    """The longest chain of requests in ``entries`` where each arrived after the one before
    it was answered: how many round trips the client waited for one after another (requests
    in flight together count once)."""
    ordered = sorted(entries, key=lambda e: e.started)
    depth: list[int] = []
    for i, entry in enumerate(ordered):
        before = [depth[j] for j in range(i) if ordered[j].answered <= entry.started]
        depth.append(1 + max(before, default=0))
    return max(depth, default=0)

