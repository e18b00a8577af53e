"""The connection to a database on S3 (or a public URL): what :func:`ebooklet.open` takes
to reach it, and the transport it makes."""

from __future__ import annotations

import threading
import urllib.parse
from typing import Any

from ..errors import InvalidArgumentError, RemoteAccessError
from .base import Transport, check_db_key
from .credentials import (
    Credentials,
    NoCredentialsError,
    resolve_credentials,
    resolve_endpoint,
    resolve_region,
)
from .http import HttpTransport


class S3Connection:
    """Everything needed to reach a database in an S3 bucket.

    Parameters
    ----------
    access_key_id, access_key : str, optional
        Credentials. When omitted they come from the standard AWS chain: the environment
        (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``), the shared
        files (``~/.aws/credentials``, ``~/.aws/config``, the profile in ``AWS_PROFILE``), then
        botocore when it is installed (the ``aws`` extra) (SSO, assumed roles, instance roles); see
        :mod:`ebooklet.remote.credentials`. They are looked up when the connection is first
        used, and never written anywhere.
    db_key : str
        The object key of the database's head object, e.g. ``"data/big.blt"``. The database's
        other objects live under ``db_key + ".ebooklet/"``. It may be left out when
        ``db_url`` is given: the connection then reads through that URL only.
    bucket : str
        The bucket (may be left out with ``db_key``).
    endpoint_url : str, optional
        The S3 endpoint for stores other than AWS (``AWS_ENDPOINT_URL_S3``,
        ``AWS_ENDPOINT_URL`` or the profile's ``endpoint_url`` when omitted).
    db_url : str, optional
        A public URL of the head object, for credential-free readers: a connection without
        credentials (or without ``db_key``) reads through it, read-only.
    region : str
        The signing region (``AWS_REGION``, ``AWS_DEFAULT_REGION``, the profile's ``region``
        or ``us-east-1`` when omitted).
    max_connections, retries, timeout
        Connection pool size, retries of transient failures, and the read timeout in seconds.
    session_token : str, optional
        The session token of temporary credentials (with ``access_key_id`` and
        ``access_key``); it is signed into every request.
    profile : str, optional
        The AWS profile to take credentials, region and endpoint from (instead of
        ``AWS_PROFILE`` or ``default``); the environment's keys are then ignored.

    Examples
    --------
    >>> conn = S3Connection("AKID", "SECRET", "data/big.blt", "my-bucket",
    ...                     endpoint_url="http://127.0.0.1:9000")
    >>> conn
    S3Connection(bucket='my-bucket', db_key='data/big.blt', endpoint_url='http://127.0.0.1:9000')
    >>> S3Connection(db_url="https://cdn.example.com/data/big.blt").writable
    False
    """

    def __init__(
        self,
        access_key_id: str | None = None,
        access_key: str | None = None,
        db_key: str | None = None,
        bucket: str | None = None,
        endpoint_url: str | None = None,
        db_url: str | None = None,
        region: str | None = None,
        max_connections: int = 10,
        retries: int = 3,
        timeout: float = 60.0,
        *,
        session_token: str | None = None,
        profile: str | None = None,
    ) -> None:
        if db_url is not None and (not isinstance(db_url, str) or not db_url):
            raise ValueError("db_url must be the public http(s):// URL of the database (a str)")
        if db_url is None or db_key is not None or bucket is not None:
            if not db_key or not isinstance(db_key, str):
                raise ValueError(
                    "S3Connection needs db_key, the object key of the database (a str), or only "
                    "db_url for a read-only connection"
                )
            if not bucket or not isinstance(bucket, str):
                raise ValueError("S3Connection needs bucket, the name of the S3 bucket (a str)")
            if db_key.endswith("/"):
                raise InvalidArgumentError(
                    f"db_key {db_key!r} must name the database's object, not end with '/': e.g. "
                    f"{db_key}db.blt"
                )
            check_db_key(db_key)
        self._given = (access_key_id, access_key, session_token)
        self._credentials: Credentials | None = None
        self._credentials_error: Exception | None = None
        self._resolving = threading.Lock()
        self.profile = profile
        self.db_key = db_key
        self.bucket = bucket
        self.endpoint_url = resolve_endpoint(endpoint_url, profile)
        self.db_url = db_url
        self.region = resolve_region(region, profile)
        self.max_connections = max_connections
        self.retries = retries
        self.timeout = timeout

    def __repr__(self) -> str:
        if self.db_key is None:
            return f"S3Connection(db_url={self.db_url!r})"
        return (
            f"S3Connection(bucket={self.bucket!r}, db_key={self.db_key!r}, "
            f"endpoint_url={self.endpoint_url!r})"
        )

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (e.g. sent to Dask workers) with the keys it was given, if any; credentials
        found through the chain are not pickled: each process looks them up itself."""
        state = dict(self.__dict__)
        del state["_resolving"]
        state["_credentials"] = state["_credentials_error"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._resolving = threading.Lock()

    def to_dict(self) -> dict[str, Any]:
        """The connection parameters without the credentials."""
        return {
            "db_key": self.db_key,
            "bucket": self.bucket,
            "endpoint_url": self.endpoint_url,
            "db_url": self.db_url,
            "region": self.region,
        }

    @property
    def credentials(self) -> Credentials:
        """The credentials the chain finds, looked up once (see :mod:`.credentials`).

        Raises
        ------
        NoCredentialsError
            None were found (a ValueError naming every place looked at).
        """
        with self._resolving:
            if self._credentials is None and self._credentials_error is None:
                try:
                    self._credentials = resolve_credentials(*self._given, profile=self.profile)
                except (ValueError, RemoteAccessError) as exc:
                    self._credentials_error = exc
            if self._credentials_error is not None:
                raise self._credentials_error
            assert self._credentials is not None
            return self._credentials

    @property
    def access_key_id(self) -> str | None:
        """The key id in use (set it to replace the one given; the chain is then asked again)."""
        return self.credentials.access_key_id if self.has_credentials else None

    @access_key_id.setter
    def access_key_id(self, value: str | None) -> None:
        self._give(0, value)

    @property
    def access_key(self) -> str | None:
        """The secret in use (set it to replace the one given)."""
        return self.credentials.secret_access_key if self.has_credentials else None

    @access_key.setter
    def access_key(self, value: str | None) -> None:
        self._give(1, value)

    @property
    def session_token(self) -> str | None:
        """The session token in use (set it to replace the one given)."""
        return self.credentials.session_token if self.has_credentials else None

    @session_token.setter
    def session_token(self, value: str | None) -> None:
        self._give(2, value)

    def _give(self, field: int, value: str | None) -> None:
        with self._resolving:
            given = list(self._given)
            given[field] = value
            self._given = (given[0], given[1], given[2])
            self._credentials = self._credentials_error = None

    @property
    def has_credentials(self) -> bool:
        """Whether the chain finds credentials (False when it finds none or fails)."""
        try:
            return bool(self.credentials)
        except (ValueError, RemoteAccessError):
            return False

    @property
    def writable(self) -> bool:
        """Whether the connection goes to the bucket (with credentials), not a public URL."""
        return self.db_key is not None and (self.db_url is None or self.has_credentials)

    def transport(self) -> Transport:
        """The transport: S3 with credentials, else the public ``db_url`` (read-only).

        Raises
        ------
        ValueError
            No credentials were found and there is no ``db_url`` to read from instead.
        """
        if not self.writable:
            return HttpTransport(_url_parent(self.db_url or ""))
        try:
            credentials = self.credentials
        except NoCredentialsError as exc:
            raise NoCredentialsError(
                f"no credentials for s3://{self.bucket}/{self.db_key}: {exc}. Pass access_key_id "
                "and access_key, set them in the environment or an AWS profile, or give db_url to "
                "read the database without credentials"
            ) from None
        # Imported here so that s3func is loaded only when an S3 remote is used.
        from .s3 import S3Transport

        return S3Transport(
            credentials.access_key_id,
            credentials.secret_access_key,
            self.bucket,  # type: ignore[arg-type]
            endpoint_url=self.endpoint_url,
            region=self.region,
            max_connections=self.max_connections,
            retries=self.retries,
            timeout=self.timeout,
            credentials=credentials,
        )


def _url_parent(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    parent = parts.path.rsplit("/", 1)[0] + "/"
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parent, "", ""))


def _url_name(url: str) -> str:
    name = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
    if not name:
        raise ValueError(f"the URL {url!r} must name the database object, not end with '/'")
    return name
