"""Read-only access to a database published at a public ``http(s)://`` URL.

Plain and ranged GETs through urllib3, no credentials. The response handling here is shared
with the S3 transport, which speaks the same HTTP underneath.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable

import urllib3

from ..errors import (
    PreconditionFailed,
    RemoteAccessError,
    RemoteError,
    RemoteFormatError,
    RemoteNotFoundError,
    RemoteUnavailableError,
)
from .base import Blob, ReadOnlyTransport
from .retry import Retry, never_connected

#: Redirects a public URL may answer with; followed only within its scheme and host.
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
MAX_REDIRECTS = 5
#: Transient statuses worth retrying on idempotent requests.
RETRY_STATUSES = (429, 500, 502, 503, 504)


def make_pool(max_connections: int = 10, retries: int = 3, timeout: float = 60.0) -> urllib3.PoolManager:
    """A connection pool that retries dropped connections and transient statuses."""
    retry = Retry(
        total=retries,
        backoff_factor=0.2,
        status_forcelist=RETRY_STATUSES,
        raise_on_status=False,
    )
    return urllib3.PoolManager(
        maxsize=max_connections,
        block=True,
        retries=retry,
        timeout=urllib3.Timeout(connect=min(timeout, 30.0), read=timeout),
    )


def send(request: Callable[[], urllib3.BaseHTTPResponse], what: str) -> urllib3.BaseHTTPResponse:
    """Run ``request`` and translate connection failures into RemoteUnavailableError."""
    try:
        return request()
    except urllib3.exceptions.HTTPError as exc:
        # The body is preloaded inside the request, so a body cut short surfaces here (as the
        # reason of MaxRetryError once urllib3's retries are spent), not in read_body().
        reason = exc.reason if isinstance(exc, urllib3.exceptions.MaxRetryError) else exc
        if isinstance(reason, urllib3.exceptions.ProtocolError):
            raise RemoteUnavailableError(
                f"{what}: the server dropped the connection before its answer was complete "
                f"({reason.args[0] if reason.args else reason}), after retries. Try again; "
                "nothing was changed."
            ) from exc
        unreachable = not_connected(exc, what)
        if unreachable:
            raise unreachable from exc
        raise RemoteUnavailableError(
            f"{what}: the connection failed ({exc.__class__.__name__}: {exc}). "
            "Check that the server is reachable, then try again; nothing was changed."
        ) from exc


def not_connected(exc: BaseException, what: str) -> RemoteUnavailableError | None:
    """The error for a request that could not connect at all, in one plain sentence (urllib3's
    reprs of the pool and the socket stay in the chain, which ``--verbose`` shows); None when
    ``exc`` is another failure."""
    reason = exc.reason if isinstance(exc, urllib3.exceptions.MaxRetryError) else exc
    if not never_connected(reason):
        return None
    conn = getattr(reason, "conn", None)
    host = f"{conn.host}:{conn.port}" if conn is not None else "the server"
    return RemoteUnavailableError(
        f"{what}: could not connect to {host} ({_why(reason)}). Check that the server is running "
        "and that the endpoint is right, then try again; nothing was changed."
    )


def _why(error: BaseException) -> str:
    """The operating system's words for a connection that could not be made."""
    if isinstance(error, urllib3.exceptions.NameResolutionError):
        return "its name does not resolve"
    cause = error.__cause__ or error.__context__
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror.lower()
    return "no connection could be made"


def check_status(resp: urllib3.BaseHTTPResponse, what: str, key: str, anonymous: bool = False) -> None:
    """Raise the ebooklet error matching a non-success HTTP status (``anonymous``: for a
    request made without credentials, whose advice cannot be about them)."""
    status = resp.status
    if status < 300 or status == 304:
        return
    detail = _error_detail(resp)
    if status == 404:
        if "NoSuchBucket" in detail:
            raise RemoteNotFoundError.no_bucket(
                f"{what}: the bucket does not exist{detail}. Check the bucket name and the endpoint."
            )
        raise RemoteNotFoundError(f"{what}: {key!r} does not exist{detail}")
    if status in (401, 403) and anonymous:
        raise RemoteAccessError(
            f"{what}: access denied to {key!r}{detail}. A public URL is read without credentials, so "
            "the bucket (or the server in front of it) must allow anonymous reads: see 'Public reads' "
            "in docs/s3.rst. With credentials, read it as s3://BUCKET/KEY instead."
        )
    if status in (401, 403):
        raise RemoteAccessError(
            f"{what}: access denied to {key!r}{detail}. Check the credentials (access_key_id, "
            "access_key or the AWS_* environment variables) and that they may use this bucket; "
            "for a public URL, check that the bucket allows anonymous reads."
        )
    if status in (409, 412):
        raise PreconditionFailed(key)
    if status == 416:
        raise RemoteFormatError(f"{what}: {key!r} is shorter than its index says (HTTP 416)")
    if status == 501:
        raise RemoteError(f"{what}: the server does not implement this request{detail}")
    if status >= 500 or status == 429:
        if detail == f" (HTTP {status})":
            detail = ""  # the status is in the message already
        raise RemoteUnavailableError(
            f"{what}: the server answered HTTP {status}{detail} after retries. Try again later; "
            "nothing was changed."
        )
    raise RemoteError(f"{what}: unexpected HTTP {status} for {key!r}{detail}")


def _error_detail(resp: urllib3.BaseHTTPResponse) -> str:
    body = resp.data[:2000] if resp.data else b""
    text = body.decode("utf-8", "replace")
    code = _xml_field(text, "Code")
    message = _xml_field(text, "Message")
    if code or message:
        return f" ({code}: {message})" if message else f" ({code})"
    return f" (HTTP {resp.status})"


def _xml_field(text: str, name: str) -> str:
    start = text.find(f"<{name}>")
    end = text.find(f"</{name}>")
    if start < 0 or end < start:
        return ""
    return text[start + len(name) + 2 : end]


def read_body(resp: urllib3.BaseHTTPResponse, what: str) -> bytes:
    """The whole body; a body cut short by the server becomes RemoteUnavailableError."""
    try:
        return resp.data
    except urllib3.exceptions.HTTPError as exc:
        raise RemoteUnavailableError(
            f"{what}: the server dropped the connection mid-body ({exc}). Try again."
        ) from exc


def range_header(start: int, length: int) -> str:
    return f"bytes={start}-{start + length - 1}"


def start_blob(resp: urllib3.BaseHTTPResponse, length: int, what: str) -> Blob:
    """The answer to a GET with ``Range: bytes=0-(length-1)``: the bytes (cut to ``length``, in
    case the server ignored the range), the ETag and the whole size (from ``Content-Range``).
    A 416 means the object is empty (a range starting at 0 is unsatisfiable only then)."""
    etag = resp.headers.get("ETag", "")
    if resp.status == 416:
        return Blob(b"", etag, 0)
    data = read_body(resp, what)
    size = len(data)
    if resp.status == 206:
        total = resp.headers.get("Content-Range", "").rpartition("/")[2]
        size = int(total) if total.isdigit() else max(size, length + 1)
    return Blob(data[:length], etag, size)


def check_range(data: bytes, length: int, what: str, key: str) -> bytes:
    if len(data) != length:
        raise RemoteFormatError(
            f"{what}: {key!r} returned {len(data)} bytes where {length} were expected; the object "
            "is truncated or the server ignored the Range header"
        )
    return data


class HttpTransport(ReadOnlyTransport):
    """Objects read by plain GETs under a public base URL.

    Parameters
    ----------
    base_url : str
        The URL that object keys are relative to.
    pool : urllib3.PoolManager, optional
        The connection pool (by default :func:`make_pool`'s).
    """

    def __init__(self, base_url: str, pool: urllib3.PoolManager | None = None) -> None:
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.description = f"public URL {self.base_url}"
        self._pool = pool or make_pool()

    def _url(self, key: str) -> str:
        return urllib.parse.urljoin(self.base_url, urllib.parse.quote(key))

    def _get(self, key: str, headers: dict[str, str]) -> tuple[urllib3.BaseHTTPResponse, str]:
        """GET ``key``, following redirects only within the same scheme and host: a redirect
        elsewhere (another host, or https to http) would hand the reader to whoever controls
        that host, so it is refused."""
        url = self._url(key)
        what = f"GET {url}"
        for _ in range(MAX_REDIRECTS + 1):
            resp = send(lambda u=url: self._pool.request("GET", u, headers=headers, redirect=False), what)
            if resp.status not in REDIRECT_STATUSES:
                return resp, what
            target = urllib.parse.urljoin(url, resp.headers.get("Location", ""))
            if urllib.parse.urlsplit(target)[:2] != urllib.parse.urlsplit(url)[:2]:
                raise RemoteAccessError(
                    f"{what}: the server redirects to {target!r}, another host or scheme; ebooklet "
                    "follows redirects only within the same one. Use the URL the database is at"
                )
            url = target
        raise RemoteError(f"{what}: more than {MAX_REDIRECTS} redirects")

    def get(self, key: str, if_none_match: str | None = None) -> Blob | None:
        headers = {"If-None-Match": if_none_match} if if_none_match else {}
        resp, what = self._get(key, headers)
        if resp.status == 304:
            return None
        check_status(resp, what, key, anonymous=True)
        data = read_body(resp, what)
        return Blob(data, resp.headers.get("ETag", ""))

    def get_start(self, key: str, length: int, if_none_match: str | None = None) -> Blob | None:
        headers = {"Range": range_header(0, length)}
        if if_none_match:
            headers["If-None-Match"] = if_none_match
        resp, what = self._get(key, headers)
        if resp.status == 304:
            return None
        if resp.status != 416:
            check_status(resp, what, key, anonymous=True)
        return start_blob(resp, length, what)

    def get_range(self, key: str, start: int, length: int) -> bytes:
        if length == 0:
            return b""
        resp, what = self._get(key, {"Range": range_header(start, length)})
        check_status(resp, what, key, anonymous=True)
        return check_range(read_body(resp, what), length, what, key)

    def close(self) -> None:
        self._pool.clear()
