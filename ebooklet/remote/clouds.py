"""Connections to a database on Google Cloud Storage or Azure Blob Storage.

Like :class:`~ebooklet.S3Connection`, a connection is plain data (where the database is, and
what credentials were given); its transport is made, and its credentials looked up, when it
is first used. The cloud SDKs are imported only then, by :mod:`.gcs` and :mod:`.azure`, so
the ``gcs`` and ``azure`` extras stay optional.

Where settings come from, when they are not given, follows each SDK's own convention, so that
whatever works with ``gcloud``/``gsutil`` or ``az``/the Azure SDK works with ebooklet:

Google Cloud Storage
    ``STORAGE_EMULATOR_HOST`` names an emulator, reached without credentials; otherwise the
    credentials are a service-account key file given as ``service_account_file``, else
    application default credentials (``GOOGLE_APPLICATION_CREDENTIALS``, gcloud's login, a
    Google Cloud VM's service account).
Azure Blob Storage
    ``AZURE_STORAGE_CONNECTION_STRING`` (which may name its own ``BlobEndpoint``, as an
    emulator's does); else the account in ``AZURE_STORAGE_ACCOUNT_NAME`` (or
    ``AZURE_STORAGE_ACCOUNT``) with ``AZURE_STORAGE_ACCOUNT_KEY`` (or ``AZURE_STORAGE_KEY``),
    ``AZURE_STORAGE_SAS_TOKEN``, or the identity ``DefaultAzureCredential`` finds.
"""

from __future__ import annotations

import os
import re
from typing import Any

from ..errors import InvalidArgumentError
from .base import Transport

#: What each extra installs (the distribution, ebooklet-sync, is installed from a checkout, so
#: the advice names the packages themselves; ``pip install ".[gcs]"`` in a checkout works too).
_EXTRA_PACKAGES = {"gcs": "google-auth", "azure": "azure-storage-blob azure-identity"}
_BLOB_ENDPOINT = re.compile(r"(?:^|;)\s*BlobEndpoint\s*=\s*([^;]+)", re.IGNORECASE)
_ACCOUNT_NAME = re.compile(r"(?:^|;)\s*AccountName\s*=\s*([^;]+)", re.IGNORECASE)


def _check_names(kind: str, container: object, db_key: object) -> None:
    if not container or not isinstance(container, str):
        what = "bucket" if kind == "GCSConnection" else "container"
        raise InvalidArgumentError(f"{kind} needs the name of its {what} (a str)")
    if not db_key or not isinstance(db_key, str) or db_key.endswith("/"):
        raise InvalidArgumentError(
            f"{kind} needs db_key, the object key of the database (a str not ending with '/'), "
            "e.g. 'data/big.blt'"
        )


def _missing_extra(extra: str, exc: ImportError) -> InvalidArgumentError:
    return InvalidArgumentError(f"this remote needs the {extra} extra ({exc.name} is missing): "
                                f"install it with: pip install {_EXTRA_PACKAGES[extra]}")


class GCSConnection:
    """Everything needed to reach a database in a Google Cloud Storage bucket.

    Parameters
    ----------
    bucket : str
    db_key : str
        The object name of the database's head object, e.g. ``"data/big.blt"``.
    service_account_file : str, optional
        A service-account key file (JSON). Without it, application default credentials.
    credentials : google.auth.credentials.Credentials, optional
        Credentials made by the caller; they win over everything else.
    endpoint_url : str, optional
        Another endpoint than Google's; ``STORAGE_EMULATOR_HOST`` when omitted.
    anonymous : bool, optional
        Send no credentials. The default is True exactly when ``STORAGE_EMULATOR_HOST`` is set
        and no credentials are given (as Google's client libraries do).
    max_connections, retries, timeout
        Connection pool size, retries of transient failures, and the read timeout in seconds.

    Examples
    --------
    >>> GCSConnection("my-bucket", "data/big.blt")
    GCSConnection(bucket='my-bucket', db_key='data/big.blt')
    """

    writable = True

    def __init__(
        self,
        bucket: str,
        db_key: str,
        *,
        service_account_file: str | None = None,
        credentials: Any = None,
        endpoint_url: str | None = None,
        anonymous: bool | None = None,
        max_connections: int = 10,
        retries: int = 3,
        timeout: float = 60.0,
    ) -> None:
        _check_names("GCSConnection", bucket, db_key)
        self.bucket = bucket
        self.db_key = db_key
        self.service_account_file = service_account_file
        self._credentials = credentials
        host = os.environ.get("STORAGE_EMULATOR_HOST", "").strip()
        emulator = (host if "://" in host else f"http://{host}") if host else None
        #: The endpoint given, which a group records (not the environment's emulator).
        self._given_endpoint = endpoint_url
        self.endpoint_url = endpoint_url or emulator
        if anonymous is None:
            # As Google's client libraries do: an emulator is reached without credentials.
            anonymous = emulator is not None and credentials is None and service_account_file is None
        self.anonymous = anonymous
        self.max_connections, self.retries, self.timeout = max_connections, retries, timeout

    def __repr__(self) -> str:
        endpoint = f", endpoint_url={self.endpoint_url!r}" if self.endpoint_url else ""
        return f"GCSConnection(bucket={self.bucket!r}, db_key={self.db_key!r}{endpoint})"

    @property
    def location(self) -> str:
        """Where the database lives, for messages."""
        return f"gs://{self.bucket}/{self.db_key}" + (f" ({self.endpoint_url})" if self.endpoint_url else "")

    def to_dict(self) -> dict[str, Any]:
        """The connection parameters without the credentials."""
        return {"bucket": self.bucket, "db_key": self.db_key, "endpoint_url": self._given_endpoint}

    def transport(self) -> Transport:
        """The transport, with credentials looked up now.

        Raises
        ------
        RemoteAccessError
            No credentials were found (the message says where ebooklet looked).
        InvalidArgumentError
            the ``gcs`` extra (google-auth) is not installed.
        """
        try:
            from .gcs import GCSTransport, find_credentials

            credentials = self._credentials
            if credentials is None and not self.anonymous:
                credentials = find_credentials(self.service_account_file)
        except ImportError as exc:
            raise _missing_extra("gcs", exc) from None
        return GCSTransport(
            self.bucket, credentials, self.endpoint_url, self.max_connections, self.retries, self.timeout
        )


class AzureConnection:
    """Everything needed to reach a database in an Azure Blob Storage container.

    Parameters
    ----------
    container : str
    db_key : str
        The blob name of the database's head object, e.g. ``"data/big.blt"``.
    account_url : str, optional
        The account's blob endpoint, e.g. ``https://myaccount.blob.core.windows.net``; from
        ``account`` or the environment when omitted (see the module's description).
    credential : optional
        An account key, a SAS token, or a token credential from ``azure.identity``. Without
        it: the environment's key or SAS token, else ``DefaultAzureCredential``.
    connection_string : str, optional
        A storage connection string; ``AZURE_STORAGE_CONNECTION_STRING`` when neither it nor
        ``credential`` is given, unless ``account_url`` names another account.
    account : str, optional
        The storage account's name, for ``https://ACCOUNT.blob.core.windows.net``.
    max_connections, retries, timeout
        Connection pool size, retries of transient failures, and the read timeout in seconds.

    Examples
    --------
    >>> AzureConnection("my-container", "data/big.blt", account="myaccount", credential="...")
    AzureConnection(container='my-container', db_key='data/big.blt', account_url='https://myaccount.blob.core.windows.net')
    """

    writable = True

    def __init__(
        self,
        container: str,
        db_key: str,
        *,
        account_url: str | None = None,
        credential: Any = None,
        connection_string: str | None = None,
        account: str | None = None,
        max_connections: int = 10,
        retries: int = 3,
        timeout: float = 60.0,
    ) -> None:
        _check_names("AzureConnection", container, db_key)
        self.container = container
        self.db_key = db_key
        if account and not account_url:
            account_url = f"https://{account}.blob.core.windows.net"
        if connection_string is None and credential is None:
            # The environment's connection string, unless another account was named.
            from_environment = os.environ.get("AZURE_STORAGE_CONNECTION_STRING") or None
            named = (_account_url(from_environment) or "").rstrip("/") if from_environment else ""
            if from_environment and (not account_url or named == account_url.rstrip("/")):
                connection_string = from_environment
        self._connection_string = connection_string
        if connection_string and not account_url:
            account_url = _account_url(connection_string)
        self.account_url = (account_url or _environment_account_url() or "").rstrip("/") or None
        self._credential = credential
        self.max_connections, self.retries, self.timeout = max_connections, retries, timeout

    def __repr__(self) -> str:
        return (f"AzureConnection(container={self.container!r}, db_key={self.db_key!r}, "
                f"account_url={self.account_url!r})")

    @property
    def location(self) -> str:
        """Where the database lives, for messages."""
        return f"az://{self.container}/{self.db_key} ({self.account_url or 'no account'})"

    def to_dict(self) -> dict[str, Any]:
        """The connection parameters without the credentials."""
        return {"container": self.container, "db_key": self.db_key, "account_url": self.account_url}

    def transport(self) -> Transport:
        """The transport, with credentials looked up now.

        Raises
        ------
        RemoteAccessError
            No account was named (the message lists the ways to name one).
        InvalidArgumentError
            the ``azure`` extra (azure-storage-blob, azure-identity) is not installed, or the SDK
            refused the connection string, account URL or credential (a token credential over
            plain http, for instance).
        """
        try:
            from .azure import AzureTransport, container_client
        except ImportError as exc:
            raise _missing_extra("azure", exc) from None
        credential = self._credential
        if credential is None and not self._connection_string:
            credential = (
                os.environ.get("AZURE_STORAGE_ACCOUNT_KEY") or os.environ.get("AZURE_STORAGE_KEY")
                or os.environ.get("AZURE_STORAGE_SAS_TOKEN") or None
            )
        try:
            client = container_client(
                self.container, account_url=self.account_url, credential=credential,
                connection_string=self._connection_string, retries=self.retries, timeout=self.timeout,
                max_connections=self.max_connections,
            )
        except ValueError as exc:  # the SDK's refusal of a connection string, URL or credential
            raise InvalidArgumentError(f"cannot reach az://{self.container}/{self.db_key}: {exc}") from None
        return AzureTransport(client)


def _account_url(connection_string: str) -> str | None:
    """The blob endpoint a connection string names (its own, or its account's)."""
    endpoint = _BLOB_ENDPOINT.search(connection_string)
    if endpoint:
        return endpoint.group(1).strip()
    name = _ACCOUNT_NAME.search(connection_string)
    return f"https://{name.group(1).strip()}.blob.core.windows.net" if name else None


def _environment_account_url() -> str | None:
    name = os.environ.get("AZURE_STORAGE_ACCOUNT_NAME") or os.environ.get("AZURE_STORAGE_ACCOUNT")
    return f"https://{name}.blob.core.windows.net" if name else None
