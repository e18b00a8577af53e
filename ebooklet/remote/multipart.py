"""Uploads in parts (S3's multipart upload), for objects too large to send well in one request.

One request carries one TCP stream, and on a real network a stream rarely fills the link: a
segment of 100 MB holding one large value would go at the pace of one stream. An object of
``settings.multipart_from`` bytes or more is therefore sent as parts of about
``settings.multipart_part``, :data:`PART_THREADS` at a time, then completed with the condition
a single PUT would carry (``If-None-Match: *`` for a create): the object appears whole when
the completion is applied, never a part of it. If any request fails, the upload is aborted
(best effort) and the error raised, as a single PUT's would be.

An upload whose process died between its start and its completion keeps its parts on the store
(and on the bill) but never becomes an object; garbage collection aborts those older than its
safe age (:meth:`S3Parts.uploads`, :meth:`S3Parts.abort`), and an S3 lifecycle rule
(``AbortIncompleteMultipartUpload``) can do the same on AWS.

The requests go through the S3 transport's signed ``request``; nothing here imports an SDK.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import logging
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator

import urllib3

from ..errors import (
    PreconditionFailed,
    RemoteError,
    RemoteFormatError,
    RemoteNotFoundError,
    RemoteUnavailableError,
)
from ..settings import settings
from .base import PutMode, Update, Upload

logger = logging.getLogger(__name__)

#: S3 takes at most 10,000 parts (larger objects get larger parts), each of 5 MiB at least
#: but the last.
MAX_PARTS = 10_000
MIN_PART = 5 * 1024 * 1024
#: Parts sent at once, per object.
PART_THREADS = 8


#: The S3 transport's signed request: ``(method, key, headers, body, ok=..., query=...)``.
Request = Callable[..., urllib3.BaseHTTPResponse]


def _xml(data: bytes, what: str) -> ET.Element:
    try:
        root = ET.fromstring(data.lstrip())  # S3 may send blanks ahead of a slow answer
    except ET.ParseError as exc:
        raise RemoteFormatError(f"{what}: the store's answer is not XML ({exc})") from None
    for element in root.iter():  # drop the S3 namespace, so that paths read plainly
        element.tag = element.tag.rpartition("}")[2]
    return root


def _text(root: ET.Element, path: str, what: str) -> str:
    found = root.findtext(path)
    if not found:
        raise RemoteFormatError(f"{what}: the store's answer has no {path}")
    return found


def part_ranges(size: int, part_bytes: int) -> list[tuple[int, int]]:
    """The (start, end) of each part of an object of ``size`` bytes."""
    part = max(part_bytes, MIN_PART, -(-size // MAX_PARTS))
    return [(start, min(start + part, size)) for start in range(0, size, part)]


class S3Parts:
    """Multipart uploads to one bucket through ``request`` (the transport's signed request)."""

    def __init__(self, request: Request, bucket: str) -> None:
        self._request = request
        self.bucket = bucket

    def wanted(self, data: bytes | memoryview, mode: PutMode) -> bool:
        """Whether ``data`` goes up in parts (never under an ``Update``: heads are small)."""
        return not isinstance(mode, Update) and len(data) >= settings.multipart_from

    @staticmethod
    def requests(size: int, mode: PutMode) -> int:
        """The requests of a put of ``size`` bytes: one, or the start, the parts, the end."""
        if isinstance(mode, Update) or size < settings.multipart_from:
            return 1
        return 2 + len(part_ranges(size, settings.multipart_part))

    def put(self, key: str, data: bytes | memoryview, mode: PutMode) -> str:
        """Upload ``data`` to ``key`` in parts, completed under ``mode`` (never an ``Update``:
        heads are small). Returns the object's ETag."""
        assert not isinstance(mode, Update)
        what = f"uploading s3://{self.bucket}/{key} in parts"
        upload_id = self._start(key, what)
        try:
            view = memoryview(data).cast("B")
            ranges = part_ranges(len(view), settings.multipart_part)
            with concurrent.futures.ThreadPoolExecutor(
                min(PART_THREADS, len(ranges)), thread_name_prefix="ebooklet-part"
            ) as pool:
                etags = list(pool.map(
                    lambda numbered: self._part(key, upload_id, numbered[0] + 1, view[slice(*numbered[1])]),
                    enumerate(ranges),
                ))
            return self._complete(key, upload_id, etags, mode, what)
        except BaseException:
            self.abort(Upload(key, upload_id, 0.0), quietly=True)
            raise

    def _start(self, key: str, what: str) -> str:
        # A POST is not retried by the connection pool; starting again is harmless (an upload
        # started twice leaves one that nothing completes, which gc aborts).
        for attempt in (1, 2, 3):
            try:
                resp = self._request("POST", key, {}, b"", query="uploads")
            except RemoteUnavailableError:
                if attempt == 3:
                    raise
                continue
            return _text(_xml(resp.data, what), "UploadId", what)
        raise AssertionError("unreachable")

    def _part(self, key: str, upload_id: str, number: int, body: memoryview) -> str:
        query = f"partNumber={number}&uploadId={urllib.parse.quote(upload_id, safe='')}"
        resp = self._request("PUT", key, {"Content-Length": str(len(body))}, bytes(body), query=query)
        etag = resp.headers.get("ETag")
        if not etag:
            raise RemoteError(f"PUT part {number} of s3://{self.bucket}/{key}: the server returned no ETag")
        return etag

    def _complete(self, key: str, upload_id: str, etags: list[str], mode: PutMode, what: str) -> str:
        body = "".join(
            f"<Part><PartNumber>{n}</PartNumber><ETag>{etag}</ETag></Part>" for n, etag in enumerate(etags, 1)
        )
        xml = f"<CompleteMultipartUpload>{body}</CompleteMultipartUpload>".encode()
        headers = {"Content-Type": "application/xml", "Content-Length": str(len(xml))}
        if mode == "create":
            headers["If-None-Match"] = "*"
        query = f"uploadId={urllib.parse.quote(upload_id, safe='')}"
        for attempt in (1, 2):
            try:
                resp = self._request("POST", key, headers, xml, query=query)
            except PreconditionFailed:
                raise PreconditionFailed(key, exists=True if mode == "create" else None) from None
            except RemoteUnavailableError:
                # The reply was lost: the completion may have been applied. Completing again
                # answers the same, or says the upload is gone (it became the object) or, for a
                # create, that the object exists: the caller then compares its bytes.
                if attempt == 2:
                    raise
                continue
            except RemoteNotFoundError:
                if attempt == 1:
                    raise
                if mode == "create":
                    raise PreconditionFailed(key, exists=None) from None
                # Overwriting: the upload is gone because the first completion was applied.
                etag = self._request("HEAD", key).headers.get("ETag")
                if not etag:
                    raise RemoteError(f"{what}: the server returned no ETag") from None
                return etag
            # S3 may answer 200 and report a failure in the body: completing again is the cure.
            root = _xml(resp.data, what)
            if root.tag == "Error":
                if attempt == 1:
                    continue
                code = root.findtext("Code") or "an error"
                raise RemoteUnavailableError(f"{what}: the store answered {code} on completing it, "
                                             "twice; nothing was written. Push again.")
            etag = root.findtext("ETag") or resp.headers.get("ETag")
            if not etag:
                raise RemoteError(f"{what}: the server returned no ETag")
            return etag
        raise AssertionError("unreachable")

    def abort(self, upload: Upload, quietly: bool = False) -> None:
        """Abort an upload (an upload already gone is no error)."""
        query = f"uploadId={urllib.parse.quote(upload.upload_id, safe='')}"
        try:
            self._request("DELETE", upload.key, {}, None, ok=(204, 404), query=query)
        except RemoteError as exc:
            if not quietly:
                raise
            logger.warning("could not abort the upload in parts of s3://%s/%s: %s (garbage collection "
                           "aborts it later)", self.bucket, upload.key, exc)

    def uploads(self, prefix: str) -> Iterator[Upload]:
        """The unfinished uploads of keys under ``prefix``, page by page (a store that lists
        other keys, or pages that do not move on, is refused)."""
        what = f"listing the uploads in parts of s3://{self.bucket}/{prefix}"
        markers, seen = "", set()
        while True:
            query = f"uploads&prefix={urllib.parse.quote(prefix, safe='')}{markers}"
            root = _xml(self._request("GET", "", {}, None, query=query).data, what)
            for item in root.findall("Upload"):
                initiated = _text(item, "Initiated", what)
                try:
                    when = datetime.datetime.fromisoformat(initiated.replace("Z", "+00:00")).timestamp()
                except ValueError:
                    raise RemoteFormatError(f"{what}: the start time {initiated!r} is not a date") from None
                key = _text(item, "Key", what)
                if not key.startswith(prefix):
                    raise RemoteFormatError(f"{what}: the store listed {key!r}, which is not under "
                                            "the prefix asked for; nothing was aborted")
                yield Upload(key, _text(item, "UploadId", what), when)
            if root.findtext("IsTruncated") != "true":
                return
            key_marker, id_marker = root.findtext("NextKeyMarker"), root.findtext("NextUploadIdMarker")
            if not key_marker:
                return
            if (key_marker, id_marker) in seen:
                raise RemoteFormatError(f"{what}: the store gave the same page twice; the listing "
                                        "was stopped")
            seen.add((key_marker, id_marker))
            markers = f"&key-marker={urllib.parse.quote(key_marker, safe='')}"
            if id_marker:
                markers += f"&upload-id-marker={urllib.parse.quote(id_marker, safe='')}"

