"""How values become bytes and back: the serializer's name, encode and decode in one object.

The serializers themselves are booklet's (the local file stores values already encoded, so
that plain ``booklet.open`` reads them); :mod:`ebooklet.local` builds the :class:`Codec` of a
file from them. Everything above the local layer encodes and decodes through a codec, and the
remote head records its :attr:`Codec.name`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Codec"]


@dataclass(frozen=True)
class Codec:
    """A value serializer by name.

    Attributes
    ----------
    name : str
        As recorded in the remote head: a booklet serializer name (``"pickle"``,
        ``"orjson"``, ...), ``"bytes"`` for raw bytes, or ``"custom:module.QualName"``.
    dumps, loads : callable
        The serializer's functions.

    Examples
    --------
    >>> codec = Codec("str", str.encode, bytes.decode)
    >>> codec.decode(codec.encode("rain"))
    'rain'
    """

    name: str
    dumps: Callable[[Any], bytes]
    loads: Callable[[bytes], Any]

    @property
    def is_custom(self) -> bool:
        """A class of the user's own, which every reader must be given."""
        return self.name.startswith("custom:")

    def encode(self, value: Any) -> bytes:
        return self.dumps(value)

    def decode(self, raw: bytes) -> Any:
        return self.loads(raw)
