"""Print how neurotorch's posteriors compare with CaliBrain's own solvers on identical inputs.

For eLORETA, gamma-MAP (known noise and per-sensor noise learning) and sFlex, on random
leadfields with two active sources, it prints the iteration counts, whether the pruned sets
agree, and the largest differences of the learned quantities and of the posterior mean and
variance (relative to their peaks), at CaliBrain's default tolerance and at 1e-11. For eLORETA it
also prints the coverage of 90 % intervals for sources drawn from eLORETA's own model, with
neurotorch's variance and with CaliBrain's. Needs ``calibrain`` (the ``dev`` extra). Runs torch
and numpy on one thread: the problems are tiny, and two threads per operation only wait for each
other (many times slower on a busy machine).

    python scripts/calibrain_parity.py
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from scipy import stats

from neurotorch.meeg.eloreta import eloreta_posterior, eloreta_weights
from neurotorch.meeg.forward import cortical_shell
from neurotorch.meeg.sparse_bayes import gamma_map_posterior, spatial_basis

QUIET = logging.getLogger("calibrain-parity")


def problem(k: int, n_sensors: int, n_sources: int, amplitude: float, noise_sd, seed: int):
    rng = np.random.default_rng(seed)
    shape = (n_sensors, n_sources) if k == 1 else (n_sensors, n_sources, k)
    lf = rng.standard_normal(shape) * 0.3
    flat = lf.reshape(n_sensors, -1)
    x = np.zeros((flat.shape[1], 40))
    x[[2, 11]] = amplitude * rng.standard_normal((2, 40))
    return lf, flat, flat @ x + noise_sd * rng.standard_normal((n_sensors, 40))


def relative(ours: np.ndarray, theirs: np.ndarray) -> float:
    scale = max(np.abs(theirs).max(), np.abs(ours).max())
    return float(np.abs(ours - theirs).max() / scale) if scale > 0 else 0.0


def row(name: str, **values) -> None:
    cells = "  ".join(
        f"{key} {value:.1e}" if isinstance(value, float) else f"{key} {value}"
        for key, value in values.items()
    )
    print(f"{name:<34} {cells}")


def eloreta_rows() -> None:
    from calibrain.source_estimation import eloreta

    lf, _, y = problem(1, 17, 29, 3.0, 2.0, seed=11)
    for noise_var in (4.0, 0.01):
        ref = eloreta(lf, y, noise_var, n_orient=1, logger=QUIET)
        post = eloreta_posterior(torch.tensor(y)[None], torch.tensor(lf), noise_var)
        theirs = np.diag(ref["posterior_cov"])
        ratio = theirs / post.var[0].numpy()
        row(
            f"eloreta fixed, noise {noise_var:g}",
            mean=relative(post.mean[0].numpy(), ref["posterior_mean"]),
            var_ratio_min=float(ratio.min()),
            var_ratio_max=float(ratio.max()),
        )
    # coverage of 90 % intervals for sources drawn from eLORETA's own prior
    lf, _, _ = problem(1, 13, 40, 0.0, 0.0, seed=2)
    noise_var, rng = 3.0, np.random.default_rng(7)
    weights = eloreta_weights(torch.tensor(lf)).numpy()
    x = rng.standard_normal((800, 40, 20)) * np.sqrt(noise_var * weights)[:, None]
    y = lf @ x + np.sqrt(noise_var) * rng.standard_normal((800, lf.shape[0], 20))
    post = eloreta_posterior(torch.tensor(y), torch.tensor(lf), noise_var)
    _, s, vt = np.linalg.svd(lf * np.sqrt(weights), full_matrices=False)
    leads = np.sqrt(noise_var * weights)[:, None] * vt.T
    shrink2 = (s**2 / (s**2 + 1.0)) ** 2  # CaliBrain's aliased product, per unit noise
    aliased = noise_var * weights - np.einsum("ik,k,ik->i", leads, shrink2, leads)
    z = stats.norm.ppf(0.95)
    error = np.abs(x - post.mean.numpy())

    def coverage(var: np.ndarray) -> float:
        return float((error <= z * np.sqrt(var)[..., None]).mean())

    print(
        f"{'eloreta 90 % intervals, own model':<34} coverage: neurotorch "
        f"{coverage(post.var.numpy()):.3f}, CaliBrain's aliased product "
        f"{coverage(aliased[None]):.3f}, CaliBrain's variance (also x noise {noise_var:g}) "
        f"{coverage(noise_var * aliased[None]):.3f}"
    )


def gamma_map_rows() -> None:
    from calibrain.source_estimation import gamma_lambda_map, gamma_map

    for k in (1, 3):
        for learn in (False, True):
            n_sensors = 17 if k == 1 or not learn else 60
            noise_sd = 0.3 * np.linspace(0.5, 2.0, n_sensors)[:, None] if learn else 0.5
            lf, flat, y = problem(k, n_sensors, 29, 10.0 if learn else 3.0, noise_sd, seed=k)
            for tol, max_iter in ((1e-6, 300), (1e-11, 20000)):
                common = dict(n_orient=k, tol=tol, max_iter=max_iter, logger=QUIET)
                if learn:
                    ref = gamma_lambda_map(flat, y, **common)
                    their_iter, their_noise = len(ref["err_gamma_hist"]), ref["lambdas"]
                else:
                    ref = gamma_map(flat, y, 0.25, **common)
                    their_iter, their_noise = ref["n_iter"], np.full(n_sensors, 0.25)
                res = gamma_map_posterior(
                    torch.tensor(y)[None],
                    torch.tensor(lf),
                    None if learn else 0.25,
                    max_iter=max_iter,
                    tol=tol,
                )
                gamma = res.gamma[0].numpy().ravel()
                name = "gamma_lambda_map" if learn else "gamma_map"
                row(
                    f"{name} k={k} tol {tol:g}",
                    iterations=f"{int(res.n_iter[0])}/{their_iter}",
                    same_pruned=bool(np.array_equal(np.flatnonzero(gamma), ref["active_indices"])),
                    noise=relative(res.noise_var[0].numpy(), their_noise),
                    mean=relative(
                        res.posterior.mean[0].numpy().reshape(flat.shape[1], -1),
                        ref["posterior_mean"].reshape(flat.shape[1], -1),
                    ),
                    var=relative(
                        res.posterior.var[0].numpy().ravel(), np.diag(ref["posterior_cov"])
                    ),
                )


def sflex_rows() -> None:
    from calibrain.source_estimation import compute_B, gamma_map_sflex

    for k, n_sources, n_sensors in ((1, 30, 20), (3, 20, 36)):
        rr, _ = cortical_shell(n_sources, center=(0.0, 0.0, 0.0))
        basis = spatial_basis(rr, 0.02)
        row(
            f"sflex basis (sym), {n_sources} sources",
            basis=relative(basis.numpy(), compute_B(0.02, src_coords=rr).toarray()),
        )
        lf, flat, y = problem(k, n_sensors, n_sources, 5.0, 0.5, seed=k)
        for tol, max_iter in ((1e-6, 300), (1e-11, 20000)):
            ref = gamma_map_sflex(
                flat,
                y,
                0.25,
                n_orient=k,
                sigma=0.02,
                src_coords=rr,
                tol=tol,
                max_iter=max_iter,
                logger=QUIET,
            )
            res = gamma_map_posterior(
                torch.tensor(y)[None],
                torch.tensor(lf),
                0.25,
                max_iter=max_iter,
                tol=tol,
                basis=basis,
            )
            row(
                f"gamma_map_sflex k={k} tol {tol:g}",
                iterations=f"{int(res.n_iter[0])}/{ref['n_iter']}",
                mean=relative(
                    res.posterior.mean[0].numpy().reshape(flat.shape[1], -1),
                    ref["posterior_mean"].reshape(flat.shape[1], -1),
                ),
                var=relative(res.posterior.var[0].numpy().ravel(), np.diag(ref["posterior_cov"])),
            )


def main() -> None:
    try:
        import calibrain  # noqa: F401
    except ImportError as exc:
        raise SystemExit(
            f"error: this comparison needs CaliBrain, which is not installed ({exc}); "
            'install the dev extra: pip install -e ".[dev]"'
        ) from None
    from threadpoolctl import threadpool_limits

    logging.getLogger("calibrain").setLevel(logging.ERROR)
    torch.set_num_threads(1)
    threadpool_limits(1)
    print("neurotorch vs CaliBrain 1.0.3 on identical inputs (relative to the peak)")
    eloreta_rows()
    gamma_map_rows()
    sflex_rows()


if __name__ == "__main__":
    main()
