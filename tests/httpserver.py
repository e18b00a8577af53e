"""A small threaded HTTP file server on loopback, with fault injection, for tests.

``FileServer(root)`` serves the files under ``root`` read-only at ``http://127.0.0.1:PORT/``:

* GET and HEAD, with one ``Range: bytes=a-b`` (also ``a-`` and ``-n``) answered ``206`` with
  ``Content-Range``, or ``416`` when the range starts past the end of the file;
* a strong ``ETag`` (a hash of the content) and ``If-None-Match`` answered ``304``;
* fault modes, globally or for one path (or every path under a folder, ``"/a/b/"``), for a
  number of requests or until cleared: ``"403"``, ``"404"``, ``"500"``, ``"truncate"`` (half
  the body under the full ``Content-Length``, then a clean close) and ``"drop"`` (half the
  body, then the connection is reset).

Every request is logged (method, path, status, range, fault) in ``server.log`` before its
response is sent, so a client that got an answer always finds it logged. The server runs
``serve_forever`` in a thread; ``stop()`` shuts it down without waiting on idle keep-alive
connections::

    with FileServer(folder) as server:
        urllib3.request("GET", server.url("data/file.bin"))
        assert server.log[-1].status == 200
"""

from __future__ import annotations

import hashlib
import http.server
import os
import pathlib
import re
import socket
import struct
import threading
import urllib.parse
from dataclasses import dataclass
from typing import Any

FAULTS = ("403", "404", "500", "truncate", "drop")
#: How often serve_forever looks for a shutdown request: stop() returns within this time
#: (the stdlib default of 0.5 s would make every test that stops a server that much slower).
POLL_INTERVAL = 0.01

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclass(frozen=True)
class Request:
    """One request as the server saw and answered it."""

    method: str
    path: str
    status: int
    range: str | None = None
    if_none_match: str | None = None
    fault: str | None = None


@dataclass
class _Fault:
    mode: str
    remaining: int | None  # None: until cleared


class FileServer:
    """Serves ``root`` on 127.0.0.1 (a free port) from a background thread."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = pathlib.Path(root).absolute()
        self.log: list[Request] = []
        self._faults: dict[str | None, _Fault] = {}
        #: URL path prefix -> where requests under it are redirected (302 to the target plus
        #: the rest of the path).
        self.redirects: dict[str, str] = {}
        self._lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self.port: int = self._httpd.server_address[1]
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> FileServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(POLL_INTERVAL,), name="FileServer", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, end open (keep-alive) connections, close the listening socket.

        Safe to call more than once.
        """
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.close_connections()
        self._httpd.server_close()

    def __enter__(self) -> FileServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addressing ------------------------------------------------------------------------

    def url(self, relative: str | os.PathLike[str] = "") -> str:
        """The URL of a path relative to ``root`` (a str with ``/`` or a path)."""
        rel = pathlib.PurePath(relative).as_posix() if not isinstance(relative, str) else relative
        if rel == ".":
            rel = ""
        return f"http://127.0.0.1:{self.port}/" + urllib.parse.quote(rel.lstrip("/"))

    # -- faults ----------------------------------------------------------------------------

    def fault(self, mode: str, path: str | None = None, times: int | None = None) -> None:
        """Answer requests for ``path`` (None: every path) with ``mode``.

        ``path`` is a URL path such as ``"/dbs/db.blt"``; one ending in ``/`` covers every
        path under it. ``times`` limits the fault to that many requests (then it clears
        itself); None keeps it until :meth:`clear_faults`. A fault for a path takes
        precedence over a global one.
        """
        if mode not in FAULTS:
            raise ValueError(f"fault mode must be one of {FAULTS}, not {mode!r}")
        if times is not None and times < 1:
            raise ValueError("times must be at least 1 (or None)")
        with self._lock:
            self._faults[path] = _Fault(mode, times)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take_fault(self, path: str) -> str | None:
        with self._lock:
            candidates = [path] + [p for p in self._faults if p and p.endswith("/") and path.startswith(p)]
            candidates.append(None)
            for key in candidates:
                fault = self._faults.get(key)
                if fault is None:
                    continue
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        del self._faults[key]
                return fault.mode
            return None

    # -- inspecting the log ----------------------------------------------------------------

    def requests_since(self, mark: int) -> list[Request]:
        """Requests logged after ``mark`` (a previous ``len(server.log)``)."""
        return self.log[mark:]

    def _record(self, request: Request) -> None:
        with self._lock:
            self.log.append(request)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    # Keep-alive connections a client never closes must not hold up stop().
    block_on_close = False
    owner: FileServer

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """End every open connection: a stopped server must not answer on kept-alive ones."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ebooklet-test-fileserver"
    # Headers and body go out as separate writes; without this each answer waits ~40 ms
    # for a delayed ACK.
    disable_nagle_algorithm = True
    # A safety net: a client that goes silent cannot keep a handler thread forever.
    timeout = 30
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass  # requests go to FileServer.log, not stderr

    def do_GET(self) -> None:
        self._serve(body=True)

    def do_HEAD(self) -> None:
        self._serve(body=False)

    # -- answering -------------------------------------------------------------------------

    def _serve(self, body: bool) -> None:
        owner = self.server.owner
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        range_header = self.headers.get("Range")
        inm = self.headers.get("If-None-Match")

        def record(status: int, fault: str | None = None) -> None:
            owner._record(Request(self.command, path, status, range_header, inm, fault))

        for prefix, target in owner.redirects.items():
            if path.startswith(prefix):
                record(302)
                self._send_simple(302, body, {"Location": target + path[len(prefix):]})
                return
        fault = owner._take_fault(path)
        if fault in ("403", "404", "500"):
            status = int(fault)
            record(status, fault)
            self._send_simple(status, body)
            return
        data = self._read(owner.root, path)
        if data is None:
            record(404)
            self._send_simple(404, body)
            return
        etag = '"' + hashlib.blake2b(data, digest_size=16).hexdigest() + '"'
        if inm is not None and _etag_matches(inm, etag):
            record(304)
            self.send_response(304)
            self.send_header("ETag", etag)
            self.end_headers()
            return
        status, start, end = 200, 0, len(data)
        if range_header is not None:
            parsed = _parse_range(range_header, len(data))
            if parsed == "unsatisfiable":
                record(416)
                self._send_simple(416, body, {"Content-Range": f"bytes */{len(data)}"})
                return
            if parsed is not None:
                status, (start, end) = 206, parsed
        payload = data[start:end]
        record(status, fault)
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("ETag", etag)
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
        self.end_headers()
        if not body:
            return
        if fault in ("truncate", "drop"):
            self.wfile.write(payload[: len(payload) // 2])
            self.wfile.flush()
            self.close_connection = True
            if fault == "drop":
                # SO_LINGER 0: close() sends a reset instead of a clean end of stream.
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
            else:
                self.connection.shutdown(socket.SHUT_WR)
            return
        self.wfile.write(payload)

    @staticmethod
    def _read(root: pathlib.Path, path: str) -> bytes | None:
        target = os.path.normpath(os.path.join(root, path.lstrip("/")))
        if not target.startswith(os.path.join(str(root), "")):
            return None
        try:
            with open(target, "rb") as f:
                return f.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    def _send_simple(self, status: int, body: bool, headers: dict[str, str] | None = None) -> None:
        message = f"{status} {self.responses.get(status, ('',))[0]}\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(message)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if body:
            self.wfile.write(message)


def _etag_matches(header: str, etag: str) -> bool:
    """If-None-Match uses the weak comparison: ``W/`` prefixes are ignored; ``*`` matches."""
    for candidate in header.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == etag:
            return True
    return False


def _parse_range(header: str, size: int) -> tuple[int, int] | str | None:
    """(start, end) of a single byte range, "unsatisfiable", or None to serve everything.

    Malformed and multi-range headers are ignored (RFC 9110 allows that); a range starting at
    or past the end of the file is unsatisfiable.
    """
    match = _RANGE.match(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # the last n bytes
        n = int(last)
        if n == 0:
            return "unsatisfiable"
        return max(size - n, 0), size
    start = int(first)
    end = size if not last else min(int(last) + 1, size)
    if last and int(last) < start:
        return None
    if start >= size:
        return "unsatisfiable"
    return start, end
