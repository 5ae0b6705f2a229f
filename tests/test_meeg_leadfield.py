"""Leadfields: MNE forward equivalence, fixed/free consistency, NPZ schema and scaling rules."""

from __future__ import annotations

import numpy as np
import pytest

from neurotorch.errors import (
    CorruptFileError,
    DataNotDownloadedError,
    FormatError,
    NonFiniteError,
    ParameterError,
    ShapeMismatchError,
    UnsafePickleError,
)
from neurotorch.meeg.leadfield import (
    LeadfieldBuilder,
    LeadfieldData,
    LeadfieldSpec,
    load_leadfield_npz,
    save_leadfield_npz,
)

mne = pytest.importorskip("mne")
pytestmark = pytest.mark.slow

N_SOURCES = 150


@pytest.fixture(scope="module")
def shell():
    from neurotorch.meeg.forward import cortical_shell

    return cortical_shell(N_SOURCES)


def _mne_forward(info, rr, nn, r0):
    """MNE's own forward for the same setup, built here without neurotorch."""
    src = mne.setup_volume_source_space(pos=dict(rr=rr, nn=nn), verbose=False)
    sphere = mne.make_sphere_model(r0=r0, head_radius=0.095, verbose=False)
    return mne.make_forward_solution(info, trans=None, src=src, bem=sphere, verbose=False)


@pytest.fixture(scope="module")
def eeg_reference(shell):
    rr, nn = shell
    montage = mne.channels.make_standard_montage("easycap-M43")
    info = mne.create_info(montage.ch_names, 250.0, "eeg")
    info.set_montage(montage)
    return _mne_forward(info, rr, nn, (0.0, 0.0, 0.04))


def test_eeg_simulate_equals_mne_forward(shell, eeg_reference):
    from neurotorch.meeg.forward import simulate_leadfield

    rr, nn = shell
    free = simulate_leadfield("free", sensor="eeg", src_coords=rr, src_normals=nn)
    fixed = simulate_leadfield("fixed", sensor="eeg", src_coords=rr, src_normals=nn)
    ref_free = eeg_reference["sol"]["data"].reshape(len(eeg_reference["info"]["chs"]), N_SOURCES, 3)
    # V/Am -> µV/nAm
    np.testing.assert_allclose(
        free.leadfield, ref_free * 1e-3, rtol=1e-5, atol=1e-6 * np.abs(ref_free).max() * 1e-3
    )
    assert (free.sensor_kind, free.sensor_units, free.sensor_unitmult, free.coil_type) == (
        2,
        107,
        -6,
        1,
    )
    assert free.ch_names == eeg_reference["info"]["ch_names"]
    np.testing.assert_allclose(free.Q_basis, np.broadcast_to(np.eye(3), (N_SOURCES, 3, 3)))
    # fixed == MNE's own surface-oriented fixed conversion == free projected on the normals
    ref_fixed = mne.convert_forward_solution(
        eeg_reference, surf_ori=True, force_fixed=True, verbose=False
    )
    scale = np.abs(ref_fixed["sol"]["data"]).max() * 1e-3
    np.testing.assert_allclose(
        fixed.leadfield, ref_fixed["sol"]["data"] * 1e-3, rtol=1e-4, atol=1e-5 * scale
    )
    np.testing.assert_allclose(
        fixed.leadfield, np.einsum("msk,sk->ms", ref_free * 1e-3, nn), rtol=1e-4, atol=1e-5 * scale
    )
    np.testing.assert_allclose(fixed.src_coords, rr)


def test_meg_free_keeps_two_tangential_components():
    from neurotorch.meeg.forward import cortical_shell, simulate_leadfield

    rr, nn = cortical_shell(N_SOURCES, center=(0.0, 0.0, 0.0))
    info = mne.channels.read_meg_canonical_info("neuromag")
    info = mne.pick_info(info, mne.pick_types(info, meg="mag"))
    ref = _mne_forward(info, rr, nn, (0.0, 0.0, 0.0))
    ref_free = ref["sol"]["data"].reshape(len(info["chs"]), N_SOURCES, 3) * 1e6  # T/Am -> fT/nAm
    free = simulate_leadfield("free", sensor="mag", src_coords=rr, src_normals=nn)
    fixed = simulate_leadfield("fixed", sensor="mag", src_coords=rr, src_normals=nn)
    assert free.leadfield.shape == (len(info["chs"]), N_SOURCES, 2)
    assert (free.sensor_units, free.sensor_unitmult) == (112, -15)
    q = free.Q_basis
    np.testing.assert_allclose(
        np.einsum("sij,sik->sjk", q, q), np.broadcast_to(np.eye(2), (N_SOURCES, 2, 2)), atol=1e-10
    )
    np.testing.assert_allclose(
        free.leadfield,
        np.einsum("msk,skj->msj", ref_free, q),
        rtol=1e-4,
        atol=1e-6 * np.abs(ref_free).max(),
    )
    # the dropped direction is radial: a radial dipole is silent in a spherical head
    radial = rr / np.linalg.norm(rr, axis=1, keepdims=True)
    assert np.abs(np.einsum("sij,si->sj", q, radial)).max() < 1e-3
    np.testing.assert_allclose(
        fixed.leadfield,
        np.einsum("msk,sk->ms", ref_free, nn),
        rtol=1e-4,
        atol=1e-6 * np.abs(ref_free).max(),
    )


def test_simulate_then_load_round_trips(tmp_path):
    builder = LeadfieldBuilder(tmp_path / "1284src_leadfield")
    made = builder.get_leadfield("demo", "free", "simulate", n_sources=60, return_metadata=True)
    loaded = builder.get_leadfield("demo", "free", "load", return_metadata=True)
    assert builder.path("demo", "free").name == "demo_free_leadfield.npz"
    np.testing.assert_array_equal(loaded.leadfield, made.leadfield)
    for key in ("sensor_kind", "sensor_units", "sensor_unitmult", "coil_type", "ch_names"):
        assert getattr(loaded, key) == getattr(made, key)
    np.testing.assert_array_equal(loaded.Q_basis, made.Q_basis)
    with pytest.raises(FormatError, match="free-orientation"):
        np.savez(
            builder.path("demo", "fixed"), leadfield=made.leadfield, src_coords=made.src_coords
        )
        builder.get_leadfield("demo", "fixed", "load")


@pytest.mark.parametrize(
    ("units", "unitmult", "factor", "expected_mult"),
    [
        (107, 0, 1e-3, -6),
        (112, 0, 1e6, -15),
        (201, 0, 1e6, -15),
        (107, -6, 1.0, -6),
        (112, -15, 1.0, -15),
    ],
)
def test_calibrain_npz_scaling(tmp_path, units, unitmult, factor, expected_mult):
    rng = np.random.default_rng(0)
    raw = rng.standard_normal((5, 7))
    path = tmp_path / "s_fixed_leadfield.npz"
    np.savez(
        path,
        leadfield=raw,
        sensor_kind=2 if units == 107 else 1,
        sensor_units=units,
        sensor_unitmult=unitmult,
        coil_type={107: 1, 112: 3022, 201: 3012}[units],
        src_coords=rng.standard_normal((7, 3)),
        Q_basis=np.zeros((7, 3, 0)),
    )
    data = load_leadfield_npz(path)
    np.testing.assert_allclose(data.leadfield, raw * factor)
    assert data.sensor_unitmult == expected_mult
    assert data.Q_basis is None and data.src_coords.shape == (7, 3)


def test_pickled_entries_are_skipped_unless_opted_in(tmp_path):
    raw = np.ones((4, 3))
    path = tmp_path / "p_fixed_leadfield.npz"
    np.savez(
        path,
        leadfield=raw,
        sensor_units=107,
        sensor_unitmult=0,
        Q_basis=np.array(None, dtype=object),
        info=np.array({"ch_names": ["E1", "E2", "E3", "E4"]}, dtype=object),
        src_coords=np.zeros((3, 3)),
    )
    data = load_leadfield_npz(path)
    assert sorted(data.skipped_keys) == ["Q_basis", "info"] and data.ch_names is None
    np.testing.assert_allclose(data.leadfield, raw * 1e-3)
    trusted = load_leadfield_npz(path, allow_pickle=True)
    assert trusted.skipped_keys == [] and trusted.ch_names == ["E1", "E2", "E3", "E4"]
    bad = tmp_path / "bad_fixed_leadfield.npz"
    np.savez(bad, leadfield=np.array([[object()]], dtype=object))
    with pytest.raises(UnsafePickleError, match="allow_pickle"):
        load_leadfield_npz(bad)


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(DataNotDownloadedError, match="missing_fixed"):
        LeadfieldBuilder(tmp_path).get_leadfield("missing", "fixed", "load")
    corrupt = tmp_path / "c_fixed_leadfield.npz"
    np.savez(corrupt, leadfield=np.ones((50, 50)))
    corrupt.write_bytes(corrupt.read_bytes()[:200])
    with pytest.raises(CorruptFileError, match="c_fixed_leadfield"):
        load_leadfield_npz(corrupt)
    with pytest.raises(FormatError, match="no 'leadfield'"):
        np.savez(tmp_path / "k.npz", other=np.ones(3))
        load_leadfield_npz(tmp_path / "k.npz")


def test_save_writes_the_calibrain_schema_without_pickle(tmp_path):
    data = LeadfieldData(
        np.arange(6.0).reshape(2, 3), 2, 107, -6, 1, np.zeros((3, 3)), None, ["a", "b"]
    )
    path = save_leadfield_npz(tmp_path / "x_fixed_leadfield.npz", data)
    with np.load(path, allow_pickle=False) as npz:
        assert npz["Q_basis"].shape == (3, 3, 0)
        assert int(npz["sensor_units"]) == 107 and list(npz["ch_names"]) == ["a", "b"]
        np.testing.assert_array_equal(npz["leadfield"], data.leadfield)


def test_random_mode_and_arguments(tmp_path):
    builder = LeadfieldBuilder(tmp_path)
    lf = builder.get_leadfield("r", "free", "random", n_sensors=4, n_sources=9, seed=1)
    assert lf.shape == (4, 9, 3)
    # CaliBrain's default random sizes
    assert builder.get_leadfield("r", "fixed", "random").shape == (64, 1284)
    with pytest.raises(ParameterError, match="n_sensors"):
        builder.get_leadfield("r", "fixed", "random", n_sensors=0)
    with pytest.raises(ParameterError, match="orientation_type"):
        builder.get_leadfield("r", "both", "random", n_sensors=2, n_sources=2)


def test_fixed_orientation_uses_head_frame_normals_under_a_rotated_transform():
    """With a rotated head<->MRI transform, fixed == MNE's surface-oriented fixed conversion and
    coordinates/normals come back in the head frame."""
    from scipy.spatial.transform import Rotation

    from neurotorch.meeg.forward import cortical_shell, simulate_leadfield

    rr, nn = cortical_shell(41)  # head frame
    rotation = Rotation.from_euler("xyz", [20, -35, 50], degrees=True).as_matrix()
    centre = np.array([0.0, 0.0, 0.04])  # rotate about the sphere centre: sources stay inside
    head_to_mri = np.eye(4)
    head_to_mri[:3, :3], head_to_mri[:3, 3] = rotation, centre - rotation @ centre
    trans = mne.transforms.Transform("head", "mri", head_to_mri)
    rr_mri, nn_mri = rr @ rotation.T + head_to_mri[:3, 3], nn @ rotation.T
    fixed = simulate_leadfield("fixed", src_coords=rr_mri, src_normals=nn_mri, trans=trans)
    info = mne.create_info(fixed.ch_names, 250.0, "eeg")
    info.set_montage(mne.channels.make_standard_montage("easycap-M43"))
    src = mne.setup_volume_source_space(pos=dict(rr=rr_mri, nn=nn_mri), verbose=False)
    sphere = mne.make_sphere_model(r0=tuple(centre), head_radius=0.095, verbose=False)
    ref = mne.make_forward_solution(info, trans=trans, src=src, bem=sphere, verbose=False)
    ref_fixed = mne.convert_forward_solution(ref, surf_ori=True, force_fixed=True, verbose=False)
    expected = ref_fixed["sol"]["data"].astype(np.float64) * 1e-3  # V/Am -> µV/nAm
    scale = np.abs(expected).max()
    # MNE rotates in float32: a 3-term dot product is within 3 float32 roundings of the scale
    np.testing.assert_allclose(fixed.leadfield, expected, rtol=0, atol=4 * 2.0**-24 * scale)
    # the MRI-frame normals give a different (wrong) projection
    free = ref["sol"]["data"].astype(np.float64).reshape(len(info["chs"]), 41, 3) * 1e-3
    assert np.abs(np.einsum("msk,sk->ms", free, nn_mri) - expected).max() > 0.1 * scale
    np.testing.assert_allclose(fixed.src_coords, rr, atol=1e-12)
    np.testing.assert_allclose(fixed.src_normals, nn, atol=1e-12)


@pytest.mark.parametrize(
    ("sensor", "coil", "mne_coil"), [("eeg", 1, 1), ("mag", 3022, 3024), ("grad", 3012, 3012)]
)
def test_coil_type_is_calibrain_class_and_mne_type_is_kept(tmp_path, sensor, coil, mne_coil):
    from neurotorch.meeg.forward import sensor_info, simulate_leadfield

    data = simulate_leadfield("free", n_sources=12, sensor=sensor, n_sensors=6)
    # independent: MNE's own channel description of the same sensors
    assert sensor_info(sensor, n_sensors=6)["chs"][0]["coil_type"] == mne_coil
    assert (data.coil_type, data.mne_coil_type) == (coil, mne_coil)
    assert data.n_components == (3 if sensor == "eeg" else 2)
    loaded = load_leadfield_npz(save_leadfield_npz(tmp_path / "s_free_leadfield.npz", data))
    assert (loaded.coil_type, loaded.mne_coil_type) == (coil, mne_coil)


def _valid_npz(path, **overrides):
    rng = np.random.default_rng(0)
    normals = rng.standard_normal((5, 3))
    arrays = {
        "leadfield": rng.standard_normal((4, 5)),
        "src_coords": rng.standard_normal((5, 3)) * 0.05,
        "src_normals": normals / np.linalg.norm(normals, axis=1, keepdims=True),
        "sensor_units": 107,
        "sensor_unitmult": -6,
    }
    arrays.update(overrides)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [
        ({"src_coords": None}, FormatError, "no numeric 'src_coords'"),
        ({"src_coords": np.zeros(5)}, FormatError, "no numeric 'src_coords'"),
        (
            {"leadfield": np.where(np.eye(4, 5) > 0, np.nan, 1.0)},
            NonFiniteError,
            "leadfield.*4 NaN",
        ),
        ({"leadfield": np.full((4, 5), np.inf)}, NonFiniteError, "leadfield"),
        ({"src_coords": np.full((5, 3), np.nan)}, NonFiniteError, "src_coords"),
        ({"src_coords": np.zeros((4, 3))}, FormatError, "src_coords.*expected \\(5, 3\\)"),
        ({"src_normals": np.ones((5, 3))}, FormatError, "unit vectors"),
        ({"leadfield": np.ones((4, 0))}, FormatError, "non-empty"),
        ({"ch_names": np.array(["a", "b", "a", "c"])}, FormatError, "more than once"),
        ({"ch_names": np.array(["a", "b"])}, FormatError, "2 channels for 4"),
        (
            {"leadfield": np.ones((4, 5, 2)), "coil_type": 1},
            FormatError,
            "2 components.*coil_type 1 needs 3",
        ),
        (
            {"leadfield": np.ones((4, 5, 3)), "Q_basis": np.ones((5, 3, 3))},
            FormatError,
            "orthonormal",
        ),
    ],
)
def test_bad_leadfield_files_raise_named_errors(tmp_path, overrides, error, match):
    path = _valid_npz(tmp_path / "bad_fixed_leadfield.npz", **overrides)
    with pytest.raises(error, match=match) as info:
        load_leadfield_npz(path)
    assert "bad_fixed_leadfield" in str(info.value)


def test_leadfield_without_coordinates_loads_on_request(tmp_path):
    path = _valid_npz(tmp_path / "legacy_fixed_leadfield.npz", src_coords=None)
    assert load_leadfield_npz(path, require_src_coords=False).src_coords is None
    assert load_leadfield_npz(_valid_npz(tmp_path / "ok.npz")).src_coords.shape == (5, 3)


def test_memory_modes_need_no_data_root(monkeypatch):
    """``"random"`` and ``"simulate"`` (without saving) read no file: no folder and no
    CALIBRAIN_DATA needed; ``"load"`` says which variable to set."""
    from neurotorch.errors import DataDirNotSetError

    monkeypatch.delenv("CALIBRAIN_DATA", raising=False)
    builder = LeadfieldBuilder()
    assert builder.get_leadfield("x", "free", "random", n_sensors=3, n_sources=4).shape == (3, 4, 3)
    simulated = builder.get_leadfield(
        "x", "fixed", "simulate", n_sources=10, n_sensors=5, save=False, return_metadata=True
    )
    assert simulated.leadfield.shape == (5, 10) and simulated.units == "µV/nAm"
    with pytest.raises(DataDirNotSetError, match="CALIBRAIN_DATA"):
        builder.get_leadfield("x", "fixed", "load")


def test_calibrain_simulate_mode_files_load_without_positions(tmp_path):
    """CaliBrain's simulate mode writes leadfield, sensor units, multiplier, kind and coil type
    only (no ``src_coords``): refused by default, naming the option, read with it."""
    rng = np.random.default_rng(2)
    raw = rng.standard_normal((7, 11)) * 1e-9  # T/Am, raw SI
    np.savez(
        tmp_path / "demo_fixed_leadfield.npz",
        leadfield=raw,
        sensor_units=112,
        sensor_unitmult=0,
        sensor_kind=1,
        coil_type=3022,
    )
    builder = LeadfieldBuilder(tmp_path)
    with pytest.raises(FormatError, match="require_src_coords=False"):
        builder.get_leadfield("demo")
    trusting = LeadfieldBuilder(tmp_path, require_src_coords=False)
    data = trusting.get_leadfield("demo", return_metadata=True)
    np.testing.assert_allclose(data.leadfield, raw * 1e6)  # T/Am -> fT/nAm
    assert data.src_coords is None and data.units == "fT/nAm"
    spec = LeadfieldSpec(data_dir=str(tmp_path.parent), subject="demo", require_src_coords=False)
    with pytest.raises(DataNotDownloadedError):  # the spec reads <root>/1284src_leadfield
        spec.build()
    with pytest.raises(ShapeMismatchError, match="n_sources=12"):
        trusting.get_leadfield("demo", n_sources=12)


def test_a_silent_source_is_accepted_and_listed(capsys):
    """One all-zero column (a source no sensor sees) is physically possible: accepted, listed
    and warned about; an all-zero leadfield is not."""
    from neurotorch.errors import ImplausibleDataError

    leadfield = np.random.default_rng(0).standard_normal((4, 6))
    leadfield[:, 2] = 0.0
    data = LeadfieldData(leadfield, source="silent.npz")
    assert data.silent_sources.tolist() == [2]
    warning = capsys.readouterr().err
    assert "silent.npz" in warning and "[2]" in warning
    with pytest.raises(ImplausibleDataError, match="all zeros"):
        LeadfieldData(np.zeros((4, 6, 3)))
    assert repr(data) == (
        "LeadfieldData(fixed, sensors, 4 sensors x 6 sources x 1 component(s), a.u./nAm, "
        "from silent.npz)"
    )
