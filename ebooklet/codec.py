"""How values become bytes and back: the serializer's name, encode and decode in one object.

The serializers themselves are booklet's (the local file stores values already encoded, so
that plain ``booklet.open`` reads them); :mod:`ebooklet.local` builds the :class:`Codec` of a
file from them. Everything above the local layer encodes and decodes through a codec, and the
remote head records its :attr:`Codec.name`. A serializer's own errors are translated here,
naming the key and the serializer.

Some serializers run code chosen by the data while decoding it (``pickle`` does: a pickle
names functions to call). A remote's head names its serializer, so reading a remote must not
mean trusting it: :func:`runs_code` tells which names need the reader's consent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import feather
from .errors import DeserializationError, SerializationError

__all__ = ["MAX_INFLATE_RATIO", "MIN_INFLATE_LIMIT", "SAFE_SERIALIZERS", "Codec", "runs_code",
           "zstd_content_size"]

#: Serializers whose stored bytes are one zstd frame (booklet's ``*_zstd``, but for the pandas
#: ones, whose frames sit inside Feather files).
ZSTD_FRAMED = frozenset(
    {"zstd", "pickle_zstd", "orjson_zstd", "msgpack_zstd", "numpy_int2_zstd", "numpy_int4_zstd",
     "numpy_int8_zstd", "wkb_zstd"}
)
#: Serializers whose stored bytes are a Feather file of zstd-compressed buffers.
FEATHER = frozenset({"pd_zstd", "gpd_zstd"})
#: A zstd-framed value may inflate to this many bytes whatever its stored size...
MIN_INFLATE_LIMIT = 64 * 1024 * 1024
#: ...and beyond that to at most this many times its stored size: a 65 KB value that declares
#: 2 GiB is a bomb, not data (zstd at level 1, booklet's, rarely passes 1:100 on real values).
MAX_INFLATE_RATIO = 1000

#: booklet serializers that decode data without running code the data chooses. Any other
#: name (pickle, pickle_zstd, and whatever a later booklet adds) needs the reader's consent
#: before values from a remote are decoded with it.
SAFE_SERIALIZERS = frozenset(
    {
        "bytes", "str", "json", "orjson", "orjson_zstd", "msgpack", "msgpack_zstd", "zstd",
        "uint1", "int1", "uint2", "int2", "uint4", "int4", "uint5", "int5", "uint8", "int8",
        "numpy_int1", "numpy_int2", "numpy_int4", "numpy_int8", "numpy_int2_zstd",
        "numpy_int4_zstd", "numpy_int8_zstd", "pd_zstd", "gpd_zstd", "wkb", "wkb_zstd",
    }
)


def runs_code(name: str | None) -> bool:
    """Whether decoding with the serializer ``name`` (as a head records it) may run code
    chosen by whoever wrote the data. Custom serializers are the caller's own class: the
    caller passes it, which is consent enough."""
    return name is not None and not name.startswith("custom:") and name not in SAFE_SERIALIZERS


def _describe(name: str) -> str:
    if name == "bytes":
        return "no value serializer (raw bytes: value_serializer=None)"
    return f"the value serializer {name!r}"


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
    def bounds_inflation(self) -> bool:
        """Whether :meth:`decode` checks what a value inflates to before decoding it (a bulk
        read must not take a shortcut around it)."""
        return self.name in ZSTD_FRAMED or self.name in FEATHER

    @property
    def is_custom(self) -> bool:
        """A class of the user's own, which every reader must be given."""
        return self.name.startswith("custom:")

    def encode(self, value: Any, key: str | None = None) -> bytes:
        """``value`` as bytes; :class:`~ebooklet.SerializationError` names ``key`` when the
        serializer cannot encode it."""
        try:
            raw = self.dumps(value)
        except Exception as exc:  # a serializer may raise anything for a value it cannot take
            raise self._encode_error(value, key, f"{type(exc).__name__}: {exc}") from exc
        if type(raw) is bytes:
            return raw
        if isinstance(raw, (bytes, bytearray, memoryview)):
            return bytes(raw)
        # booklet's raw-bytes serializer hands back whatever it was given.
        raise self._encode_error(value, key, "it is not bytes")

    def _encode_error(self, value: Any, key: str | None, why: str) -> SerializationError:
        of = f" of {key!r}" if key is not None else ""
        if self.name == "bytes":
            advice = (
                "This database stores raw bytes: encode the value yourself (e.g. str.encode), "
                "or keep such values in a database created with a value_serializer such as "
                "'pickle' or 'orjson' (the serializer is fixed when a database is created)"
            )
        else:
            advice = (
                "Convert the value to a type that serializer takes, or keep such values in a "
                "database created with another value_serializer (the serializer is fixed when "
                "a database is created)"
            )
        return SerializationError(
            f"the value{of} ({type(value).__name__}) cannot be stored with "
            f"{_describe(self.name)}: {why}. {advice}.",
            key,
        )

    def decode(self, raw: bytes, key: str | None = None) -> Any:
        """The value stored as ``raw``; :class:`~ebooklet.DeserializationError` names ``key``
        when the serializer cannot decode it, or when a compressed value would inflate past
        the limit (MIN_INFLATE_LIMIT, or MAX_INFLATE_RATIO times its stored size)."""
        self.check_inflation(raw, key)
        try:
            return self.loads(raw)
        except Exception as exc:  # a serializer may raise anything for bytes it cannot read
            of = f" of {key!r}" if key is not None else ""
            raise DeserializationError(
                f"the stored value{of} ({len(raw):,} bytes) cannot be decoded with "
                f"{_describe(self.name)} ({type(exc).__name__}: {exc}); it was probably written "
                "with another serializer (e.g. through plain booklet). Overwrite or delete the key",
                key,
            ) from exc


    def check_inflation(self, raw: bytes, key: str | None = None) -> None:
        """Refuse a zstd frame (or a Feather file) that declares more than the limit, before
        inflating it (the decompressor allocates what the frame declares)."""
        if not self.bounds_inflation:
            return
        of = f" of {key!r}" if key is not None else ""
        if self.name in FEATHER:
            try:
                declared: int | None = feather.inflated_size(raw)
            except ValueError as exc:
                raise DeserializationError(
                    f"the stored value{of} ({len(raw):,} bytes) cannot be decoded with "
                    f"{_describe(self.name)}: {exc}. Overwrite or delete the key", key,
                ) from None
        else:
            declared = zstd_content_size(raw)
        if declared is None:
            return  # not a frame, or one that does not say (then zstandard refuses it itself)
        limit = max(MIN_INFLATE_LIMIT, MAX_INFLATE_RATIO * len(raw))
        if declared > limit:
            raise DeserializationError(
                f"the stored value{of} ({len(raw):,} bytes) declares that it inflates to "
                f"{declared:,} bytes, more than ebooklet inflates ({limit:,}); it was not "
                "decoded. A remote's values are untrusted: ask whoever wrote it",
                key,
            )

def zstd_content_size(frame: bytes) -> int | None:
    """The content size a zstd frame's header declares (RFC 8878, 3.1.1.1), or None when
    ``frame`` is not a zstd frame or its header does not declare one."""
    if len(frame) < 6 or frame[:4] != b"\x28\xb5\x2f\xfd":
        return None
    descriptor = frame[4]
    fcs_flag, single_segment, dict_flag = descriptor >> 6, descriptor >> 5 & 1, descriptor & 3
    fcs_size = (1 if single_segment else 0, 2, 4, 8)[fcs_flag]
    if fcs_size == 0:
        return None
    start = 5 + (0 if single_segment else 1) + (0, 1, 2, 4)[dict_flag]
    field = frame[start : start + fcs_size]
    if len(field) != fcs_size:
        return None
    return int.from_bytes(field, "little") + (256 if fcs_size == 2 else 0)
