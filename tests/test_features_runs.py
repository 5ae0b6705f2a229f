"""Extraction over several processes: a run killed by SIGKILL resumes to the same bytes, DDP ranks
compute disjoint chunks whose union is the stimulus set, and local worker processes compute every
image once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from feature_models import TinyNet, extract_as_rank, logged, normalised, stimulus_images

from neurotorch.features import ExtractionOptions, FeatureSpec, ImageTransform, load_features
from neurotorch.features.forward import ExtractionJob

TESTS = Path(__file__).resolve().parent
TINY = ImageTransform(resize=32, crop=32)
N_CHUNKS = 7  # 109 images of the tiny tree in chunks of 16


@pytest.fixture
def workers_import_tests(monkeypatch):
    """Processes started by the test import the test models from this folder."""
    path = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p)
    monkeypatch.setenv("PYTHONPATH", path)


def options(cache: Path, **more) -> ExtractionOptions:
    return ExtractionOptions(chunk_size=16, batch_size=8, cache_dir=cache, **more)


def image_crcs(root: Path) -> list[str]:
    """The CRC-32 of each preprocessed image as the model receives it, in metadata order."""
    return [
        f"{zlib.crc32(normalised(image).numpy().tobytes()):08x}"
        for image in stimulus_images(root)[1]
    ]


def chunk_files(cache: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(cache)): p.read_bytes()
        for p in sorted((cache / "features").rglob("chunk-*"))
    }


@pytest.mark.slow
def test_a_killed_extraction_resumes_to_identical_bytes(
    tiny_laion_root, tmp_path, workers_import_tests, monkeypatch
):
    cache = tmp_path / "killed"
    script = (
        "import torch; torch.set_num_threads(1)\n"
        "from feature_models import TinyNet\n"
        "from neurotorch.features import ExtractionOptions, FeatureSpec, ImageTransform\n"
        "from neurotorch.features import extract_features\n"
        "spec = FeatureSpec(TinyNet(), layer='block', transform=ImageTransform(resize=32, crop=32))\n"
        f"options = ExtractionOptions(chunk_size=16, batch_size=8, cache_dir={str(cache)!r})\n"
        f"extract_features(spec, {str(tiny_laion_root)!r}, options=options)\n"
    )
    env = {**os.environ, "NEUROTORCH_TEST_KILL_AFTER": "7"}  # 2 batches a chunk: dies in chunk 3
    died = subprocess.run([sys.executable, "-c", script], env=env, timeout=300)
    assert died.returncode == -signal.SIGKILL
    (entry,) = [p for p in (cache / "features").iterdir() if p.name != "locks"]
    assert sorted(p.name for p in entry.glob("chunk-*.json")) == [
        f"chunk-{c:05d}.json" for c in range(3)
    ]
    assert not (entry / "manifest.json").exists()

    torch.set_num_threads(1)
    computed = []
    real = ExtractionJob.compute
    monkeypatch.setattr(
        ExtractionJob,
        "compute",
        lambda self, rows, pairs: computed.append(rows[0]) or real(self, rows, pairs),
    )
    spec = FeatureSpec(TinyNet(), layer="block", transform=TINY)
    resumed = load_features(spec, tiny_laion_root, options=options(cache))[spec.name]
    assert computed == [48, 64, 80, 96]  # the finished chunks were kept
    fresh = load_features(spec, tiny_laion_root, options=options(tmp_path / "fresh"))[spec.name]
    np.testing.assert_array_equal(resumed, fresh)
    assert chunk_files(cache) == chunk_files(tmp_path / "fresh")
    assert (entry / "manifest.json").read_bytes() == next(
        (tmp_path / "fresh" / "features").rglob("manifest.json")
    ).read_bytes()
    assert not [p for p in entry.iterdir() if ".tmp." in p.name]


@pytest.mark.slow
def test_two_ddp_ranks_compute_disjoint_chunks_whose_union_is_the_set(
    tiny_laion_root, tmp_path, workers_import_tests, monkeypatch
):
    cache, log = tmp_path / "cache", tmp_path / "forward.log"
    torch.multiprocessing.spawn(
        extract_as_rank,
        args=(2, str(tiny_laion_root), str(cache), str(log), str(tmp_path / "store")),
        nprocs=2,
    )
    crcs = image_crcs(tiny_laion_root)
    for rank in (0, 1):
        mine = [crc for _, crc in logged(Path(f"{log}.{rank}"))]
        expected = [crc for i, crc in enumerate(crcs) if (i // 16) % 2 == rank]
        assert sorted(mine) == sorted(expected), f"rank {rank} computed other images"
    monkeypatch.setattr(ExtractionJob, "compute", lambda *a: pytest.fail("computed again"))
    spec = FeatureSpec(TinyNet(), layer="block", transform=TINY)
    got = load_features(spec, tiny_laion_root, options=options(cache))[spec.name]
    monkeypatch.undo()
    torch.set_num_threads(1)
    single = load_features(spec, tiny_laion_root, options=options(tmp_path / "one"))[spec.name]
    np.testing.assert_array_equal(got, single)


@pytest.mark.slow
def test_two_worker_processes_compute_each_image_once(
    tiny_laion_root, tmp_path, workers_import_tests, monkeypatch
):
    log = tmp_path / "forward.log"
    monkeypatch.setenv("NEUROTORCH_TEST_FEATURE_LOG", str(log))
    spec = FeatureSpec(TinyNet(), layer="block", transform=TINY)
    two = load_features(
        spec, tiny_laion_root, options=options(tmp_path / "two", workers=2, num_workers=1)
    )
    lines = logged(log)
    assert sorted(crc for _, crc in lines) == sorted(image_crcs(tiny_laion_root))
    here = [crc for pid, crc in lines if pid == os.getpid()]
    assert sorted(here) == sorted(image_crcs(tiny_laion_root)[:16])  # the first chunk, here
    assert len({pid for pid, _ in lines} - {os.getpid()}) >= 1  # the rest in worker processes
    monkeypatch.delenv("NEUROTORCH_TEST_FEATURE_LOG")
    one = load_features(spec, tiny_laion_root, options=options(tmp_path / "one"))
    np.testing.assert_array_equal(two[spec.name], one[spec.name])
    assert chunk_files(tmp_path / "two").keys() == chunk_files(tmp_path / "one").keys()


def _workers_in_this_process(requested: int, answer) -> None:
    from neurotorch.features.forward import _dataloader_workers

    answer.put(_dataloader_workers(requested))


@pytest.mark.parametrize("daemon", [True, False])
def test_a_daemonic_worker_decodes_images_itself(daemon):
    """A daemonic process (a worker of an external Dask cluster) cannot start DataLoader
    workers: extraction asks for none there, and keeps the requested count elsewhere."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    answer = context.Queue()
    process = context.Process(target=_workers_in_this_process, args=(2, answer), daemon=daemon)
    process.start()
    process.join(30)
    assert answer.get(timeout=5) == (0 if daemon else 2)
