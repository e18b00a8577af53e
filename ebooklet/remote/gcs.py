"""The Google Cloud Storage transport: the only module that imports google-auth.

Objects are read and written through GCS's JSON API over urllib3 (the same pools, retries
and error translation as the S3 and HTTP transports); google-auth supplies and refreshes the
OAuth token. A version's "ETag" here is its *generation*, the number GCS's preconditions
compare: ``"create"`` sends ``ifGenerationMatch=0``, ``Update(generation)`` sends
``ifGenerationMatch=generation``, and GCS refuses a losing write with 412.

Uploads are single-request multipart uploads: GCS applies their preconditions atomically
(and fake-gcs-server, the emulator the suite runs, enforces them on multipart uploads but
not on plain media uploads). An object of ``settings.multipart_from`` bytes or more (a
segment holding a large value) is sent as pieces ``<key>.piece-<token>-<n>``, several at a
time, composed into the object by one request that carries the condition, then deleted
(GCS has no parallel upload of one object; composing is its way). Pieces a killed push left
are garbage by their name (``format.PIECE_NAME_RE``).
"""

from __future__ import annotations

import concurrent.futures
import datetime
import json
import logging
import math
import urllib.parse
import uuid
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from typing import Any

import urllib3

from ..errors import (
    PreconditionFailed,
    RemoteAccessError,
    RemoteError,
    RemoteFormatError,
    RemoteNotFoundError,
    RemoteUnavailableError,
)
from ..settings import settings
from .base import Blob, ObjectStat, PutMode, Transport, Update
from .http import RETRY_STATUSES, check_range, make_pool, range_header, read_body, send
from .multipart import PART_THREADS

#: Where GCS's JSON API lives, unless an endpoint (or ``STORAGE_EMULATOR_HOST``, see
#: :class:`~ebooklet.remote.clouds.GCSConnection`) says otherwise.
GCS_ENDPOINT = "https://storage.googleapis.com"
#: Sources one compose request may name.
MAX_COMPOSE = 32

logger = logging.getLogger(__name__)


def _piece_size(size: int) -> int:
    """The size of the pieces of an object of ``size`` bytes (compose takes at most 32)."""
    return max(settings.multipart_part, -(-size // MAX_COMPOSE))
#: The OAuth scope of every request: objects are read, written and deleted.
SCOPE = "https://www.googleapis.com/auth/devstorage.read_write"
#: One batch request carries at most 100 calls.
BATCH_LIMIT = 100


def find_credentials(service_account_file: str | None = None) -> Any:
    """Credentials by Google's standard chain.

    A service-account file when one is given; else application default credentials, which
    google-auth looks for in ``GOOGLE_APPLICATION_CREDENTIALS``, gcloud's
    ``application_default_credentials.json``, then the metadata server of a Google Cloud VM.

    Raises
    ------
    RemoteAccessError
        No credentials were found, or the file could not be read; the message says where
        ebooklet looked and what to do.
    """
    import google.auth
    import google.auth.exceptions
    from google.oauth2 import service_account

    try:
        if service_account_file:
            return service_account.Credentials.from_service_account_file(service_account_file, scopes=[SCOPE])
        credentials, _project = google.auth.default(scopes=[SCOPE])
        return credentials
    except (google.auth.exceptions.GoogleAuthError, OSError, ValueError) as exc:
        raise RemoteAccessError(
            f"no Google Cloud credentials ({exc}). Set GOOGLE_APPLICATION_CREDENTIALS to a "
            "service-account key file, run 'gcloud auth application-default login', or give "
            "the key file as service_account_file; an emulator is reached through "
            "STORAGE_EMULATOR_HOST without credentials"
        ) from exc


def _rfc3339(value: Any) -> float:
    """Seconds since the epoch from GCS's ``updated`` field (the store's clock), in whole
    seconds: the ``Date`` it is compared with has no fraction, so an object written in the
    current second must not look younger than now."""
    return float(math.floor(datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()))


def _http_date(value: str | None, what: str) -> float:
    """Seconds since the epoch from an HTTP Date header (the store's clock)."""
    try:
        return parsedate_to_datetime(value or "").timestamp()
    except (TypeError, ValueError):
        raise RemoteFormatError(f"{what}: the server's Date header {value!r} is not a date") from None


class GCSTransport(Transport):
    """Objects in one Google Cloud Storage bucket.

    Parameters
    ----------
    bucket : str
    credentials : google.auth.credentials.Credentials, optional
        What signs requests (see :func:`find_credentials`); None sends them anonymously (an
        emulator, or a bucket that lets anyone write).
    endpoint_url : str, optional
        Another endpoint than Google's (an emulator, a private endpoint).
    max_connections, retries, timeout
        Connection pool size, retries of transient failures, and the read timeout in seconds.
    """

    delete_batch_size = BATCH_LIMIT
    knows_ages = True

    def __init__(
        self,
        bucket: str,
        credentials: Any = None,
        endpoint_url: str | None = None,
        max_connections: int = 10,
        retries: int = 3,
        timeout: float = 60.0,
    ) -> None:
        self.bucket = bucket
        self.endpoint_url = (endpoint_url or GCS_ENDPOINT).rstrip("/")
        self.description = f"gs://{bucket} at {self.endpoint_url}"
        self._retries = retries
        pool = make_pool(max_connections, retries, timeout)
        # Compared (never shown) to decide whether a server-side copy is possible.
        self._credentials = credentials
        if credentials is None:
            self._http: Any = pool
        else:
            from google.auth.transport.urllib3 import AuthorizedHttp

            self._http = AuthorizedHttp(credentials, http=pool)
        self._pool = pool

    # --- requests ---------------------------------------------------------------------------

    def _object_url(self, key: str, **query: str) -> str:
        name = urllib.parse.quote(key, safe="")
        return self._url(f"/storage/v1/b/{urllib.parse.quote(self.bucket, safe='')}/o/{name}", **query)

    def _url(self, path: str, **query: str) -> str:
        return self.endpoint_url + path + ("?" + urllib.parse.urlencode(query) if query else "")

    def _request(
        self, method: str, url: str, what: str, *, body: bytes | None = None,
        headers: dict[str, str] | None = None, retry_writes: bool = False,
    ) -> urllib3.BaseHTTPResponse:
        kwargs: dict[str, Any] = {"body": body, "headers": headers or {}, "preload_content": True}
        if retry_writes:
            # A POST is not retried by default; an upload refused with a transient status wrote
            # nothing, so it may be sent again (conditions included: a create that landed and
            # is sent again loses to itself, which the commit's recovery already handles).
            kwargs["retries"] = urllib3.Retry(
                total=self._retries, backoff_factor=0.2, status_forcelist=RETRY_STATUSES,
                allowed_methods=None, raise_on_status=False,
            )
        return send(lambda: self._http.urlopen(method, url, **kwargs), what)

    def _fail(
        self, resp: urllib3.BaseHTTPResponse, what: str, key: str, bucket_level: bool = False
    ) -> RemoteError:
        """The ebooklet error for a failed answer (``bucket_level``: a 404 can only mean the
        bucket, as for uploads and listings)."""
        status = resp.status
        message = _error_message(resp)
        if status == 404:
            if bucket_level or "bucket" in message.lower():
                return RemoteNotFoundError.no_bucket(
                    f"{what}: the bucket does not exist ({message}). Check the bucket name and "
                    "the endpoint."
                )
            return RemoteNotFoundError(f"{what}: {key!r} does not exist")
        if status in (401, 403):
            return RemoteAccessError(
                f"{what}: access denied to {key!r} ({message}). Check the credentials "
                "(GOOGLE_APPLICATION_CREDENTIALS or the service-account file) and that they "
                "may read and write objects in this bucket."
            )
        if status == 416:
            return RemoteFormatError(f"{what}: {key!r} is shorter than its index says (HTTP 416)")
        if status >= 500 or status == 429:
            return RemoteUnavailableError(
                f"{what}: the server answered HTTP {status} ({message}) after retries. Try again "
                "later; nothing was changed."
            )
        return RemoteError(f"{what}: unexpected HTTP {status} for {key!r} ({message})")

    # --- reads ------------------------------------------------------------------------------

    def _download(
        self, key: str, headers: dict[str, str], if_none_match: str | None
    ) -> urllib3.BaseHTTPResponse | None:
        query = {"alt": "media"}
        if if_none_match and if_none_match.isdigit():
            query["ifGenerationNotMatch"] = if_none_match
        what = f"GET gs://{self.bucket}/{key}"
        # Stored bytes as they are: no decompressive transcoding of gzip-encoded objects.
        headers = {"Accept-Encoding": "identity", **headers}
        resp = self._request("GET", self._object_url(key, **query), what, headers=headers)
        if resp.status == 304:
            return None
        if resp.status not in (200, 206, 416):
            raise self._fail(resp, what, key)
        # An emulator may ignore ifGenerationNotMatch; the answer's generation still tells.
        if if_none_match and resp.headers.get("X-Goog-Generation") == if_none_match:
            return None
        return resp

    def get(self, key: str, if_none_match: str | None = None) -> Blob | None:
        resp = self._download(key, {}, if_none_match)
        if resp is None:
            return None
        if resp.status == 416:
            raise self._fail(resp, f"GET gs://{self.bucket}/{key}", key)
        return Blob(read_body(resp, f"GET gs://{self.bucket}/{key}"), _generation(resp))

    def get_start(self, key: str, length: int, if_none_match: str | None = None) -> Blob | None:
        resp = self._download(key, {"Range": range_header(0, length)}, if_none_match)
        if resp is None:
            return None
        generation = resp.headers.get("X-Goog-Generation", "")
        if resp.status == 416:  # only an empty object cannot serve a range starting at 0
            return Blob(b"", generation, 0)
        data = read_body(resp, f"GET gs://{self.bucket}/{key}")
        size = len(data)
        if resp.status == 206:
            total = resp.headers.get("Content-Range", "").rpartition("/")[2]
            size = int(total) if total.isdigit() else max(size, length + 1)
        return Blob(data[:length], generation, size)

    def get_range(self, key: str, start: int, length: int) -> bytes:
        if length == 0:
            return b""
        what = f"GET gs://{self.bucket}/{key}"
        resp = self._download(key, {"Range": range_header(start, length)}, None)
        assert resp is not None  # no if_none_match was sent
        if resp.status == 416:
            raise self._fail(resp, what, key)
        return check_range(read_body(resp, what), length, what, key)

    # --- writes -----------------------------------------------------------------------------

    def put(self, key: str, data: bytes, mode: PutMode = "overwrite") -> str:
        if not isinstance(mode, Update) and len(data) >= settings.multipart_from:
            return self._put_pieces(key, data, mode)
        return self._put_one(key, data, mode)

    def _put_one(self, key: str, data: bytes | memoryview, mode: PutMode) -> str:
        query = {"uploadType": "multipart"}
        if mode == "create":
            query["ifGenerationMatch"] = "0"
        elif isinstance(mode, Update):
            if not mode.etag.isdigit():  # not a generation of this store: it cannot match
                raise PreconditionFailed(key, exists=None)
            query["ifGenerationMatch"] = mode.etag
        boundary = uuid.uuid4().hex
        metadata = json.dumps({"name": key, "contentType": "application/octet-stream"}).encode()
        body = b"".join([
            f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n".encode(), metadata,
            f"\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n".encode(), bytes(data),
            f"\r\n--{boundary}--\r\n".encode(),
        ])
        bucket = urllib.parse.quote(self.bucket, safe="")
        url = self._url(f"/upload/storage/v1/b/{bucket}/o", **query)
        what = f"PUT gs://{self.bucket}/{key}"
        headers = {"Content-Type": f"multipart/related; boundary={boundary}"}
        resp = self._request("POST", url, what, body=body, headers=headers, retry_writes=True)
        if resp.status == 412:
            raise PreconditionFailed(key, exists=True if mode == "create" else None)
        if resp.status >= 300:
            raise self._fail(resp, what, key, bucket_level=True)
        try:
            generation = str(json.loads(resp.data)["generation"])
        except (ValueError, KeyError, TypeError):
            raise RemoteError(f"{what}: the server's answer has no generation") from None
        return generation

    def put_requests(self, size: int, mode: PutMode = "overwrite") -> int:
        if isinstance(mode, Update) or size < settings.multipart_from:
            return 1
        return -(-size // _piece_size(size)) + 2  # the pieces, the compose, their delete

    def _put_pieces(self, key: str, data: bytes | memoryview, mode: PutMode) -> str:
        view = memoryview(data).cast("B")
        size = _piece_size(len(view))
        token = uuid.uuid4().hex[:8]
        pieces = [(f"{key}.piece-{token}-{n}", start) for n, start in enumerate(range(0, len(view), size))]
        try:
            with concurrent.futures.ThreadPoolExecutor(
                min(PART_THREADS, len(pieces)), thread_name_prefix="ebooklet-piece"
            ) as pool:
                def send_piece(piece: tuple[str, int]) -> str:
                    return self._put_one(piece[0], view[piece[1] : piece[1] + size], "create")

                list(pool.map(send_piece, pieces))
            return self._compose(key, [name for name, _ in pieces], mode)
        finally:
            try:
                self.delete([name for name, _ in pieces])
            except RemoteError as exc:  # left to garbage collection, by their names
                logger.warning("could not delete the pieces of gs://%s/%s: %s", self.bucket, key, exc)

    def _compose(self, key: str, sources: list[str], mode: PutMode) -> str:
        query = {"ifGenerationMatch": "0"} if mode == "create" else {}
        url = self._url(self._object_url(key)[len(self.endpoint_url) :] + "/compose", **query)
        body = json.dumps({
            "sourceObjects": [{"name": name} for name in sources],
            "destination": {"contentType": "application/octet-stream"},
        }).encode()
        what = f"composing gs://{self.bucket}/{key}"
        resp = self._request("POST", url, what, body=body, headers={"Content-Type": "application/json"},
                             retry_writes=True)
        if resp.status == 412:
            raise PreconditionFailed(key, exists=True if mode == "create" else None)
        if resp.status >= 300:
            raise self._fail(resp, what, key)
        try:
            return str(json.loads(resp.data)["generation"])
        except (ValueError, KeyError, TypeError):
            raise RemoteError(f"{what}: the server's answer has no generation") from None

    def delete(self, keys: list[str]) -> None:
        for i in range(0, len(keys), self.delete_batch_size):
            batch = keys[i : i + self.delete_batch_size]
            if len(batch) == 1:
                self._delete_one(batch[0])
            else:
                self._delete_batch(batch)

    def _delete_one(self, key: str) -> None:
        what = f"DELETE gs://{self.bucket}/{key}"
        resp = self._request("DELETE", self._object_url(key), what)
        if resp.status == 404 and "bucket" not in _error_message(resp).lower():
            return
        if resp.status >= 300:
            raise self._fail(resp, what, key)

    def _delete_batch(self, keys: list[str]) -> None:
        """One batch request (GCS's JSON batch endpoint) deleting up to 100 objects."""
        boundary = uuid.uuid4().hex
        bucket = urllib.parse.quote(self.bucket, safe="")
        parts = []
        for n, key in enumerate(keys):
            path = f"/storage/v1/b/{bucket}/o/{urllib.parse.quote(key, safe='')}"
            parts.append(
                f"--{boundary}\r\nContent-Type: application/http\r\nContent-ID: <{n}>\r\n\r\n"
                f"DELETE {path} HTTP/1.1\r\n\r\n"
            )
        body = ("\r\n".join(parts) + f"\r\n--{boundary}--\r\n").encode()
        what = f"deleting {len(keys)} objects from gs://{self.bucket}"
        resp = self._request(
            "POST", self._url("/batch/storage/v1"), what, body=body,
            headers={"Content-Type": f"multipart/mixed; boundary={boundary}"}, retry_writes=True,
        )
        if resp.status >= 300:
            raise self._fail(resp, what, keys[0])
        for status, message in _batch_statuses(resp):
            if status < 300 or (status == 404 and "bucket" not in message.lower()):
                continue  # deleted, or absent already: deletes are idempotent
            body = json.dumps({"error": {"message": message}}).encode()
            fake = urllib3.HTTPResponse(body=body, status=status)
            raise self._fail(fake, what, keys[0])

    def list_sizes(self, prefix: str) -> Iterator[tuple[str, int]]:
        for stat in self.list_stats(prefix):
            yield stat.key, stat.size

    def list_stats(self, prefix: str) -> Iterator[ObjectStat]:
        bucket = urllib.parse.quote(self.bucket, safe="")
        query = {"prefix": prefix, "fields": "items(name,size,updated),nextPageToken"}
        what = f"listing gs://{self.bucket}/{prefix}"
        while True:
            resp = self._request("GET", self._url(f"/storage/v1/b/{bucket}/o", **query), what)
            if resp.status >= 300:
                raise self._fail(resp, what, prefix, bucket_level=True)
            try:
                page = json.loads(resp.data)
                items = [
                    ObjectStat(str(item["name"]), int(item.get("size") or 0), _rfc3339(item["updated"]))
                    for item in page.get("items", [])
                ]
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise RemoteError(f"{what}: the server's answer is not a listing ({exc})") from None
            yield from items
            token = page.get("nextPageToken")
            if not token:
                return
            query["pageToken"] = str(token)

    def stat(self, key: str) -> ObjectStat:
        bucket, name = (urllib.parse.quote(v, safe="") for v in (self.bucket, key))
        what = f"reading the metadata of gs://{self.bucket}/{key}"
        url = self._url(f"/storage/v1/b/{bucket}/o/{name}", fields="size,updated")
        resp = self._request("GET", url, what)
        if resp.status >= 300:
            raise self._fail(resp, what, key)
        try:
            meta = json.loads(resp.data)
            modified, size = _rfc3339(meta["updated"]), int(meta.get("size") or 0)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise RemoteError(f"{what}: the server's answer is not an object's metadata ({exc})") from None
        return ObjectStat(key, size, modified, _http_date(resp.headers.get("Date"), what))

    def store_time(self) -> float:
        # Any answer carries the server's Date: the bucket's metadata is a small one.
        bucket = urllib.parse.quote(self.bucket, safe="")
        what = f"reading the clock of gs://{self.bucket}"
        resp = self._request("GET", self._url(f"/storage/v1/b/{bucket}", fields="name"), what)
        if resp.status >= 300:
            raise self._fail(resp, what, "", bucket_level=True)
        return _http_date(resp.headers.get("Date"), what)

    def copy(self, key: str, target: Transport, target_key: str) -> bool:
        """A server-side rewrite when ``target`` is a bucket on the same endpoint reached with
        the same credentials object (or both anonymously)."""
        if not (
            isinstance(target, GCSTransport)
            and target.endpoint_url == self.endpoint_url
            and target._credentials is self._credentials
        ):
            return False
        source = urllib.parse.quote(key, safe="")
        bucket, dest = (urllib.parse.quote(b, safe="") for b in (self.bucket, target.bucket))
        name = urllib.parse.quote(target_key, safe="")
        url = self._url(f"/storage/v1/b/{bucket}/o/{source}/rewriteTo/b/{dest}/o/{name}")
        what = f"copying gs://{self.bucket}/{key} to gs://{target.bucket}/{target_key}"
        while True:
            resp = self._request("POST", url, what, retry_writes=True)
            if resp.status >= 300:
                raise self._fail(resp, what, key)
            answer = json.loads(resp.data)
            if answer.get("done", True):
                return True
            # A large object across locations is rewritten in steps, each naming the next.
            url = self._url(url[len(self.endpoint_url) :].partition("?")[0],
                            rewriteToken=str(answer["rewriteToken"]))

    def close(self) -> None:
        self._pool.clear()


def _generation(resp: urllib3.BaseHTTPResponse) -> str:
    generation = resp.headers.get("X-Goog-Generation", "")
    if not generation:
        raise RemoteError("the answer has no X-Goog-Generation header; is this Google Cloud Storage?")
    return generation


def _error_message(resp: urllib3.BaseHTTPResponse) -> str:
    """GCS's JSON error message, else the start of the body."""
    raw = (resp.data or b"")[:2000]
    try:
        return str(json.loads(raw)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return raw.decode("utf-8", "replace").strip() or f"HTTP {resp.status}"


def _batch_statuses(resp: urllib3.BaseHTTPResponse) -> Iterator[tuple[int, str]]:
    """The status and error message of each call in a batch response (multipart/mixed)."""
    content_type = resp.headers.get("Content-Type", "")
    boundary = content_type.partition("boundary=")[2].strip('"')
    if not boundary:
        raise RemoteError("the batch delete's answer is not multipart; nothing is known to be deleted")
    for part in (resp.data or b"").split(b"--" + boundary.encode())[1:]:
        if part.startswith(b"--"):
            return
        _headers, _, inner = part.partition(b"\r\n\r\n")
        status_line, _, rest = inner.partition(b"\r\n")
        fields = status_line.split()
        if len(fields) < 2 or not fields[1].isdigit():
            raise RemoteError(f"the batch delete's answer has a part without a status: {status_line[:100]!r}")
        body = rest.partition(b"\r\n\r\n")[2].strip()
        message = ""
        if int(fields[1]) >= 300:
            message = _error_message(urllib3.HTTPResponse(body=body, status=int(fields[1])))
        yield int(fields[1]), message
