"""Streaming beyond one core, first use in one pass: the pass that verifies a betas file also
builds its seek index, and readers that start inside a file (a second worker, a second rank)
seek to their first volume instead of inflating what they do not serve."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from neurotorch.data.fmri import stream as stream_module
from neurotorch.data.fmri.stream import BetasStream
from neurotorch.data.loader import StreamLoader
from neurotorch.errors import CorruptFileError
from neurotorch.fmri import layout
from neurotorch.io import integrity, nifti, seek_index
from neurotorch.io.integrity import is_verified
from neurotorch.io.seek_index import has_index
from neurotorch.io.storage import DataRoot

SUBJECT = "sub-01"
SESSIONS = ("ses-01", "ses-02")


@pytest.fixture
def own_root(tiny_laion_root, tmp_path) -> Path:
    """A private copy of the tiny tree: its files are new to the cache (never verified)."""
    return Path(shutil.copytree(tiny_laion_root, tmp_path / "tree"))


def make_stream(root: Path, sessions=SESSIONS, **read) -> BetasStream:
    trials = {"sessions": list(sessions)}
    return BetasStream(
        root, SUBJECT, trials=trials, voxels={"roi": "face"}, features=None, read=read
    )


def betas_file(root: Path, session: str) -> Path:
    return root / layout.session_betas(SUBJECT, session)


def check_values(root: Path, stream: BetasStream, items) -> None:
    mask = stream.voxel_masks()[SUBJECT]
    loaded: dict[str, np.ndarray] = {}
    for item in items:
        session = item["session"]
        if session not in loaded:
            loaded[session] = np.asarray(nib.load(betas_file(root, session)).dataobj)
        volume = loaded[session][..., item["trial"]]
        np.testing.assert_array_equal(item["betas"].numpy(), volume[mask])


class Calls:
    """Counts the calls of a module function, passing them through."""

    def __init__(self, monkeypatch, module, name: str):
        self.args: list[tuple] = []
        real = getattr(module, name)

        def spy(*args, **kwargs):
            self.args.append(args)
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, spy)


def test_first_use_verifies_and_indexes_each_file_in_one_pass(own_root, monkeypatch):
    checks = Calls(monkeypatch, integrity, "check_file")
    builds = Calls(monkeypatch, seek_index, "_build")
    items = list(make_stream(own_root))
    root = DataRoot(own_root)
    for session in SESSIONS:
        relpath = layout.session_betas(SUBJECT, session)
        assert is_verified(root, relpath) and has_index(betas_file(own_root, session))
    assert checks.args == [] and len(builds.args) == 2  # one pass per file, not two
    again = list(make_stream(own_root))
    assert len(builds.args) == 2 and [i["trial"] for i in again] == [i["trial"] for i in items]


def test_a_second_rank_seeks_to_its_first_volume(own_root, monkeypatch):
    list(make_stream(own_root))  # first use: verified and indexed
    sequential = Calls(monkeypatch, stream_module, "iter_volumes")
    seeks = Calls(monkeypatch, stream_module, "iter_volume_range")
    stream = make_stream(own_root, sessions=["ses-01"])  # rank 1 starts inside the file
    stream.rank, stream.world_size = 1, 2
    items = list(stream)
    rows = stream.shard(1, 2)
    first_session = stream.trials["session"].to_numpy()[rows[0]]
    volumes = stream.trials["trial"].to_numpy()[rows]
    first_volume = int(volumes[0])
    wraps = bool(volumes[-1] < volumes[0])  # the padding of the last rank: volume 0 again
    assert first_volume > 0 and len(sequential.args) == int(wraps)  # none for its own block
    assert seeks.args[0][0] == str(betas_file(own_root, first_session))
    assert seeks.args[0][1] == first_volume
    check_values(own_root, stream, items)


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("read_ahead", [False, True], ids=["inline", "read-ahead"])
def test_streams_seek_and_serve_nibabel_values(own_root, monkeypatch, workers, read_ahead):
    # read-ahead: the tiny files take the helper-thread paths of real-size ones (with no workers
    # one thread inflates and another masks; each of two forked workers has one core)
    if read_ahead:
        monkeypatch.setattr(nifti, "_READ_AHEAD_MIN_BYTES", 0)
        monkeypatch.setattr(stream_module, "usable_cores", lambda: 2)
    stream = make_stream(own_root)
    loader = StreamLoader(stream, batch_size=7, num_workers=workers, persistent_workers=workers > 0)
    for _epoch in range(2):  # the second epoch from the same (persistent) workers
        items = [
            {"session": b["session"][k], "trial": int(b["trial"][k]), "betas": b["betas"][k]}
            for b in loader
            for k in range(len(b["session"]))
        ]
        assert sorted((i["session"], i["trial"]) for i in items) == sorted(
            zip(stream.trials["session"], stream.trials["trial"], strict=True)
        )
        check_values(own_root, stream, items)
    assert all(has_index(betas_file(own_root, session)) for session in SESSIONS)


def test_verification_off_spends_no_pass_on_an_index(own_root, monkeypatch):
    builds = Calls(monkeypatch, seek_index, "_build")
    stream = make_stream(own_root, sessions=["ses-01"], verify="off")
    stream.rank, stream.world_size = 1, 2
    check_values(own_root, stream, list(stream))
    assert builds.args == [] and not has_index(betas_file(own_root, "ses-01"))


def test_a_corrupt_file_is_neither_served_nor_indexed(own_root):
    path = betas_file(own_root, "ses-01")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))
    stream = make_stream(own_root)
    with pytest.raises(CorruptFileError, match=path.name):
        next(iter(stream))
    relpath = layout.session_betas(SUBJECT, "ses-01")
    assert not has_index(path) and not is_verified(DataRoot(own_root), relpath)
