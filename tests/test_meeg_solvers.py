"""eLORETA and gamma-MAP posteriors against independent dense computations, the generative model
they assume, and MNE; the solver entry point and its errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from meeg_helpers import mag_problem, one_torch_thread  # noqa: F401 - a fixture
from scipy import stats

from neurotorch.errors import NonFiniteError, ParameterError, ShapeMismatchError
from neurotorch.meeg.eloreta import eloreta_operator, eloreta_posterior, eloreta_weights
from neurotorch.meeg.solvers import (
    SOLVERS,
    PosteriorSpec,
    SolverName,
    fit_posterior,
    full_posterior_cov,
    make_solver,
)
from neurotorch.meeg.sparse_bayes import gamma_map_posterior, spatial_basis

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _problem(k: int, seed: int = 0, n_sensors: int = 13, n_sources: int = 31, n_times: int = 25):
    rng = np.random.default_rng(seed)
    shape = (n_sensors, n_sources) if k == 1 else (n_sensors, n_sources, k)
    lf = rng.standard_normal(shape) * 0.7
    flat = lf.reshape(n_sensors, -1)
    x = np.zeros((flat.shape[1], n_times))
    x[rng.choice(flat.shape[1], 3, replace=False)] = 5.0 * rng.standard_normal((3, n_times))
    y = flat @ x + 1.5 * rng.standard_normal((n_sensors, n_times))
    return lf, y


def _dense_posterior(lf: np.ndarray, prior: np.ndarray, noise_var: float, y: np.ndarray):
    """Textbook Gaussian posterior with a dense prior covariance (numpy, independent of torch)."""
    flat = lf.reshape(lf.shape[0], -1)
    cov_y = flat @ prior @ flat.T + noise_var * np.eye(flat.shape[0])  # noise: scalar or diag
    gain = prior @ flat.T @ np.linalg.inv(cov_y)
    return gain @ y, prior - gain @ flat @ prior


def _block_diag(blocks: np.ndarray) -> np.ndarray:
    n, k = blocks.shape[:2]
    out = np.zeros((n * k, n * k))
    for i, block in enumerate(blocks):
        out[i * k : (i + 1) * k, i * k : (i + 1) * k] = block
    return out


@pytest.mark.parametrize("k", [1, 3, 2])
def test_eloreta_weights_are_the_normalised_fixed_point(k):
    """R_n = (L_n^T (L R L^T + I)^-1 L_n)^-1/2 up to one common scale, trace(L R L^T) = M."""
    lf, _ = _problem(k)
    weights = eloreta_weights(torch.tensor(lf)).numpy()
    blocks = weights[:, None, None] if k == 1 else weights
    flat = lf.reshape(lf.shape[0], -1)
    prior = _block_diag(blocks)
    assert np.trace(flat @ prior @ flat.T) == pytest.approx(lf.shape[0], rel=1e-12)
    inv = np.linalg.inv(flat @ prior @ flat.T + np.eye(lf.shape[0]))
    per_source = flat.reshape(lf.shape[0], -1, k).transpose(1, 0, 2)
    target = []
    for block in per_source:
        vals, vecs = np.linalg.eigh(block.T @ inv @ block)
        target.append(vecs @ np.diag(vals**-0.5) @ vecs.T)
    target = np.stack(target)
    target *= lf.shape[0] / np.trace(flat @ _block_diag(target) @ flat.T)
    # the iteration stops once a step changes the weights by < 1e-6 (relative)
    np.testing.assert_allclose(blocks, target, rtol=0, atol=1e-5 * np.abs(target).max())


@pytest.mark.parametrize("k", [1, 3])
def test_eloreta_posterior_is_the_gaussian_posterior_of_its_prior(k):
    lf, y = _problem(k, seed=1)
    noise = np.array([2.25, 0.5])
    ys = np.stack([y, 0.3 * y])
    post = eloreta_posterior(torch.tensor(ys), torch.tensor(lf), torch.tensor(noise))
    weights = eloreta_weights(torch.tensor(lf)).numpy()
    blocks = weights[:, None, None] if k == 1 else weights
    for b in range(2):
        mean, cov = _dense_posterior(lf, noise[b] * _block_diag(blocks), noise[b], ys[b])
        np.testing.assert_allclose(
            post.mean[b].numpy().reshape(mean.shape), mean, rtol=1e-9, atol=1e-12
        )
        diag = np.diag(cov).reshape(-1, k)
        np.testing.assert_allclose(post.var[b].numpy().reshape(diag.shape), diag, rtol=1e-9)
        if k > 1:
            dense_blocks = np.stack(
                [cov[i * k : (i + 1) * k, i * k : (i + 1) * k] for i in range(len(blocks))]
            )
            np.testing.assert_allclose(
                post.cov_blocks[b].numpy(), dense_blocks, rtol=1e-9, atol=1e-12
            )


@pytest.mark.parametrize("lambda2", [1.0, 0.3, 4.0])
def test_eloreta_full_covariance_is_that_of_its_gaussian_model(lambda2):
    """What the grid writes as ``posterior_cov``: the posterior of eLORETA's model, prior
    ``σ² R`` and noise ``λ σ²`` (docs/meeg.md), for any ``lambda2``, as its mean is."""
    lf, y = _problem(1, seed=2)
    solver = make_solver("eloreta", {"lambda2": lambda2})
    prepared = solver.prepare(torch.tensor(lf))
    fit = solver.fit(torch.tensor(y)[None], torch.tensor(lf), prepared, noise_var=2.25)
    cov = full_posterior_cov(
        lf, fit.prior_blocks[0].numpy(), noise_var=fit.sensor_noise_var[0].numpy()
    )
    prior = 2.25 * np.diag(prepared.weights.numpy())
    mean, expected = _dense_posterior(lf, prior, lambda2 * 2.25, y)
    np.testing.assert_allclose(fit.posterior.mean[0].numpy(), mean, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(cov, expected, rtol=1e-9, atol=1e-12)


def test_eloreta_intervals_cover_at_the_nominal_rate_under_its_own_model():
    """Sources drawn from eLORETA's prior, noise at the assumed variance: the 90 % intervals of
    the posterior cover 90 % of the sources (CaliBrain's variance would cover ~91.4 % here)."""
    lf, _ = _problem(1, seed=2, n_sources=40)
    noise_var = 3.0
    weights = eloreta_weights(torch.tensor(lf)).numpy()
    rng = np.random.default_rng(7)
    n_trials, n_times = 800, 20
    x = rng.standard_normal((n_trials, 40, n_times)) * np.sqrt(noise_var * weights)[:, None]
    y = lf @ x + np.sqrt(noise_var) * rng.standard_normal((n_trials, lf.shape[0], n_times))
    post = eloreta_posterior(torch.tensor(y), torch.tensor(lf), noise_var)
    z = stats.norm.ppf(0.95)
    inside = np.abs(x - post.mean.numpy()) <= z * np.sqrt(post.var.numpy())[..., None]
    # (trial, sample) pairs are independent; the 40 sources of one pair are correlated, so their
    # mean varies by at most 0.9 * 0.1: a binomial bound over pairs (significance 1e-4) holds
    bound = stats.norm.ppf(1 - 1e-4 / 2) * np.sqrt(0.9 * 0.1 / (n_trials * n_times))
    assert abs(inside.mean() - 0.9) < bound


@pytest.mark.slow
@pytest.mark.parametrize("orientation", ["fixed", "free"])
def test_eloreta_mean_equals_mne(orientation):
    """MNE's eLORETA (`mne.minimum_norm`, lambda2 = 1) on the same MEG forward and data; free
    MEG leadfields have 2 tangential components, mapped to xyz with ``Q_basis``."""
    from neurotorch.meeg.inverse import minimum_norm

    fwd, info, data, y = mag_problem(orientation)
    ours = eloreta_posterior(torch.tensor(y)[None], torch.tensor(data.leadfield), 4.0).mean[0]
    ours = ours.numpy()
    if orientation == "free":
        ours = np.einsum("nck,nkt->nct", data.Q_basis, ours)
    theirs = minimum_norm(fwd, info, y, 4.0, "eLORETA", lambda2=1.0, orientation_type=orientation)
    # MNE rotates the fixed-orientation forward in float32
    atol = (1e-6 if orientation == "fixed" else 1e-10) * np.abs(theirs).max()
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=atol)


@pytest.mark.slow
def test_gamma_map_mean_matches_mne():
    """MNE's ``mne.inverse_sparse.gamma_map`` (alpha = 1, the same update) on the same MEG forward
    and data. MNE prunes gammas below its own threshold, which the CaliBrain recipe keeps; those
    sources carry < 1e-3 of the peak."""
    from neurotorch.meeg.inverse import gamma_map

    fwd, info, data, y = mag_problem()
    lf = data.leadfield
    ours = gamma_map_posterior(torch.tensor(y)[None], torch.tensor(lf), 4.0).posterior.mean[0]
    theirs = gamma_map(fwd, info, y, 4.0, alpha=1.0)
    np.testing.assert_allclose(ours.numpy(), theirs, rtol=0, atol=1e-3 * np.abs(theirs).max())


@pytest.mark.parametrize("learn_noise", [False, True])
@pytest.mark.parametrize("k", [1, 3])
def test_gamma_map_posterior_is_the_gaussian_posterior_of_its_learned_gammas(k, learn_noise):
    lf, y = _problem(k, seed=3)
    ys = np.stack([y, 2.0 * y + 0.1])
    noise = np.array([2.25, 9.0])
    given = None if learn_noise else torch.tensor(noise)
    res = gamma_map_posterior(torch.tensor(ys), torch.tensor(lf), given)
    assert res.noise_var.shape == (2, lf.shape[0])
    if not learn_noise:
        np.testing.assert_array_equal(res.noise_var.numpy(), noise[:, None].repeat(lf.shape[0], 1))
    for b in range(2):
        gamma = res.gamma[b].numpy().ravel()
        assert (gamma >= 0).all() and (gamma == 0).any()  # sparse: some sources pruned
        mean, cov = _dense_posterior(lf, np.diag(gamma), np.diag(res.noise_var[b].numpy()), ys[b])
        peak = np.abs(mean).max()
        np.testing.assert_allclose(
            res.posterior.mean[b].numpy().reshape(mean.shape), mean, rtol=0, atol=1e-9 * peak
        )
        diag = np.diag(cov)
        np.testing.assert_allclose(
            res.posterior.var[b].numpy().ravel(), diag, rtol=0, atol=1e-9 * diag.max()
        )
        if k > 1:
            groups = gamma.reshape(-1, k)
            assert np.all(groups == groups[:, :1])  # one gamma per free source


def test_gamma_map_gammas_are_a_fixed_point_of_the_update():
    """At convergence another step of the update (written out in numpy) moves gamma by about
    the stopping tolerance only."""
    lf, y = _problem(1, seed=4)
    noise = 2.25
    res = gamma_map_posterior(
        torch.tensor(y)[None], torch.tensor(lf), noise, max_iter=5000, tol=1e-10
    )
    gamma = res.gamma[0].numpy()
    cov_y = lf @ np.diag(gamma) @ lf.T + noise * np.eye(lf.shape[0])
    cinv_l = np.linalg.solve(cov_y, lf)
    a = cinv_l.T @ y
    updated = gamma * np.sqrt((a**2).mean(1)) / np.sqrt((lf * cinv_l).sum(0))
    assert np.abs(updated - gamma).sum() / gamma.sum() < 1e-8
    assert int(res.n_iter[0]) < 5000


def test_gamma_map_trials_are_independent_of_their_batch():
    lf, y = _problem(3, seed=5)
    ys = torch.tensor(np.stack([y, 0.5 * y[:, ::-1].copy(), y + 1.0]))
    batch = gamma_map_posterior(ys, torch.tensor(lf), torch.tensor([2.0, 1.0, 3.0]))
    alone = gamma_map_posterior(ys[1:2], torch.tensor(lf), 1.0)
    assert int(batch.n_iter[1]) == int(alone.n_iter[0])
    np.testing.assert_allclose(batch.gamma[1].numpy(), alone.gamma[0].numpy(), rtol=1e-9, atol=0)


@pytest.mark.parametrize(
    ("solver", "options", "noise"),
    [
        ("gamma_map", None, 2.0),
        ("gamma_map", None, None),
        ("BMN", {"normalization": True}, 2.0),
        ("eloreta", None, 2.0),
    ],
)
def test_full_posterior_cov_matches_the_batched_marginals(solver, options, noise):
    """The dense covariance of the grid's summaries (from the prior blocks, numpy) and the
    batched per-source blocks of the datasets (torch) are two computations of one posterior."""
    lf, y = _problem(3, seed=6)
    given = None if noise is None else torch.tensor([noise])
    strategy = make_solver(solver, options)
    fit = fit_posterior(strategy, torch.tensor(y)[None], torch.tensor(lf), noise_var=given)
    cov = full_posterior_cov(
        lf, fit.prior_blocks[0].numpy(), noise_var=fit.sensor_noise_var[0].numpy()
    )
    blocks = np.stack([cov[3 * i : 3 * i + 3, 3 * i : 3 * i + 3] for i in range(lf.shape[1])])
    np.testing.assert_allclose(
        blocks, fit.posterior.cov_blocks[0].numpy(), rtol=0, atol=1e-10 * np.abs(blocks).max()
    )


def test_per_leadfield_parts_are_computed_once_per_dataset(monkeypatch):
    """The sLORETA weights and eLORETA's operator depend on the leadfield only: one computation
    for many batches, not one per batch."""
    from neurotorch.data.meeg.calibration import CalibrationBatches
    from neurotorch.meeg.leadfield import random_leadfield
    from neurotorch.meeg.solvers import bmn, eloreta

    calls = []
    for module, name in ((bmn, "sloreta_weights"), (eloreta, "eloreta_operator")):
        original = getattr(module, name)
        monkeypatch.setattr(
            module, name, lambda *a, _f=original, _n=name, **k: calls.append(_n) or _f(*a, **k)
        )
    leadfield = random_leadfield("fixed", 9, 14, seed=1)
    for posterior in ({"options": {"normalization": True}}, {"solver": "eloreta"}):
        batches = CalibrationBatches(
            leadfield, batch_size=3, n_batches=4, nnz=(2,), alpha=(0.5,), posterior=posterior
        )
        assert len(list(batches)) == 4
    assert calls == ["sloreta_weights", "eloreta_operator"]


def _positions(n_sources: int, seed: int = 0) -> np.ndarray:
    """Source positions (m) a few millimetres to centimetres apart."""
    return np.random.default_rng(seed).uniform(-0.03, 0.03, (n_sources, 3))


@pytest.mark.parametrize("solver", SOLVERS)
def test_fit_posterior_reports_prior_and_noise(solver):
    """``gamma``, the prior blocks and the noise of each solver, against the solver's own
    module called directly: BMN's evidence maximisation, eLORETA's weights times the noise,
    gamma-MAP's (and sFlex's) learned gammas on the diagonal."""
    from neurotorch.meeg.posterior import learn_hyperparameters

    lf, y = _problem(1, seed=8)
    yt, lt, coords = torch.tensor(y)[None], torch.tensor(lf), _positions(lf.shape[1])
    fit = fit_posterior(solver, yt, lt, noise_var=torch.tensor([2.0]), src_coords=coords)
    if solver == "BMN":
        prior = learn_hyperparameters(yt, lt, 2.0)[0].expand(lf.shape[1])
    elif solver == "eloreta":
        prior = 2.0 * eloreta_weights(lt)
    else:
        basis = spatial_basis(coords) if solver == "gamma_map_sflex" else None
        prior = gamma_map_posterior(yt, lt, 2.0, basis=basis).gamma[0]
    blocks = fit.prior_blocks[0].numpy()
    np.testing.assert_allclose(blocks[:, 0, 0], prior.numpy(), rtol=1e-12)
    assert float(fit.gamma[0]) == pytest.approx(float(prior.mean()), rel=1e-12)
    np.testing.assert_array_equal(fit.sensor_noise_var.numpy(), np.full((1, lf.shape[0]), 2.0))
    if solver == "eloreta":  # the prior scales with the assumed noise, the mean does not
        double = fit_posterior(solver, yt, lt, noise_var=torch.tensor([4.0]))
        np.testing.assert_allclose(double.prior_blocks.numpy(), 2 * fit.prior_blocks.numpy())
        np.testing.assert_allclose(double.posterior.mean.numpy(), fit.posterior.mean.numpy())


@pytest.mark.parametrize("learn_noise", [False, True])
@pytest.mark.parametrize("k", [1, 3])
def test_sflex_posterior_is_the_gaussian_posterior_of_its_source_prior(k, learn_noise):
    """sFlex: sources x = (B kron I) c with the learned coefficient gammas; the posterior of x
    equals the textbook one with the prior covariance (B kron I) Gamma (B kron I)^T, and the
    dense covariance of the grid agrees with the batched blocks."""
    lf, y = _problem(k, seed=9)
    coords = _positions(lf.shape[1], seed=1)
    given = None if learn_noise else torch.tensor([2.25])
    sflex = make_solver("gamma_map_sflex", {"sigma": 0.015})
    yt, lt = torch.tensor(y)[None], torch.tensor(lf)
    fit = fit_posterior(sflex, yt, lt, noise_var=given, src_coords=coords)
    basis = spatial_basis(coords, 0.015).numpy()
    assert np.abs(basis - np.eye(len(basis))).max() > 0.05  # the basis mixes sources
    expand = np.kron(basis, np.eye(k))
    gammas = torch.diagonal(fit.prior_blocks[0], dim1=-2, dim2=-1).numpy().ravel()
    noise = np.diag(fit.sensor_noise_var[0].numpy())
    mean, cov = _dense_posterior(lf, expand @ np.diag(gammas) @ expand.T, noise, y)
    peak = np.abs(mean).max()
    np.testing.assert_allclose(
        fit.posterior.mean[0].numpy().reshape(mean.shape), mean, rtol=0, atol=1e-9 * peak
    )
    diag = np.diag(cov)
    var = fit.posterior.var[0].numpy().ravel()
    np.testing.assert_allclose(var, diag, rtol=0, atol=1e-9 * diag.max())
    full = full_posterior_cov(
        lf, fit.prior_blocks[0].numpy(), noise_var=np.diag(noise), basis=basis
    )
    np.testing.assert_allclose(full, cov, rtol=0, atol=1e-9 * diag.max())


def test_solver_options_are_checked():
    lf, y = _problem(1)
    lt = torch.tensor(lf)
    with pytest.raises(ParameterError, match=r"no option\(s\) \['sigma'\]"):
        make_solver("gamma_map", {"sigma": 0.01})
    bad_options = (
        {"sigma": 0.0},
        {"sigma": float("nan")},
        {"max_iter": 2.5},
        {"max_iter": True},
        {"tol": -1.0},
        {"normalize": "max"},
        {"threshold_factor": "3"},
    )
    for bad in bad_options:
        with pytest.raises(ParameterError, match=next(iter(bad))):
            make_solver("gamma_map_sflex", bad)
    with pytest.raises(ParameterError, match="src_coords"):
        make_solver("gamma_map_sflex").prepare(lt)
    with pytest.raises(ShapeMismatchError, match="src_coords"):
        spatial_basis(np.zeros((5, 2)))
    with pytest.raises(NonFiniteError, match="src_coords"):
        spatial_basis(np.full((5, 3), np.nan))
    with pytest.raises(ShapeMismatchError, match="eLORETA weights"):
        eloreta_operator(lt, weights=torch.ones(5))
    with pytest.raises(ShapeMismatchError, match="another leadfield"):
        eloreta_posterior(torch.tensor(y)[None], lt, 1.0, operator=eloreta_operator(lt[:, :7]))
    with pytest.raises(ShapeMismatchError, match="spatial basis"):
        gamma_map_posterior(torch.tensor(y)[None], lt, 1.0, basis=torch.eye(3))
    assert make_solver("eloreta", {"lambda2": 0.5}).options() == {"lambda2": 0.5}


def test_registry_keys_are_calibrains_names_and_the_config_type():
    """The registry's keys are the names a config may give (its Literal type lists them), each
    maps to a solver of that CaliBrain name with CaliBrain's default options."""
    from typing import get_args

    assert tuple(SOLVERS) == get_args(SolverName)
    defaults = {
        "BMN": {"normalization": False},
        "eloreta": {"lambda2": 1.0},
        "gamma_map": {"max_iter": 300, "tol": 1e-6},
        "gamma_map_sflex": {
            "max_iter": 300,
            "tol": 1e-6,
            "sigma": 0.01,
            "threshold_factor": 3.0,
            "normalize": "sym",
        },
    }
    for name, cls in SOLVERS.items():
        assert cls.name == name and make_solver(name).options() == defaults[name]
    joint = {
        n: PosteriorSpec(solver=n, noise_type="adaptive_joint_learning")
        for n in SOLVERS
        if n != "eloreta"
    }
    assert {n: spec.calibrain_name for n, spec in joint.items()} == {
        "BMN": "BMN_joint",
        "gamma_map": "gamma_lambda_map",
        "gamma_map_sflex": "gamma_lambda_map_sflex",
    }
    assert PosteriorSpec(solver="gamma_map", noise_type="baseline").calibrain_name == "gamma_map"


@pytest.mark.parametrize(
    ("solver", "gamma", "noise_type", "options", "match"),
    [
        ("sLORETA", "learn", "oracle", None, "solver='sLORETA' is not accepted"),
        ("eloreta", 2.0, "oracle", None, "learns its own source prior"),
        ("gamma_map", "learn", "baseline", {"normalization": True}, "normalization"),
        ("BMN", "learn", "oracle", {"normalization": 1}, "True or False"),
        ("eloreta", "learn", "adaptive_joint_learning", None, "adaptive_joint_learning"),
        ("BMN", "oracle", "adaptive_joint_learning", None, "adaptive_joint_learning"),
        ("BMN", "learn", "exact", None, "noise_type='exact' is not accepted"),
        ("BMN", "learnt", "oracle", None, "did you mean 'learn'"),
    ],
)
def test_posterior_spec_refuses_undefined_combinations(solver, gamma, noise_type, options, match):
    with pytest.raises(ParameterError, match=match):
        PosteriorSpec(solver=solver, gamma=gamma, noise_type=noise_type, options=options)


def test_bad_inputs_raise_named_errors():
    lf, y = _problem(1)
    yt, lt = torch.tensor(y)[None], torch.tensor(lf)
    with pytest.raises(ParameterError, match="lambda2"):
        eloreta_weights(lt, lambda2=0.0)
    with pytest.raises(ParameterError, match="lambda2"):
        eloreta_weights(lt, lambda2=float("nan"))
    with pytest.raises(ParameterError, match="noise_var"):
        eloreta_posterior(yt, lt, -1.0)
    with pytest.raises(ParameterError, match="noise_var"):
        gamma_map_posterior(yt, lt, 0.0)
    with pytest.raises(ParameterError, match="all zeros"):
        gamma_map_posterior(torch.zeros_like(yt), lt, 1.0)
    with pytest.raises(ParameterError, match="all zeros"):
        gamma_map_posterior(yt, torch.zeros_like(lt), 1.0)
    with pytest.raises(ParameterError, match="max_iter"):
        gamma_map_posterior(yt, lt, 1.0, max_iter=0)
    with pytest.raises(ShapeMismatchError):
        gamma_map_posterior(yt[:, :5], lt, 1.0)
    with pytest.raises(ShapeMismatchError):
        eloreta_posterior(yt, lt[:5], 1.0)
    bad = yt.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteError):
        gamma_map_posterior(bad, lt, 1.0)
    with pytest.raises(NonFiniteError):
        eloreta_posterior(bad, lt, 1.0)
