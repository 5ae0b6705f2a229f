"""HDF5's Fletcher-32 chunk checksum, verified in numpy for chunks read past h5py's filters.

HDF5 appends to every filtered chunk a 32-bit Fletcher checksum of the bytes before it: the data
are read as big-endian 16-bit words w_0 .. w_{n-1} (an odd last byte is the high byte of one more
word), sum1 = Σ w_j and sum2 = Σ (n - j) w_j, both modulo 65535, and the checksum is
``sum2 << 16 | sum1``, stored little-endian (files of HDF5 < 1.6.3 store it byte-reversed, which
HDF5 also accepts). HDF5 folds the sums with ``(s & 0xffff) + (s >> 16)``, so a residue of 0 is
stored as 65535 unless every byte is 0.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

MODULUS = 65535
CHECKSUM_BYTES = 4
# words per block: a block's weighted sum is at most 65535 * BLOCK (BLOCK + 1) / 2 < 2**24, so the
# float32 matrix-vector product (BLAS) that computes it is exact
BLOCK = 16
_WEIGHTS = np.arange(BLOCK, 0, -1, dtype=np.float32)  # BLOCK - i for word i of a block
SEGMENT = 2**18  # words checked at a time


def _segment_sums(words: np.ndarray) -> tuple[int, int]:
    """(Σ w_j, Σ (n - j) w_j modulo 65535) over one segment of n words."""
    n_blocks = -(-len(words) // BLOCK)
    blocks = np.zeros((n_blocks, BLOCK), dtype=np.float32)
    blocks.reshape(-1)[blocks.size - len(words) :] = words  # leading zeros add nothing to the sums
    block_sums = blocks.sum(axis=1).astype(np.int64)
    weighted = (blocks @ _WEIGHTS).astype(np.int64)  # Σ_i (BLOCK - i) w_{b,i}
    # the words of block b are also counted once for every word of the later blocks
    later_words = BLOCK * np.arange(n_blocks - 1, -1, -1, dtype=np.int64)
    sum2 = int(weighted.sum()) + int((block_sums % MODULUS) @ (later_words % MODULUS))
    return int(block_sums.sum()), sum2 % MODULUS


def fletcher32_sums(data: memoryview | bytes) -> tuple[int, int]:
    """(sum1, sum2 modulo 65535) of HDF5's Fletcher-32 over ``data``; sum1 is exact.

    Computed over segments of `SEGMENT` words, so the float32 scratch stays small.
    """
    raw = np.frombuffer(memoryview(data), dtype=np.uint8)
    words = raw[: len(raw) // 2 * 2].view(">u2")
    sum1 = sum2 = 0
    for start in range(0, len(words), SEGMENT):
        segment = words[start : start + SEGMENT]
        seg_sum1, seg_sum2 = _segment_sums(segment)
        later_words = len(words) - start - len(segment)
        sum1 += seg_sum1
        sum2 += seg_sum2 + later_words % MODULUS * (seg_sum1 % MODULUS)
    if len(raw) % 2:  # one more word, the odd byte as its high byte: weight 1 in sum2
        sum1 += int(raw[-1]) << 8
        sum2 += sum1
    return sum1, sum2 % MODULUS


def fletcher32(data: memoryview | bytes) -> int:
    """HDF5's Fletcher-32 checksum of ``data``, as HDF5 computes it (0 only for all-zero data)."""
    total, sum2 = fletcher32_sums(data)
    folded_zero = MODULUS if total else 0  # HDF5's folding keeps a non-zero sum non-zero
    return (sum2 or folded_zero) << 16 | (total % MODULUS or folded_zero)


def with_fletcher32(data: bytes) -> bytes:
    """``data`` followed by its checksum, as HDF5 stores a chunk with the Fletcher-32 filter."""
    return data + fletcher32(data).to_bytes(CHECKSUM_BYTES, "little")


def fletcher32_matches(chunk: memoryview | bytes) -> bool:
    """Whether the last 4 bytes of a stored chunk are the Fletcher-32 checksum of the rest."""
    chunk = memoryview(chunk)
    if len(chunk) < CHECKSUM_BYTES:
        return False
    trailer = bytes(chunk[-CHECKSUM_BYTES:])
    expected = fletcher32(chunk[:-CHECKSUM_BYTES])
    return expected in (int.from_bytes(trailer, "little"), int.from_bytes(trailer, "big"))


def metadata_digest(attributes: dict, mask_indices: np.ndarray, mask_affine: np.ndarray) -> str:
    """SHA-256 of a batch file's metadata: its attributes, mask indices ((n, 3) rows) and affine.

    HDF5 checksums cover the data chunks but not the attributes, so neurotorch stores this digest
    as an attribute of the files it writes and checks it when it opens them: a damaged attribute
    is reported, not used.
    """
    canonical = json.dumps(
        {key: _plain(value) for key, value in sorted(attributes.items())}, sort_keys=True
    )
    digest = hashlib.sha256(canonical.encode())
    digest.update(np.ascontiguousarray(mask_indices, dtype="<i8").tobytes())
    digest.update(np.ascontiguousarray(mask_affine, dtype="<f8").tobytes())
    return digest.hexdigest()


def _plain(value: object) -> object:
    """An attribute value as JSON: numpy scalars and arrays as numbers and lists, bytes as text."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value
