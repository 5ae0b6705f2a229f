"""NPZ archives (CaliBrain leadfields, aggregated runs) read without unpickling, every kind of
damage reported as one `CorruptFileError` that names the file.

``np.load`` reports a damaged archive in many ways (``BadZipFile``, ``zlib.error``,
``KeyError``, ``NotImplementedError``, and a ``ValueError`` telling to set ``allow_pickle=True``
when the zip signature itself is damaged). Here every member is read whole (so its CRC-32 is
checked), its ``.npy`` header is parsed first, and an object array is skipped (listed in
`NpzContent.pickled`) unless the caller opts in to unpickling.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from dataclasses import dataclass, field

import numpy as np

from neurotorch.errors import CorruptFileError

#: Local-file and end-of-archive signatures a zip file starts with (the latter when empty).
_ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")
#: What the zip and ``.npy`` parsers raise on damaged bytes.
_DAMAGE = (
    zipfile.BadZipFile,
    zlib.error,
    OSError,
    EOFError,
    ValueError,
    KeyError,
    NotImplementedError,
    struct.error,
    UnicodeDecodeError,
    SyntaxError,
)


@dataclass
class NpzContent:
    """The arrays of an NPZ archive and the keys of the object arrays that were not unpickled."""

    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    pickled: list[str] = field(default_factory=list)


def read_npz(content: bytes, path: object, *, what: str, allow_pickle: bool = False) -> NpzContent:
    """Parse the bytes of an ``.npz`` file (``path`` and ``what`` only name it in errors).

    Raises `CorruptFileError` naming ``path`` (and the damaged key) for anything that is not a
    complete, undamaged zip archive of ``.npy`` members.
    """
    if not content.startswith(_ZIP_SIGNATURES):
        raise CorruptFileError(
            f"{what} {path} is not an NPZ archive (its first bytes are not a zip signature): the "
            "file is damaged or not an .npz; re-create or re-download it."
        )
    try:
        archive = zipfile.ZipFile(io.BytesIO(content))
        names = archive.namelist()
    except _DAMAGE as exc:
        raise CorruptFileError(
            f"{what} {path} has a damaged zip directory ({type(exc).__name__}: {exc}); re-create "
            "or re-download it."
        ) from exc
    found = NpzContent()
    with archive:
        for name in names:
            key = name[:-4] if name.endswith(".npy") else name
            try:
                member = io.BytesIO(archive.read(name))  # whole member: its CRC-32 is checked
                version = np.lib.format.read_magic(member)
                header = (
                    np.lib.format.read_array_header_1_0
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0
                )
                dtype = header(member)[2]
                if dtype.hasobject and not allow_pickle:
                    found.pickled.append(key)
                    continue
                member.seek(0)
                found.arrays[key] = np.lib.format.read_array(member, allow_pickle=allow_pickle)
            except _DAMAGE as exc:
                raise CorruptFileError(
                    f"Array {key!r} of {what.lower()} {path} is damaged ({type(exc).__name__}: "
                    f"{exc}); re-create or re-download the file."
                ) from exc
    return found
