"""Fault cases of the encoder's memory: a fit that cannot fit the available memory (whatever the
chunk, or with the chunk asked for), a scratch folder that cannot be written or has no room, and
settings of the wrong kind. Each must be a named error that says what to use, never an allocator
error halfway through a fit."""

from __future__ import annotations

from pathlib import Path

import pytest
from faults.framework import Fault, run_fault, tmp_case

from neurotorch.errors import CacheError, EncoderMemoryError, ParameterError
from neurotorch.models import LinearEncoder
from neurotorch.models.encoder_memory import EncoderSize, plan_memory
from neurotorch.models.ridge_statistics import RidgeStatistics

WHOLE_BRAIN = EncoderSize(n_features=1024, n_voxels=572_557, n_candidates=7, n_test_images=224)


def no_room_for_any_chunk(tmp: Path):
    """3 GB: not even the weights of 572,557 voxels and the kept trials fit."""
    return (lambda: plan_memory(WHOLE_BRAIN, available=(3 * 10**9, "a test"))), "572,557 voxels"


def chunk_too_large(tmp: Path):
    """22 GB with the statistics asked in memory: refused, naming the chunk that fits."""
    # that chunk, whatever room this disk has
    fits = plan_memory(WHOLE_BRAIN, available=(22 * 10**9, "a test"), scratch_free=10**13)
    fits = fits.voxel_chunk

    def call():
        plan_memory(WHOLE_BRAIN, 572_557, available=(22 * 10**9, "a test"))

    return call, f"voxel_chunk={fits:,}"


def scratch_folder_is_a_file(tmp: Path):
    blocker = tmp / "cache"
    blocker.write_text("not a folder")

    def call():
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("NEUROTORCH_CACHE", str(blocker))
            RidgeStatistics(8, 10, voxel_chunk=3, on_disk=True)

    return call, str(blocker)


def scratch_disk_too_small(tmp: Path):
    """Memory for anything, but 100 million voxels' cross-products (4 TB) on this disk."""
    size = EncoderSize(n_features=1024, n_voxels=100_000_000)

    def call():
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("NEUROTORCH_CACHE", str(tmp / "cache"))
            plan_memory(size, 1000, available=(10**18, "a test"))

    return call, str(tmp / "cache" / "scratch")


def setting(name: str, value):
    return lambda tmp: ((lambda: LinearEncoder(**{name: value})), name)


CASES = [
    tmp_case("memory-too-small-for-any-chunk", EncoderMemoryError, no_room_for_any_chunk),
    tmp_case("memory-too-small-for-the-chunk-asked", EncoderMemoryError, chunk_too_large),
    tmp_case("scratch-folder-not-writable", CacheError, scratch_folder_is_a_file),
    tmp_case("scratch-disk-too-small", CacheError, scratch_disk_too_small),
    tmp_case("voxel-chunk-not-an-integer", ParameterError, setting("voxel_chunk", 2.5)),
    tmp_case("voxel-chunk-zero", ParameterError, setting("voxel_chunk", 0)),
    tmp_case("precision-unknown", ParameterError, setting("precision", "float16")),
]


@pytest.mark.parametrize("fault", CASES, ids=[case.name for case in CASES])
def test_encoder_memory_fault(fault: Fault, tiny_laion_root, tmp_path, record_property):
    run_fault(fault, tiny_laion_root, tmp_path, record_property)


def test_the_refusal_says_what_to_use():
    with pytest.raises(EncoderMemoryError) as refused:
        plan_memory(WHOLE_BRAIN, 572_557, available=(22 * 10**9, "MemAvailable in /proc/meminfo"))
    message = str(refused.value)
    for said in ("572,557 voxels", "1,024 features", "GB", "MemAvailable", "Use voxel_chunk="):
        assert said in message
    assert isinstance(refused.value, MemoryError)  # ``except MemoryError`` catches it too
