"""Helpers of the M/EEG tests: one small MEG problem on a real MNE forward (29 cortex-like
sources, 23 magnetometers, two active sources and white noise of variance 4 fT²), and a fixture
that runs torch on one thread."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

NOISE_VAR = 4.0


def mag_problem(orientation: str = "fixed"):
    """``(fwd, info, leadfield data, y)`` with ``y = L x + noise`` (fT)."""
    from neurotorch.meeg.forward import (
        cortical_shell,
        forward_to_leadfield,
        make_forward,
        sensor_info,
        sphere_model,
    )

    rr, nn = cortical_shell(29, center=(0.0, 0.0, 0.0))
    info = sensor_info("mag", n_sensors=23)
    fwd = make_forward(info, rr, nn, sphere_model("mag"))
    data = forward_to_leadfield(fwd, orientation)
    flat = data.leadfield.reshape(23, -1)
    rng = np.random.default_rng(0)
    x = np.zeros((flat.shape[1], 31))
    x[[3, 17]] = 20.0 * rng.standard_normal((2, 31))
    y = flat @ x + np.sqrt(NOISE_VAR) * rng.standard_normal((23, 31))
    return fwd, info, data, y


@pytest.fixture
def one_torch_thread():
    """Run the test with one torch thread. The iterative solvers run hundreds of small batched
    operations per trial; on a busy 2-core machine their two intra-op threads wait for each
    other at every operation (gamma-MAP, 979 iterations on 25 sensors: 16.5 s with two threads,
    0.37 s with one, measured at load 7)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def folder_contents(folder) -> dict[str, bytes]:
    """Every file of ``folder`` by name: an HDF5 file as the bytes of its content (each dataset's
    name, dtype, shape and values, each attribute's name and value), any other file as its bytes.
    Two writers of the same arrays may place an HDF5 file's metadata at other offsets (seen: a
    chunk index allocated before or after the next dataset's header), so summaries are compared
    bit for bit by content, not by file layout."""
    import h5py

    contents = {}
    for path in sorted(Path(folder).iterdir()):
        if path.suffix != ".h5":
            contents[path.name] = path.read_bytes()
            continue
        parts = []
        with h5py.File(path, "r") as handle:
            for name in sorted(handle):
                values = np.ascontiguousarray(handle[name][()])
                parts.append(
                    f"{name}:{values.dtype.str}:{values.shape}:".encode() + values.tobytes()
                )
            for name in sorted(handle.attrs):
                parts.append(f"@{name}:".encode() + np.asarray(handle.attrs[name]).tobytes())
        contents[path.name] = b"\n".join(parts)
    return contents
