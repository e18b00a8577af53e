"""The S3 transport: the only module that talks to s3func.

Requests are signed by s3func's ``S3Session.request``; conditional writes send ``If-Match`` /
``If-None-Match: *`` headers themselves because ``put_object`` has no parameters for them.
Some S3-compatible stores ignore those headers, so whether a store honours them is probed
once per endpoint and bucket (see :meth:`S3Transport.supports_conditional_writes`).

s3func signs with one fixed key pair and knows nothing of session tokens. Temporary
credentials (a session token, or credentials that botocore refreshes) are signed by
:func:`signed_session`; it and :meth:`S3Transport.fallback_lock` are the only code that
reaches into s3func's internals.
"""

from __future__ import annotations

import logging
import threading
import urllib.parse
import uuid
import warnings
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar

import s3func
import s3func.locking as s3func_locking
import urllib3
from s3func.response import S3ListError
from s3func.signer import SigV4Auth

from ..errors import (
    PreconditionFailed,
    RemoteAccessError,
    RemoteError,
    RemoteFormatError,
    RemoteNotFoundError,
    RemoteUnavailableError,
)
from ..phases import timed
from .base import Blob, ObjectStat, PutMode, Transport, Update, Upload
from .credentials import Credentials
from .http import check_range, check_status, not_connected, range_header, read_body, send, start_blob
from .multipart import S3Parts
from .retry import Retry

logger = logging.getLogger(__name__)


def _http_time(value: str | None, header: str, what: str) -> float:
    """Seconds since the epoch from an HTTP date header (the store's clock)."""
    try:
        return parsedate_to_datetime(value or "").timestamp()
    except (TypeError, ValueError):
        raise RemoteFormatError(f"{what}: the server's {header} header {value!r} is not a date") from None


def _never_connected(exc: BaseException) -> bool:
    """Whether a failed request never reached the server (the connection was refused)."""
    cause = exc.__cause__
    reason = cause.reason if isinstance(cause, urllib3.exceptions.MaxRetryError) else cause
    return isinstance(reason, urllib3.exceptions.NewConnectionError)


class _Signer:
    """Signs each request with the credentials as they are at that moment, session token
    included: the token goes in as ``X-Amz-Security-Token`` before signing, so SigV4 covers it
    (every ``x-amz-*`` header is signed)."""

    def __init__(self, credentials: Credentials, region: str) -> None:
        self._credentials = credentials
        self._region = region

    def add_auth(
        self, method: str, url: str, headers: dict[str, str], body: bytes | str | None = None
    ) -> None:
        now = self._credentials.current()
        headers.pop("X-Amz-Security-Token", None)
        if now.session_token:
            headers["X-Amz-Security-Token"] = now.session_token
        SigV4Auth(now.access_key_id, now.secret_access_key, self._region).add_auth(method, url, headers, body)


def signed_session(credentials: Credentials, bucket: str, region: str, **options: Any) -> s3func.S3Session:
    """An s3func session whose every request is signed with ``credentials``.

    Static credentials without a token use s3func's own signer. Otherwise the session's
    signer (s3func's private ``_signer`` attribute, called by ``S3Session.request`` for every
    request) is replaced by one that adds the session token and asks for refreshed
    credentials each time. This is the only place that depends on that attribute: an s3func
    that renames it fails here, loudly, on the first request with temporary credentials.
    ``options`` are passed to ``S3Session``.
    """
    session = s3func.S3Session(
        credentials.access_key_id, credentials.secret_access_key, bucket, region=region, **options
    )
    # s3func's pool retries a refused connection like any other (6 s of backoff before an
    # answer that cannot change): its retry settings are kept, minus that.
    pool = getattr(session, "_session", None)
    retry = pool.connection_pool_kw.get("retries") if isinstance(pool, urllib3.PoolManager) else None
    if isinstance(retry, urllib3.Retry):
        pool.connection_pool_kw["retries"] = Retry.like(retry)
    if credentials.session_token or credentials.refresh is not None:
        if not hasattr(session, "_signer"):
            raise RuntimeError("this s3func version signs requests differently; ebooklet cannot add the "
                               "session token of temporary credentials: pin s3func to a tested version")
        session._signer = _Signer(credentials, region)
    return session


class S3Transport(Transport):
    """Objects in one S3 bucket.

    Parameters
    ----------
    access_key_id, access_key : str
        Credentials; kept for signing only, never shown.
    bucket : str
    endpoint_url : str, optional
        The S3 endpoint of a store other than AWS.
    region : str
        The signing region.
    max_connections, retries, timeout
        Connection pool size, retries of transient failures, and the read timeout in seconds.
    session_token : str, optional
        The session token of temporary credentials, signed into every request.
    credentials : Credentials, optional
        Credentials as :func:`~ebooklet.remote.credentials.resolve_credentials` found them
        (refreshed before each request when they expire); they replace the three above.
    """

    #: DeleteObjects takes at most 1000 keys per request.
    delete_batch_size = 1000
    knows_ages = True

    #: Whether each store, by (endpoint_url, bucket), honours conditional writes: probed once
    #: per process, because a store cannot be asked.
    _conditional_writes: ClassVar[dict[tuple[str | None, str], bool]] = {}
    _probing: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        access_key_id: str,
        access_key: str,
        bucket: str,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        max_connections: int = 10,
        retries: int = 3,
        timeout: float = 60.0,
        *,
        session_token: str | None = None,
        credentials: Credentials | None = None,
    ) -> None:
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.region = region
        where = endpoint_url or f"AWS {region}"
        self.description = f"s3://{bucket} at {where}"
        self._signing = credentials or Credentials(access_key_id, access_key, session_token)
        # Compared (never shown) to decide whether a server-side copy is possible.
        self._credentials = (self._signing.access_key_id, region)
        self._options: dict[str, Any] = {
            "endpoint_url": endpoint_url, "max_attempts": retries, "read_timeout": int(timeout)
        }
        self._session = signed_session(
            self._signing, bucket, region, max_pool_connections=max_connections, stream=False, **self._options
        )
        #: Large objects go up in parts (see :mod:`.multipart`).
        self.parts = S3Parts(self._request, bucket)

    def _request(
        self,
        method: str,
        key: str,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        ok: tuple[int, ...] = (304,),
        query: str = "",
    ) -> urllib3.BaseHTTPResponse:
        url = self._session._object_url(key)
        if query:
            url = f"{url.rstrip('/') if not key else url}?{query}"
        what = f"{method} s3://{self.bucket}/{key}"
        resp = send(
            lambda: self._session.request(
                method, url, headers=dict(headers or {}), body=body, preload_content=True
            ),
            what,
        )
        if resp.status not in ok:
            check_status(resp, what, key)
        return resp

    @timed("S3Transport.get")
    def get(self, key: str, if_none_match: str | None = None) -> Blob | None:
        headers = {"If-None-Match": if_none_match} if if_none_match else {}
        resp = self._request("GET", key, headers)
        if resp.status == 304:
            return None
        return Blob(read_body(resp, f"GET {key}"), resp.headers.get("ETag", ""))

    def get_start(self, key: str, length: int, if_none_match: str | None = None) -> Blob | None:
        headers = {"Range": range_header(0, length)}
        if if_none_match:
            headers["If-None-Match"] = if_none_match
        resp = self._request("GET", key, headers, ok=(304, 416))
        if resp.status == 304:
            return None
        return start_blob(resp, length, f"GET s3://{self.bucket}/{key}")

    @timed("S3Transport.get_range")
    def get_range(self, key: str, start: int, length: int) -> bytes:
        if length == 0:
            return b""
        resp = self._request("GET", key, {"Range": range_header(start, length)})
        what = f"GET s3://{self.bucket}/{key}"
        return check_range(read_body(resp, what), length, what, key)

    @timed("S3Transport.put")
    def put(self, key: str, data: bytes, mode: PutMode = "overwrite") -> str:
        if self.parts.wanted(data, mode):
            return self.parts.put(key, data, mode)
        headers = {"Content-Length": str(len(data))}
        if mode == "create":
            headers["If-None-Match"] = "*"
        elif isinstance(mode, Update):
            headers["If-Match"] = mode.etag
        try:
            resp = self._request("PUT", key, headers, bytes(data))
        except PreconditionFailed:
            raise PreconditionFailed(key, exists=True if mode == "create" else None) from None
        except RemoteNotFoundError:
            # Some servers answer If-Match on a missing object with 404 instead of 412.
            if isinstance(mode, Update):
                raise PreconditionFailed(key, exists=False) from None
            raise
        etag = resp.headers.get("ETag")
        if not etag:
            raise RemoteError(f"PUT s3://{self.bucket}/{key}: the server returned no ETag")
        return etag

    @timed("S3Transport.delete")
    def delete(self, keys: list[str]) -> None:
        for i in range(0, len(keys), self.delete_batch_size):
            batch = keys[i : i + self.delete_batch_size]
            try:
                self._session.delete_objects(keys=batch, purge=False)
            except urllib3.exceptions.HTTPError as exc:
                unreachable = not_connected(exc, f"deleting objects from s3://{self.bucket}")
                if unreachable:
                    raise unreachable from exc
                # s3func reports every failed delete alike; its message carries the S3 code.
                if "NoSuchBucket" in str(exc):
                    raise RemoteNotFoundError.no_bucket(
                        f"deleting objects from s3://{self.bucket}: the bucket does not exist. "
                        "Check the bucket name and the endpoint."
                    ) from exc
                if "AccessDenied" in str(exc) or "403" in str(exc):
                    raise RemoteAccessError(
                        f"deleting objects from s3://{self.bucket} was refused ({exc}). Check the "
                        "credentials, and that they allow s3:DeleteObject on this database's keys"
                    ) from exc
                raise RemoteUnavailableError(
                    f"deleting {len(batch)} objects from s3://{self.bucket} failed: {exc}. "
                    "Run the operation again; deletes are idempotent."
                ) from exc

    def list_sizes(self, prefix: str) -> Iterator[tuple[str, int]]:
        for info in self.list_stats(prefix):
            yield info.key, info.size

    def list_stats(self, prefix: str) -> Iterator[ObjectStat]:
        try:
            for record in self._session.list_objects(prefix=prefix).iter_objects():
                stamp = record.get("upload_timestamp")
                if stamp is None:
                    raise RemoteFormatError(
                        f"listing s3://{self.bucket}/{prefix}: the store gave no LastModified for "
                        f"{record['key']!r}, so the object's age cannot be judged"
                    )
                yield ObjectStat(record["key"], int(record.get("content_length") or 0), stamp.timestamp())
        except S3ListError as exc:
            what = f"listing s3://{self.bucket}/{prefix}"
            if exc.status == 404:  # a listing finds nothing to miss but the bucket
                raise RemoteNotFoundError.no_bucket(
                    f"{what}: the bucket does not exist. Check the bucket name and the endpoint."
                ) from exc
            # A refused listing (bad credentials) gets the same error as a GET.
            if exc.status is not None:
                check_status(urllib3.HTTPResponse(status=exc.status, body=b""), what, prefix)
            raise RemoteUnavailableError(f"listing s3://{self.bucket}/{prefix} failed: {exc}") from exc
        except urllib3.exceptions.HTTPError as exc:
            what = f"listing s3://{self.bucket}/{prefix}"
            raise not_connected(exc, what) or RemoteUnavailableError(f"{what} failed: {exc}") from exc

    def put_requests(self, size: int, mode: PutMode = "overwrite") -> int:
        return self.parts.requests(size, mode)

    def uploads(self, prefix: str) -> Iterator[Upload]:
        return self.parts.uploads(prefix)

    def abort_upload(self, upload: Upload) -> None:
        self.parts.abort(upload)

    def stat(self, key: str) -> ObjectStat:
        resp = self._request("HEAD", key)
        what = f"HEAD s3://{self.bucket}/{key}"
        size = resp.headers.get("Content-Length", "")
        return ObjectStat(
            key,
            int(size) if size.isdigit() else 0,
            _http_time(resp.headers.get("Last-Modified"), "Last-Modified", what),
            _http_time(resp.headers.get("Date"), "Date", what),
        )

    def store_time(self) -> float:
        # Any answer carries the server's Date; a HEAD of a key that need not exist is the
        # cheapest request that gets one.
        key = f"ebooklet-clock-{uuid.uuid4().hex}"
        resp = self._request("HEAD", key, ok=(200, 403, 404))
        return _http_time(resp.headers.get("Date"), "Date", f"HEAD s3://{self.bucket}/{key}")

    def copy(self, key: str, target: Transport, target_key: str) -> bool:
        """Server-side CopyObject when ``target`` is the same endpoint with the same credentials."""
        if not (
            isinstance(target, S3Transport)
            and target.endpoint_url == self.endpoint_url
            and target._credentials == self._credentials
        ):
            return False
        source = f"{self.bucket}/{urllib.parse.quote(key)}"
        resp = target._request("PUT", target_key, {"x-amz-copy-source": source})
        # CopyObject can fail after its 200 status line: the error is then in the body.
        if b"<Error>" in (resp.data or b""):
            raise RemoteError(f"copying s3://{source} failed: {resp.data[:500]!r}")
        return True

    def supports_conditional_writes(self, scratch_prefix: str) -> bool:
        """Whether the store honours ``If-None-Match: *`` and ``If-Match``.

        Found out once per process for each endpoint and bucket, by creating the same test
        object twice under ``scratch_prefix`` and deleting it. A store that ignores the
        conditions is reported once with a RuntimeWarning, since pushes then fall back to
        :meth:`fallback_lock`. A probe that fails (refused credentials, a missing bucket, a
        server that cannot be reached) raises that error and is tried again next time.
        """
        store = (self.endpoint_url, self.bucket)
        with self._probing:
            supported = self._conditional_writes.get(store)
            if supported is None:
                supported = self._probe_conditional_writes(scratch_prefix)
                self._conditional_writes[store] = supported
                if not supported:
                    warnings.warn(
                        f"{self.description} ignores conditional writes; ebooklet falls back to "
                        "s3func's listing-based lock, which is slower and relies on the store "
                        "listing new objects promptly",
                        RuntimeWarning,
                        stacklevel=2,
                    )
        return supported

    @classmethod
    def known_stores(cls) -> dict[tuple[str | None, str], bool]:
        """What this process knows of stores' conditional writes, by (endpoint_url, bucket):
        probed, or told by :meth:`remember_store`."""
        with cls._probing:
            return dict(cls._conditional_writes)

    @classmethod
    def remember_store(cls, endpoint_url: str | None, bucket: str, conditional_writes: bool) -> None:
        """Take the answer of an earlier probe of a store, so that it is not probed again.

        For a caller that keeps answers between processes (the command line keeps them in its
        cache folder, so a push costs the same requests in every process).
        """
        with cls._probing:
            cls._conditional_writes.setdefault((endpoint_url, bucket), conditional_writes)

    def _probe_conditional_writes(self, scratch_prefix: str) -> bool:
        key = f"{scratch_prefix}probe-{uuid.uuid4().hex}"
        written = False  # whether the probe object may exist, and so must be deleted
        try:
            try:
                self.put(key, b"1", "create")
            except RemoteUnavailableError as exc:
                # The write may have landed before the connection failed, unless no
                # connection was ever made (then deleting would only fail the same way).
                written = not _never_connected(exc)
                raise
            written = True
            self.put(key, b"2", "create")
            return False  # the second create overwrote the first
        except PreconditionFailed:
            return True
        except RemoteError as exc:
            if isinstance(exc, (RemoteAccessError, RemoteNotFoundError, RemoteUnavailableError)):
                raise
            return False  # the store rejects the conditional header itself
        finally:
            if written:
                self._discard_probe(key)

    def _discard_probe(self, key: str) -> None:
        # Best effort: a failure here must neither fail the push nor hide the probe's own error.
        try:
            self.delete([key])
        except Exception as exc:  # noqa: BLE001 - a leftover probe object is harmless
            logger.warning(
                "could not delete the probe object s3://%s/%s (%s); it is harmless and is "
                "deleted with the database",
                self.bucket,
                key,
                exc,
            )

    def fallback_lock(self, key: str) -> s3func.S3Lock:
        """s3func's listing-based lock, for stores that ignore conditional writes.

        Its requests are signed like every other (the lock makes its own sessions, through
        the factory given to it, which s3func's locking module accepts in place of a service
        name).
        """
        lock = s3func.S3Lock.__new__(s3func.S3Lock)
        signing, bucket, region = self._signing, self.bucket, self.region

        def session(**kwargs: Any) -> s3func.S3Session:
            kwargs = {k: v for k, v in kwargs.items() if k not in ("access_key_id", "access_key", "bucket")}
            return signed_session(signing, bucket, region, **kwargs)

        s3func_locking.init_lock(
            lock, session, signing.access_key_id, signing.secret_access_key, bucket, key, None, self._options
        )
        return lock

    def close(self) -> None:
        self._session._session.clear()
