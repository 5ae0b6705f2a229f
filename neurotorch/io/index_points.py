"""Inflating a ``.nii.gz`` on one core from a point of its saved seek index, with isal.

The seek index that `neurotorch.io.seek_index` saves is in indexed_gzip's ``GZIDX`` format,
version 1 (rapidgzip and indexed_gzip both write it). It lists points of the deflate stream:
where a block starts in the compressed file (a byte offset, and how many bits of the byte before
it the block starts with) and in the content, and the 32 KiB of content before each point (the
window that back-references reach into). `PointReader` starts isal's raw inflate at the last
point at or before a position: the window becomes the inflater's dictionary and, where the block
does not start on a byte boundary, the compressed bytes are shifted by those bits as they are
read (neither isal's nor zlib's Python interface can start inside a byte). On one core this
inflates 1.14–1.23× faster than rapidgzip on one thread from the same index (the ``seek point``
rows of `scripts/bench_scale.py`).

Like every random access, it cannot check the gzip CRC (that covers the whole file): the file
was verified when its index was built. An index of another format or version, or one that does
not fit its file, raises `UnreadableIndex`: the caller reads through the backend instead.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any, cast

import numpy as np
from isal import igzip_lib

from neurotorch.errors import CorruptFileError

_HEADER = struct.Struct("<5sBBQQIII")  # magic, version, flags, sizes, spacing, window, points
_POINT = np.dtype([("compressed", "<u8"), ("content", "<u8"), ("bits", "u1"), ("window", "u1")])
_WINDOW = 1 << 15  # deflate's largest back-reference distance
_CHUNK = 1 << 22  # compressed bytes read at a time
# isal's error is an exception class (its stubs say an instance)
_INFLATE_ERROR = cast(type[BaseException], igzip_lib.IsalError)


class UnreadableIndex(Exception):
    """The saved index is not one `IndexPoints` reads (the backend that wrote it still may)."""


class IndexPoints:
    """The points of a saved ``GZIDX`` (version 1) index and their windows.

    Raises
    ------
    UnreadableIndex
        Another format or version, a window size other than 32 KiB, or a table or windows that
        do not add up to the file's size.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        with open(self.path, "rb") as f:
            head = f.read(_HEADER.size)
            if len(head) < _HEADER.size:
                raise UnreadableIndex(f"{self.path} is too short for a GZIDX header")
            magic, version, _, _, self.content_size, _, window, count = _HEADER.unpack(head)
            if magic != b"GZIDX" or version != 1 or window != _WINDOW:
                raise UnreadableIndex(f"{self.path} is not a GZIDX v1 index of 32 KiB windows")
            table = f.read(count * _POINT.itemsize)
            size = os.fstat(f.fileno()).st_size
        self.points = np.frombuffer(table, dtype=_POINT, count=len(table) // _POINT.itemsize)
        has_window = self.points["window"].astype(bool)
        # windows follow the table, one per point that has one, in point order
        self._window_number = np.cumsum(has_window) - 1
        self._windows_at = _HEADER.size + len(table)
        content = self.points["content"]
        if (
            len(self.points) != count
            or count == 0
            or content[0] != 0
            or np.any(np.diff(content.astype(np.int64)) < 0)
            or np.any(self.points["bits"] > 7)
            or size != self._windows_at + _WINDOW * int(has_window.sum())
        ):
            raise UnreadableIndex(f"{self.path}: its point table does not fit its size")

    def point_before(self, position: int) -> int:
        """The number of the last point at or before content ``position``."""
        return int(np.searchsorted(self.points["content"], position, side="right")) - 1

    def window(self, k: int) -> bytes:
        """The 32 KiB of content before point ``k`` (empty for a point without one)."""
        if not self.points["window"][k]:
            return b""
        with open(self.path, "rb") as f:
            f.seek(self._windows_at + _WINDOW * int(self._window_number[k]))
            return f.read(_WINDOW)


class PointReader:
    """The content of a ``.nii.gz`` from any position on, inflated by isal from the index point
    before it: `seek` once, then `readinto` front to back (what a volume range reads).

    Parameters
    ----------
    path
        The gzip file.
    index
        Its saved index (`IndexPoints`).
    """

    def __init__(self, path: str, index: IndexPoints):
        self.name = path
        self.index = index
        self._file = open(path, "rb")  # noqa: SIM115 - closed in close()
        # compressed bytes as read (one carried over from the chunk before, 8 of padding) and
        # shifted; both seen as little-endian 64-bit words for the shift
        self._raw = np.zeros(_CHUNK + 16, dtype=np.uint8)
        self._shifted = np.zeros(_CHUNK + 16, dtype=np.uint8)
        self._spill = np.zeros((_CHUNK + 16) // 8, dtype="<u8")
        self._inflater: Any = None  # isal's decompressor (its stubs give no type)
        self._shift = 0
        self._carried = False

    def __enter__(self) -> PointReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the compressed file."""
        self._file.close()

    def seek(self, position: int) -> int:
        """Continue from content ``position``: inflate from the point before it, skip the rest."""
        k = self.index.point_before(position)
        point = self.index.points[k]
        bits = int(point["bits"])
        # a block that starts inside a byte starts with that byte's top ``bits`` bits
        self._file.seek(int(point["compressed"]) - (1 if bits else 0))
        self._shift = (8 - bits) % 8
        self._carried = False
        window = self.index.window(k)
        options = {"zdict": window} if window else {}
        self._inflater = igzip_lib.IgzipDecompressor(
            flag=igzip_lib.DECOMP_DEFLATE, hist_bits=15, **options
        )
        skip = position - int(point["content"])
        scratch = memoryview(bytearray(min(_CHUNK, skip) or 1))
        while skip > 0:
            n = self.readinto(scratch[: min(skip, len(scratch))])
            if not n:
                break
            skip -= n
        return position

    def _next_input(self) -> memoryview:
        """The next compressed bytes for the inflater, shifted to start on a byte boundary."""
        raw = self._raw.data
        if not self._shift:
            return raw[: self._file.readinto(raw[:_CHUNK])]
        start = int(self._carried)
        end = start + self._file.readinto(raw[start : start + _CHUNK])
        if end <= 1:  # the file ends (its gzip trailer holds no deflate data)
            return raw[:0]
        # byte i of the shifted stream is the top bits of byte i and the low bits of byte i + 1:
        # 64 bits at a time, the last byte read waits for the next chunk
        self._raw[end : end + 8] = 0
        words = (end + 7) // 8
        low = self._raw[: 8 * words].view("<u8")
        high = self._raw[8 : 8 * words + 8].view("<u8")
        shifted = self._shifted[: 8 * words].view("<u8")
        spill = self._spill[:words]
        np.right_shift(low, self._shift, out=shifted)
        np.left_shift(high, 64 - self._shift, out=spill)
        np.bitwise_or(shifted, spill, out=shifted)
        self._raw[0] = self._raw[end - 1]
        self._carried = True
        return self._shifted.data[: end - 1]

    def readinto(self, buffer: Any) -> int:
        """Fill ``buffer`` with the content from the current position; fewer bytes at its end.

        Raises
        ------
        CorruptFileError
            The compressed data are invalid.
        """
        view = memoryview(buffer).cast("B")
        filled = 0
        while filled < len(view) and not self._inflater.eof:
            data: Any = b""
            if self._inflater.needs_input:
                data = self._next_input()
                if not len(data):
                    break
            try:
                content = self._inflater.decompress(data, len(view) - filled)
            except _INFLATE_ERROR as exc:
                raise CorruptFileError(
                    f"{self.name} is corrupt: inflating it from its seek index failed ({exc}). "
                    "Download or copy the file again."
                ) from exc
            view[filled : filled + len(content)] = content
            filled += len(content)
        return filled
