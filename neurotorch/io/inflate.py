"""Sequential reading of plain or gzip-compressed files with the fastest inflater installed.

`SequentialReader` turns a path or an open binary file into a stream of the file's content,
decompressed when it starts with the gzip magic bytes (multi-member gzip included). Inflaters are
tried in speed order: ``isal`` (``isal.igzip``), ``zlib-ng`` (``zlib_ng.gzip_ng``), then the
standard library's ``gzip``. Every read either returns exactly the bytes asked for or raises
`CorruptFileError` naming the file: a truncated stream, a bad CRC or length in a gzip trailer and
invalid deflate data are never returned as data.
"""

from __future__ import annotations

import functools
import gzip
import io
import os
import zlib
from collections.abc import Callable
from typing import IO, Any, Protocol, cast

from neurotorch.errors import CorruptFileError, ParameterError

GZIP_MAGIC = b"\x1f\x8b"
INFLATERS = ("isal", "zlib-ng", "gzip")
_DRAIN_CHUNK = 1 << 22

Source = str | os.PathLike | IO[bytes]


class BinaryStream(Protocol):
    """What a `SequentialReader` reads from: a binary file object or a gzip reader over one."""

    def readinto(self, buffer: memoryview, /) -> int | None: ...

    def seek(self, offset: int, whence: int = 0, /) -> int: ...

    def close(self) -> None: ...


def _load_inflater(
    name: str,
) -> tuple[Callable[[IO[bytes]], BinaryStream], tuple[type[BaseException], ...]]:
    """Opener of a gzip reader over a file object, and the errors that mean corrupt data."""
    if name == "isal":
        from isal import igzip, isal_zlib

        # the ``error`` of isal and zlib-ng is an exception class (their stubs say an instance)
        return (lambda f: igzip.IGzipFile(fileobj=f, mode="rb")), (
            cast(type[BaseException], isal_zlib.error),
        )
    if name == "zlib-ng":
        from zlib_ng import gzip_ng, zlib_ng

        return (lambda f: gzip_ng.GzipNGFile(fileobj=f, mode="rb")), (
            cast(type[BaseException], zlib_ng.error),
        )
    if name == "gzip":
        return (lambda f: gzip.GzipFile(fileobj=f, mode="rb")), ()
    raise ParameterError(f"Unknown inflater {name!r}; choose one of {INFLATERS}.")


def _importable(name: str) -> bool:
    try:
        _load_inflater(name)
    except ImportError:
        return False
    return True


def available_inflaters() -> tuple[str, ...]:
    """Inflaters importable here, fastest first (``"gzip"`` is always available)."""
    return tuple(name for name in INFLATERS if _importable(name))


@functools.cache
def default_inflater() -> str:
    """The fastest available inflater."""
    return next(name for name in INFLATERS if _importable(name))


def source_name(source: Source) -> str:
    """A human-readable name of a path or file object for error messages."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    for attr in ("path", "full_name", "name"):
        value = getattr(source, attr, None)
        if isinstance(value, (str, os.PathLike)):
            return os.fspath(value)
    return repr(source)


class _PrefixedStream(io.RawIOBase):
    """A non-seekable stream whose first bytes were already consumed (to sniff the magic)."""

    def __init__(self, prefix: bytes, rest: IO[bytes]):
        self._prefix = memoryview(prefix)
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._prefix:
            n = min(len(buffer), len(self._prefix))
            buffer[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        if hasattr(self._rest, "readinto"):
            return self._rest.readinto(buffer)
        data = self._rest.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _sniff(fileobj: IO[bytes]) -> tuple[bytes, IO[bytes]]:
    """The first two bytes of ``fileobj`` and a stream that still starts at them."""
    seekable = getattr(fileobj, "seekable", None)
    if seekable is not None and seekable():
        start = fileobj.tell()
        head = fileobj.read(2)
        fileobj.seek(start)
        return head, fileobj
    head = fileobj.read(2)
    return head, cast(IO[bytes], _PrefixedStream(head, fileobj))  # a binary file object


def _direct_readinto(stream: BinaryStream) -> Callable[[memoryview], int | None]:
    """The ``readinto`` that inflates straight into the caller's buffer. A gzip file object of
    the standard library's design (isal's, zlib-ng's, ``gzip``'s) has none of its own: the
    inherited one reads a new ``bytes`` object and copies it over, a tenth of a whole-brain
    inflate. Its buffered reader (``_buffer``, the object its ``read`` reads from, so the same
    CRC and length checks) fills the buffer in place."""
    buffered = getattr(stream, "_buffer", None)
    return buffered.readinto if isinstance(buffered, io.BufferedReader) else stream.readinto


class SequentialReader:
    """Read a file's (decompressed) content front to back with exact-size reads.

    Parameters
    ----------
    source
        Local path or an open binary file object positioned at the start of the file (for example
        from `DataRoot.open` or fsspec). A file object is not closed by this reader.
    inflater
        ``"isal"``, ``"zlib-ng"`` or ``"gzip"``; the fastest available one by default.
    name
        Name used in error messages (derived from ``source`` by default).

    Attributes
    ----------
    compressed
        True if the file is gzip-compressed.
    inflater
        Inflater in use, or None for an uncompressed file.
    position
        Bytes of (decompressed) content consumed so far.
    """

    def __init__(self, source: Source, *, inflater: str | None = None, name: str | None = None):
        self.name = name or source_name(source)
        self._owned: IO[bytes] | None = None
        if isinstance(source, (str, os.PathLike)):
            source = self._owned = open(source, "rb")  # noqa: SIM115 - closed in close()
        try:
            head, fileobj = _sniff(source)
            self.compressed = head == GZIP_MAGIC
            self._errors: tuple[type[BaseException], ...] = (EOFError, gzip.BadGzipFile, zlib.error)
            self.inflater: str | None = None
            # a binary file object: it has readinto (and seek)
            self._stream: BinaryStream = cast(BinaryStream, fileobj)
            if self.compressed:
                self.inflater = inflater or default_inflater()
                opener, errors = _load_inflater(self.inflater)
                self._errors += errors
                self._stream = opener(fileobj)
            self._fill = _direct_readinto(self._stream)
        except BaseException:
            if self._owned is not None:
                self._owned.close()
            raise
        self.position = 0

    def __enter__(self) -> SequentialReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the inflater and the file this reader opened itself."""
        if self.compressed:
            self._stream.close()
        if self._owned is not None:
            self._owned.close()

    def _corrupt(self, detail: str) -> CorruptFileError:
        return CorruptFileError(
            f"{self.name} is corrupt or truncated: {detail}. The file is damaged; download or "
            "copy it again (a partial download is the usual cause)."
        )

    def _readinto(self, view: memoryview) -> int:
        try:
            n = self._fill(view)
        except self._errors as exc:
            raise self._corrupt(f"{type(exc).__name__}: {exc}") from exc
        return n or 0

    def readinto_exact(self, buffer: Any) -> None:
        """Fill ``buffer`` (a writable bytes-like object) completely from the stream."""
        view = memoryview(buffer).cast("B")
        filled = 0
        while filled < len(view):
            n = self._readinto(view[filled:])
            if n == 0:
                raise self._corrupt(
                    f"the content ends at byte {self.position + filled}, but "
                    f"{self.position + len(view)} bytes are needed"
                )
            filled += n
        self.position += filled

    def read_exact(self, n: int) -> bytes:
        """Read exactly ``n`` bytes."""
        buffer = bytearray(n)
        self.readinto_exact(buffer)
        return bytes(buffer)

    def skip(self, n: int, scratch: bytearray | memoryview | None = None) -> None:
        """Advance ``n`` bytes (seeking when the file is uncompressed and seekable)."""
        if n <= 0:
            return
        if not self.compressed and getattr(self._stream, "seekable", lambda: False)():
            self._stream.seek(n, io.SEEK_CUR)
            self.position += n
            return
        scratch = scratch if scratch is not None else bytearray(min(n, _DRAIN_CHUNK))
        view = memoryview(scratch)
        while n > 0:
            step = min(n, len(view))
            self.readinto_exact(view[:step])
            n -= step

    def finish(self) -> None:
        """Read to the end of a gzip stream so that its CRC and length trailers are verified."""
        if not self.compressed:
            return
        view = memoryview(bytearray(_DRAIN_CHUNK))
        while n := self._readinto(view):
            self.position += n
