"""Which failed requests are worth another attempt.

urllib3 retries every connection error the same way, a refused connection included; with
s3func's backoff, three attempts at a server that is not there take 6 s before the user hears
anything. A refused connection, or a host name that does not resolve, will give the same
answer a second later: :class:`Retry` gives up on those at once. Everything that can change
(5xx answers, resets, timeouts, answers cut short) is retried as before.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import urllib3
from urllib3.exceptions import MaxRetryError, NewConnectionError


def never_connected(error: BaseException | None) -> bool:
    """Whether ``error`` says that no connection could be made at all (refused, unreachable,
    or a name that does not resolve), as opposed to one that timed out."""
    # urllib3 raises NewConnectionError when connect() fails at once (and its subclass
    # NameResolutionError for a name), and ConnectTimeoutError alone when it times out.
    return isinstance(error, NewConnectionError)


class Retry(urllib3.Retry):
    """urllib3's Retry, except that a connection that could not be made is not tried again."""

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: Any = None,
        error: Exception | None = None,
        _pool: Any = None,
        _stacktrace: TracebackType | None = None,
    ) -> urllib3.Retry:
        if never_connected(error):
            raise MaxRetryError(_pool, url or "", error) from error
        return super().increment(method, url, response, error, _pool, _stacktrace)

    @classmethod
    def like(cls, other: urllib3.Retry) -> Retry:
        """A Retry with ``other``'s settings (attempts, backoff, statuses, methods)."""
        mine = cls()
        mine.__dict__.update(vars(other))
        return mine
