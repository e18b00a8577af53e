"""The Azure Blob Storage transport: the only module that imports the Azure SDK.

A version's ETag is the blob's ETag: ``"create"`` uploads with ``If-None-Match: *`` and
``Update(etag)`` with ``If-Match: etag``, which Azure applies atomically (a block blob's
upload is committed in one step, whatever its size). Deletes go through the Blob Batch API,
256 blobs a request.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ResourceNotModifiedError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import ContainerClient, ExponentialRetry

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
from .http import check_range
from .multipart import PART_THREADS

T = TypeVar("T")

#: The Blob Batch API takes at most 256 sub-requests.
BATCH_LIMIT = 256


def container_client(
    container: str,
    *,
    account_url: str | None = None,
    credential: Any = None,
    connection_string: str | None = None,
    retries: int = 3,
    timeout: float = 60.0,
    max_connections: int = 10,
) -> ContainerClient:
    """The SDK's client of one container.

    ``connection_string`` (which may name its own ``BlobEndpoint``, as Azurite's does) wins;
    else ``account_url`` with ``credential``: an account key, a SAS token, a token credential,
    or None for :class:`azure.identity.DefaultAzureCredential` (environment, workload and
    managed identity, the Azure CLI's login, ...).
    """
    import requests
    from azure.core.pipeline.transport import RequestsTransport

    # The SDK's default pool keeps 10 connections; a push uploads with more threads than that.
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=max_connections)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    options: dict[str, Any] = {
        "transport": RequestsTransport(session=session, session_owner=True),
        # The storage SDK's default waits 15 s before its first retry; ours back off as the
        # other transports' do, from half a second.
        "retry_policy": ExponentialRetry(
            initial_backoff=0.5, increment_base=2, retry_total=retries, random_jitter_range=0.5
        ),
        "connection_timeout": min(timeout, 30.0),
        "read_timeout": timeout,
        "connection_data_block_size": 1 << 20,
        # One PUT per object under settings.multipart_from (16 MiB); a larger one (a segment
        # holding a large value) is staged in blocks of settings.multipart_part, several at a
        # time, and committed by one request that carries the conditions (Put Block List).
        # Blocks never committed, when a push dies, are discarded by the store within a week.
        "max_single_put_size": settings.multipart_from - 1,
        "max_block_size": settings.multipart_part,
        "max_single_get_size": 256 << 20,
    }
    if connection_string:
        return ContainerClient.from_connection_string(connection_string, container, **options)
    if not account_url:
        raise RemoteAccessError(
            f"no Azure storage account for container {container!r}: set "
            "AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT_NAME (with "
            "AZURE_STORAGE_ACCOUNT_KEY, AZURE_STORAGE_SAS_TOKEN or a login that "
            "DefaultAzureCredential finds), or give account_url"
        )
    if credential is None:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
    if isinstance(credential, str) and credential.startswith("?"):
        credential = credential[1:]  # a SAS token as the portal shows it
    return ContainerClient(account_url, container, credential=credential, **options)


class AzureTransport(Transport):
    """Blobs in one Azure Blob Storage container.

    Parameters
    ----------
    client : azure.storage.blob.ContainerClient
        The container (see :func:`container_client`); the transport closes it.
    """

    delete_batch_size = BATCH_LIMIT
    knows_ages = True

    def __init__(self, client: ContainerClient) -> None:
        self._client = client
        account = f"{client.scheme}://{client.primary_hostname}"
        self.container = client.container_name
        self.description = f"az://{self.container} at {account}"
        self.account = account

    def _call(self, what: str, key: str, call: Callable[[], T], mode: PutMode | None = None) -> T:
        """Run an SDK call and translate its failures into ebooklet errors."""
        try:
            return call()
        except ResourceExistsError as exc:
            if mode is not None:
                raise PreconditionFailed(key, exists=True) from None
            raise RemoteError(f"{what}: {exc.message}") from exc
        except ResourceModifiedError:
            raise PreconditionFailed(key, exists=True if mode == "create" else None) from None
        except ResourceNotFoundError as exc:
            if getattr(exc, "error_code", None) == "ContainerNotFound":
                raise RemoteNotFoundError.no_bucket(
                    f"{what}: the container does not exist. Check the container name and the account."
                ) from None
            if isinstance(mode, Update):
                raise PreconditionFailed(key, exists=False) from None
            raise RemoteNotFoundError(f"{what}: {key!r} does not exist") from None
        except ClientAuthenticationError as exc:
            raise _refused(what, exc) from None
        except HttpResponseError as exc:
            status = exc.status_code or 0
            if status == 416:
                raise RemoteFormatError(f"{what}: {key!r} is shorter than its index says (HTTP 416)") \
                    from None
            if status in (401, 403):
                raise _refused(what, exc) from None
            if status >= 500 or status == 429:
                raise RemoteUnavailableError(
                    f"{what}: the server answered HTTP {status} after retries. Try again later; "
                    "nothing was changed."
                ) from None
            raise RemoteError(f"{what}: HTTP {status} ({_first_line(exc)})") from None
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise RemoteUnavailableError(
                f"{what}: the connection failed ({_first_line(exc)}). Check that the account is "
                "reachable, then try again; nothing was changed."
            ) from None
        except AzureError as exc:
            raise RemoteError(f"{what}: {_first_line(exc)}") from None

    # --- reads ------------------------------------------------------------------------------

    def _download(self, key: str, offset: int | None, length: int | None, if_none_match: str | None) -> Any:
        """The SDK's download stream; None when the blob still has ETag ``if_none_match``; the
        ETag of an empty blob (a str) when a range from 0 was asked of it."""
        conditions: dict[str, Any] = {}
        if if_none_match:
            conditions = {"etag": if_none_match, "match_condition": MatchConditions.IfModified}

        def fetch() -> Any:
            try:
                return self._client.download_blob(key, offset=offset, length=length, **conditions)
            except (ResourceNotModifiedError, ResourceModifiedError):
                # The only condition of a read is ours: either answer (Azure's 304, Azurite's
                # 412) means the blob still has that ETag.
                if if_none_match:
                    return None
                raise
            except HttpResponseError as exc:
                # A range starting at 0 is unsatisfiable only for an empty blob.
                if exc.status_code == 416 and offset == 0 and exc.response is not None:
                    return str(exc.response.headers.get("ETag", ""))
                raise

        return self._call(f"GET az://{self.container}/{key}", key, fetch)

    def get(self, key: str, if_none_match: str | None = None) -> Blob | None:
        stream = self._download(key, None, None, if_none_match)
        if stream is None:
            return None
        data = self._call(f"GET az://{self.container}/{key}", key, stream.readall)
        return Blob(data, stream.properties.etag)

    def get_start(self, key: str, length: int, if_none_match: str | None = None) -> Blob | None:
        stream = self._download(key, 0, length, if_none_match)
        if stream is None or isinstance(stream, str):
            return None if stream is None else Blob(b"", stream, 0)
        data = self._call(f"GET az://{self.container}/{key}", key, stream.readall)
        total = str(stream.properties.content_range or "").rpartition("/")[2]
        size = int(total) if total.isdigit() else len(data)
        return Blob(data[:length], stream.properties.etag, size)

    def get_range(self, key: str, start: int, length: int) -> bytes:
        if length == 0:
            return b""
        what = f"GET az://{self.container}/{key}"
        stream = self._download(key, start, length, None)
        data = b"" if isinstance(stream, str) else self._call(what, key, stream.readall)  # str: empty
        return check_range(data, length, what, key)

    # --- writes -----------------------------------------------------------------------------

    def put(self, key: str, data: bytes, mode: PutMode = "overwrite") -> str:
        options: dict[str, Any] = {"overwrite": mode != "create"}
        if isinstance(mode, Update):
            options.update(etag=mode.etag, match_condition=MatchConditions.IfNotModified)
        answer = self._call(
            f"PUT az://{self.container}/{key}", key,
            lambda: self._client.get_blob_client(key).upload_blob(
                bytes(data), max_concurrency=PART_THREADS, **options
            ),
            mode,
        )
        etag = answer.get("etag")
        if not etag:
            raise RemoteError(f"PUT az://{self.container}/{key}: the server returned no ETag")
        return str(etag)

    def put_requests(self, size: int, mode: PutMode = "overwrite") -> int:
        if size < settings.multipart_from:
            return 1
        return -(-size // settings.multipart_part) + 1  # the blocks, the block list

    def delete(self, keys: list[str]) -> None:
        for i in range(0, len(keys), self.delete_batch_size):
            batch = keys[i : i + self.delete_batch_size]
            what = f"deleting {len(batch)} blobs from az://{self.container}"
            answers = self._call(
                what, batch[0],
                lambda b=batch: list(self._client.delete_blobs(*b, raise_on_any_failure=False)),
            )
            for key, answer in zip(batch, answers, strict=False):
                status = answer.status_code
                missing = answer.headers.get("x-ms-error-code") == "ContainerNotFound"
                if status < 300 or status == 404 and not missing:
                    continue  # deleted, or absent already: deletes are idempotent
                if status == 404:
                    raise RemoteNotFoundError.no_bucket(f"{what}: the container does not exist")
                if status in (401, 403):
                    raise RemoteAccessError(f"{what}: deleting {key!r} was refused (HTTP {status})")
                raise RemoteUnavailableError(
                    f"{what}: deleting {key!r} failed (HTTP {status}). Run the operation again; "
                    "deletes are idempotent."
                )

    def list_sizes(self, prefix: str) -> Iterator[tuple[str, int]]:
        for stat in self.list_stats(prefix):
            yield stat.key, stat.size

    def list_stats(self, prefix: str) -> Iterator[ObjectStat]:
        what = f"listing az://{self.container}/{prefix}"
        pages = self._call(what, prefix, lambda: iter(self._client.list_blobs(name_starts_with=prefix)))
        while True:
            item = self._call(what, prefix, lambda: next(pages, None))
            if item is None:
                return
            yield ObjectStat(item.name, int(item.size or 0), item.last_modified.timestamp())

    def stat(self, key: str) -> ObjectStat:
        what = f"reading the properties of az://{self.container}/{key}"
        props = self._call(what, key, lambda: self._client.get_blob_client(key).get_blob_properties())
        return ObjectStat(key, int(props.size or 0), props.last_modified.timestamp())

    def store_time(self) -> float:
        # Every answer carries the server's Date; asking for a blob that does not exist is the
        # cheapest request that gets one (its 404 is the answer wanted).
        key = f"ebooklet-clock-{uuid.uuid4().hex}"
        what = f"reading the clock of az://{self.container}"
        try:
            self._client.get_blob_client(key).get_blob_properties()
        except ResourceNotFoundError as exc:
            date = exc.response.headers.get("Date") if exc.response is not None else None
        except AzureError:
            date = None
            self._call(what, key, lambda: self._client.get_blob_client(key).get_blob_properties())
        else:
            date = None
        try:
            return parsedate_to_datetime(date or "").timestamp()
        except (TypeError, ValueError):
            raise RemoteFormatError(f"{what}: the server's Date header {date!r} is not a date") from None

    def close(self) -> None:
        self._client.close()


def _refused(what: str, exc: AzureError) -> RemoteAccessError:
    return RemoteAccessError(
        f"{what}: access denied ({_first_line(exc)}). Check the credentials "
        "(AZURE_STORAGE_CONNECTION_STRING, the account key, the SAS token or the identity "
        "DefaultAzureCredential found) and that they may use this container."
    )


def _first_line(exc: AzureError) -> str:
    return str(getattr(exc, "message", None) or exc).strip().splitlines()[0][:300]
