"""Where an S3 connection's credentials, region and endpoint come from: the standard AWS chain.

Credentials are looked for in this order, and the first source that has them wins:

1. **Arguments**: ``S3Connection(access_key_id, access_key, session_token=...)``. A key id
   or secret given alone is completed from the environment (the command line's
   ``--access-key-id`` with ``AWS_SECRET_ACCESS_KEY``).
2. **The environment**: ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` and, for temporary
   credentials, ``AWS_SESSION_TOKEN``. Skipped when a profile is named explicitly (the
   ``profile`` argument), as the AWS CLI does with ``--profile``.
3. **The shared files**: the profile's ``aws_access_key_id``, ``aws_secret_access_key`` and
   ``aws_session_token`` in ``~/.aws/credentials``, then in ``~/.aws/config``
   (``AWS_SHARED_CREDENTIALS_FILE`` and ``AWS_CONFIG_FILE`` move them). The profile is the
   ``profile`` argument, else ``AWS_PROFILE``, else ``default``.
4. **botocore**, when installed (``pip install botocore``, the ``aws`` extra): everything else the AWS
   SDKs resolve, such as SSO, assumed roles (``role_arn``), ``credential_process``, web
   identity tokens, and container and instance roles. Credentials from botocore that expire
   are refreshed by it; every request is signed with the current ones.

The region is the ``region`` argument, else ``AWS_REGION``, ``AWS_DEFAULT_REGION``, the
profile's ``region``, else ``us-east-1``. The endpoint is the ``endpoint_url`` argument,
else ``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL``, the profile's S3 ``endpoint_url`` (in its
``services`` section or its nested ``s3`` settings), its plain ``endpoint_url``, else AWS
itself; ``AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true`` keeps only the argument.

Nothing here writes credentials anywhere: :class:`Credentials` never shows its secret or
token in its ``repr``, and :attr:`Credentials.source` names where they came from, for
messages, without their values.
"""

from __future__ import annotations

import configparser
import dataclasses
import os
import pathlib
import threading
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import InvalidArgumentError, NoCredentialsError, RemoteAccessError

__all__ = ["Credentials", "NoCredentialsError", "resolve_credentials", "resolve_endpoint", "resolve_region"]

#: Profile settings that only botocore can turn into credentials.
_BOTOCORE_KEYS = (
    "role_arn",
    "sso_session",
    "sso_start_url",
    "credential_process",
    "web_identity_token_file",
    "login_session",
)

DEFAULT_REGION = "us-east-1"


@dataclasses.dataclass(frozen=True)
class Credentials:
    """An access key pair, with a session token for temporary credentials.

    Attributes
    ----------
    access_key_id : str
    secret_access_key : str
        Never shown in ``repr``.
    session_token : str or None
        Signed into every request as ``X-Amz-Security-Token``; never shown in ``repr``.
    source : str
        Where they came from (``"arguments"``, ``"environment"``, a file and profile, or
        ``"botocore (sso)"``, ...), for messages.

    Examples
    --------
    >>> Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI", "FwoGZXIvYXdzEJr", source="environment")
    Credentials(access_key_id='AKIDEXAMPLE', source='environment', session_token=...)
    """

    access_key_id: str
    secret_access_key: str = dataclasses.field(repr=False)
    session_token: str | None = dataclasses.field(default=None, repr=False)
    source: str = ""
    #: For credentials that expire: returns ``(access_key_id, secret, token)`` as they are now.
    refresh: Callable[[], tuple[str, str, str | None]] | None = dataclasses.field(
        default=None, repr=False, compare=False
    )

    def __repr__(self) -> str:
        token = ", session_token=..." if self.session_token else ""
        return f"Credentials(access_key_id={self.access_key_id!r}, source={self.source!r}{token})"

    @property
    def temporary(self) -> bool:
        """Whether these are temporary credentials (they carry a session token)."""
        return bool(self.session_token)

    def current(self) -> Credentials:
        """The credentials to sign a request with now (refreshed when they expire)."""
        if self.refresh is None:
            return self
        key_id, secret, token = self.refresh()
        return Credentials(key_id, secret, token, self.source)


def _env(environ: Mapping[str, str], name: str) -> str | None:
    return environ.get(name) or None


def _home_path(environ: Mapping[str, str], variable: str, default: str) -> pathlib.Path:
    return pathlib.Path(os.path.expanduser(environ.get(variable) or default))


def credentials_file(environ: Mapping[str, str] = os.environ) -> pathlib.Path:
    """``~/.aws/credentials``, or ``AWS_SHARED_CREDENTIALS_FILE``."""
    return _home_path(environ, "AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials")


def config_file(environ: Mapping[str, str] = os.environ) -> pathlib.Path:
    """``~/.aws/config``, or ``AWS_CONFIG_FILE``."""
    return _home_path(environ, "AWS_CONFIG_FILE", "~/.aws/config")


def profile_name(profile: str | None = None, environ: Mapping[str, str] = os.environ) -> str:
    """The profile in use: the argument, else ``AWS_PROFILE``, else ``default``."""
    return profile or _env(environ, "AWS_PROFILE") or _env(environ, "AWS_DEFAULT_PROFILE") or "default"


def _read(path: pathlib.Path) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(default_section="\0no defaults\0", interpolation=None)
    try:
        parser.read(path, encoding="utf-8")
    except configparser.Error as exc:
        raise ValueError(f"{path} cannot be read as an AWS configuration file ({exc})") from None
    return parser


def _section(parser: configparser.RawConfigParser, name: str, config: bool) -> dict[str, str] | None:
    """A profile's settings: ``[name]`` in the credentials file; ``[profile name]`` (or
    ``[default]``) in the config file."""
    for section in ([f"profile {name}", name] if config else [name]):
        if parser.has_section(section):
            return dict(parser.items(section))
    return None


def _nested(text: str) -> dict[str, str]:
    """The settings of a nested block (``s3 =`` followed by indented ``key = value`` lines)."""
    nested = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            nested[key.strip()] = value.strip()
    return nested


class _Profile:
    """One profile as the shared files describe it."""

    def __init__(self, name: str, environ: Mapping[str, str]) -> None:
        self.name = name
        self.credentials_path = credentials_file(environ)
        self.config_path = config_file(environ)
        self._config = _read(self.config_path)
        self.credentials = _section(_read(self.credentials_path), name, config=False)
        self.config = _section(self._config, name, config=True)

    @property
    def exists(self) -> bool:
        return self.credentials is not None or self.config is not None

    def s3_endpoint(self) -> str | None:
        config = self.config or {}
        services = config.get("services")
        if services:
            section = f"services {services}"
            if self._config.has_section(section) and self._config.has_option(section, "s3"):
                url = _nested(self._config.get(section, "s3")).get("endpoint_url")
                if url:
                    return url
        return _nested(config.get("s3", "")).get("endpoint_url") or config.get("endpoint_url") or None

    def static_credentials(self) -> Credentials | None:
        for settings, path in ((self.credentials, self.credentials_path), (self.config, self.config_path)):
            if settings and settings.get("aws_access_key_id") and settings.get("aws_secret_access_key"):
                return Credentials(
                    settings["aws_access_key_id"],
                    settings["aws_secret_access_key"],
                    settings.get("aws_session_token") or None,
                    f"{path} (profile {self.name})",
                )
        return None

    def needs_botocore(self) -> str | None:
        """The setting that makes this profile's credentials botocore's job, if any."""
        for key in _BOTOCORE_KEYS:
            if (self.config or {}).get(key) or (self.credentials or {}).get(key):
                return key
        return None


def resolve_region(
    region: str | None = None, profile: str | None = None, environ: Mapping[str, str] = os.environ
) -> str:
    """The signing region (see the module docstring for the order)."""
    found = region or _env(environ, "AWS_REGION") or _env(environ, "AWS_DEFAULT_REGION")
    if found:
        return found
    config = _Profile(profile_name(profile, environ), environ).config or {}
    return config.get("region") or DEFAULT_REGION


def resolve_endpoint(
    endpoint_url: str | None = None, profile: str | None = None, environ: Mapping[str, str] = os.environ
) -> str | None:
    """The S3 endpoint, or None for AWS itself (see the module docstring for the order)."""
    if endpoint_url:
        return endpoint_url
    if (environ.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS") or "").lower() == "true":
        return None
    found = _env(environ, "AWS_ENDPOINT_URL_S3") or _env(environ, "AWS_ENDPOINT_URL")
    if found:
        return found
    return _Profile(profile_name(profile, environ), environ).s3_endpoint()


def resolve_credentials(
    access_key_id: str | None = None,
    access_key: str | None = None,
    session_token: str | None = None,
    profile: str | None = None,
    environ: Mapping[str, str] = os.environ,
) -> Credentials:
    """The first credentials the chain finds (see the module docstring for the order).

    Raises
    ------
    NoCredentialsError
        No source had credentials; the message says where they were looked for.
    ValueError
        A named profile does not exist, or it needs botocore and botocore is not installed.
    RemoteAccessError
        botocore could not get the profile's credentials (an expired SSO login, a refused
        role, a failing credential process).
    """
    if access_key_id and access_key:
        return Credentials(access_key_id, access_key, session_token, "arguments")
    if access_key_id or access_key:
        key_id = access_key_id or _env(environ, "AWS_ACCESS_KEY_ID")
        secret = access_key or _env(environ, "AWS_SECRET_ACCESS_KEY")
        if key_id and secret:
            token = session_token or (None if access_key else _env(environ, "AWS_SESSION_TOKEN"))
            return Credentials(key_id, secret, token, "arguments and environment")
        missing = "AWS_SECRET_ACCESS_KEY" if access_key_id else "AWS_ACCESS_KEY_ID"
        raise NoCredentialsError(f"only half of a key pair was given: set {missing} as well")
    if profile is None:
        key_id, secret = _env(environ, "AWS_ACCESS_KEY_ID"), _env(environ, "AWS_SECRET_ACCESS_KEY")
        if key_id and secret:
            return Credentials(key_id, secret, _env(environ, "AWS_SESSION_TOKEN"), "environment")
        if key_id or secret:  # as the AWS SDKs do: half a pair is an error, not a fallthrough
            have, lack = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")[:: 1 if key_id else -1]
            raise NoCredentialsError(f"{have} is set but {lack} is not")
    name = profile_name(profile, environ)
    shared = _Profile(name, environ)
    found = shared.static_credentials()
    if found is not None:
        return found
    named = profile is not None or name != "default"
    if named and not shared.exists:
        raise InvalidArgumentError(
            f"the AWS profile {name!r} is in neither {shared.credentials_path} nor "
            f"{shared.config_path}; check the name ({'the profile argument' if profile else 'AWS_PROFILE'})"
        )
    needs = shared.needs_botocore()
    botocore_found = _from_botocore(profile, name, needs)
    if botocore_found is not None:
        return botocore_found
    looked = (
        f"none in the arguments, in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or in "
        f"{shared.credentials_path} and {shared.config_path} (profile {name!r})"
    )
    looked += " or through botocore" if _botocore_installed() else (
        ' (pip install botocore for SSO, assumed roles and instance roles)'
    )
    raise NoCredentialsError(looked)


_botocore_lock = threading.Lock()


def _botocore_installed() -> bool:
    try:
        import botocore.session  # noqa: F401
    except ImportError:
        return False
    return True


def _from_botocore(profile: str | None, name: str, needs: str | None) -> Credentials | None:
    """Credentials from botocore's resolver, or None when it finds none (or is missing and
    the profile does not need it)."""
    try:
        import botocore.exceptions
        import botocore.session
    except ImportError:
        if needs:
            raise ValueError(
                f"the AWS profile {name!r} gets its credentials through {needs}, which needs "
                'botocore: pip install botocore'
            ) from None
        return None
    with _botocore_lock:  # botocore sessions are not thread-safe while they load
        try:
            session = botocore.session.Session(profile=profile)
            found: Any = session.get_credentials()
        except botocore.exceptions.BotoCoreError as exc:
            raise RemoteAccessError(
                f"could not get credentials for the AWS profile {name!r} through botocore ({exc}). "
                "If it uses SSO, log in again with 'aws sso login'."
            ) from None
    if found is None:
        return None
    frozen = found.get_frozen_credentials()
    refresh = None
    if hasattr(found, "refresh_needed"):  # expiring credentials: ask botocore before each request
        def refresh() -> tuple[str, str, str | None]:
            now = found.get_frozen_credentials()
            return now.access_key, now.secret_key, now.token

    method = getattr(found, "method", "") or "unknown"
    return Credentials(frozen.access_key, frozen.secret_key, frozen.token, f"botocore ({method})", refresh)
