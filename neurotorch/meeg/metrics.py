"""CaliBrain's error metrics of a source estimate: MSE, MAE, RMSE, RMAE, mean posterior std, EMD.

Sources are ``(N, T)`` (fixed orientation) or ``(N, K, T)`` (free; compared through the
amplitude ``||x_n(t)||`` over the K components). ``mode`` is ``"pointwise"`` (every time
sample) or ``"time_averaged"`` (CaliBrain's ``"aggregated"``: the time-averaged source, whose
posterior variance is ``var / T``). The definitions are CaliBrain's, including
``RMAE = sqrt(MAE)``.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linprog
from scipy.sparse import csr_array, eye_array, kron, vstack
from scipy.spatial.distance import cdist

from neurotorch._options import check_int, check_option
from neurotorch.errors import ParameterError, ShapeMismatchError
from neurotorch.meeg.calibration import COVERAGE_MODES, check_variances

#: Masses at or below this are left out of the earth mover's distance (CaliBrain's threshold).
EMD_EPS = 1e-12
#: Primal and dual feasibility tolerance of the transport LP.
_LP_TOLERANCE = 1e-10


def _check(x_true: np.ndarray, x_hat: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    check_option("mode", mode, COVERAGE_MODES)
    x_true, x_hat = np.asarray(x_true, np.float64), np.asarray(x_hat, np.float64)
    if x_true.shape != x_hat.shape or x_true.ndim not in (2, 3):
        raise ShapeMismatchError(
            f"x_true {x_true.shape} and x_hat {x_hat.shape} must be equal (N, T) or (N, K, T) arrays."
        )
    return x_true, x_hat


def _signal(x: np.ndarray, mode: str) -> np.ndarray:
    """What the error metrics compare: ``(N, T)`` pointwise, ``(N,)`` time-averaged."""
    if mode == "time_averaged":
        x = x.mean(axis=-1)
        return x if x.ndim == 1 else np.linalg.norm(x, axis=1)
    return x if x.ndim == 2 else np.linalg.norm(x, axis=1)


def error_metrics(
    x_true: np.ndarray, x_hat: np.ndarray, mode: str = "pointwise"
) -> dict[str, float]:
    """``mse``, ``mae``, ``rmse`` and ``rmae`` (``sqrt(mae)``, as CaliBrain) of an estimate."""
    x_true, x_hat = _check(x_true, x_hat, mode)
    diff = _signal(x_true, mode) - _signal(x_hat, mode)
    mse, mae = float(np.mean(diff**2)), float(np.mean(np.abs(diff)))
    return {"mse": mse, "mae": mae, "rmse": float(np.sqrt(mse)), "rmae": float(np.sqrt(mae))}


def mean_posterior_std(
    var: np.ndarray, n_times: int | None = None, mode: str = "pointwise"
) -> float:
    """Mean over sources of the posterior std (free orientation: ``sqrt(mean over K of var)``,
    i.e. of the trace of each block / K); time-averaged divides it by ``sqrt(n_times)``.
    Negative or non-finite variances are refused (`check_variances`)."""
    check_option("mode", mode, COVERAGE_MODES)
    var = check_variances(var)
    per_source = np.sqrt(var if var.ndim == 1 else var.mean(axis=1))
    if mode == "time_averaged":
        if n_times is None:
            raise ParameterError("mode='time_averaged' needs n_times (the samples per trial).")
        per_source = per_source / np.sqrt(check_int("n_times", n_times, minimum=1))
    return float(np.mean(per_source))


def _mass(x: np.ndarray, mode: str) -> np.ndarray:
    """Per-source mass: the time norm of the amplitude, or |time average| (vector norm)."""
    if mode == "time_averaged":
        mean = x.mean(axis=-1)
        return np.abs(mean) if mean.ndim == 1 else np.linalg.norm(mean, axis=1)
    amplitude = x if x.ndim == 2 else np.linalg.norm(x, axis=1)
    return np.linalg.norm(amplitude, axis=1)


def earth_movers_distance(
    x_true: np.ndarray, x_hat: np.ndarray, coords: np.ndarray, mode: str = "pointwise"
) -> float:
    """Optimal-transport distance (in the units of ``coords``) between the normalised source
    masses of truth and estimate, as CaliBrain's ``emd`` (``inf`` when either has no mass).

    Sources with mass above `EMD_EPS` form the two supports. When either support is one source,
    the distance is the mass-weighted mean distance to it; otherwise the transportation linear
    program is solved with HiGHS' simplex, without presolve (whose infeasibility test trips on
    the rounding of masses that sum to 1 on both sides, e.g. the 1e-14 masses of gamma-MAP's
    nearly pruned sources) and with feasibility tolerances of 1e-10, well below any mass kept.
    """
    x_true, x_hat = _check(x_true, x_hat, mode)
    coords = np.asarray(coords, np.float64)
    if coords.shape != (x_true.shape[0], 3):
        raise ShapeMismatchError(f"coords must be ({x_true.shape[0]}, 3), got {coords.shape}.")
    a, b = _mass(x_true, mode), _mass(x_hat, mode)
    keep_a, keep_b = a > EMD_EPS, b > EMD_EPS
    if not keep_a.any() or not keep_b.any():
        return float("inf")
    a, b = a[keep_a] / a[keep_a].sum(), b[keep_b] / b[keep_b].sum()
    cost = cdist(coords[keep_a], coords[keep_b])
    n, m = cost.shape
    if n == 1 or m == 1:  # one side is a single point: every unit of mass moves to (from) it
        return float(np.sum(cost * a[:, None] * b[None, :]))
    rows = kron(eye_array(n), csr_array(np.ones((1, m))))  # sum over j of P[i, j] = a_i
    cols = kron(csr_array(np.ones((1, n))), eye_array(m))  # sum over i of P[i, j] = b_j
    result = linprog(
        cost.ravel(),
        A_eq=vstack([rows, cols]),
        b_eq=np.concatenate([a, b]),
        bounds=(0, None),
        method="highs-ds",
        options={
            "presolve": False,
            "primal_feasibility_tolerance": _LP_TOLERANCE,
            "dual_feasibility_tolerance": _LP_TOLERANCE,
        },
    )
    if result.status != 0:
        raise ParameterError(
            f"The transport problem between {n} true and {m} estimated source masses could not "
            f"be solved ({result.message}); report the masses that trigger it."
        )
    return float(result.fun)
