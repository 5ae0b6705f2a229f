"""Mutation check: apply realistic bugs to a copy of the package and see whether the tests catch them.

Each mutant replaces one exact piece of source (which must occur exactly once) in a scratch copy of
the repository and runs the named tests there; a mutant is *caught* when those tests fail. A
mutant that survives marks a behaviour no test guards.

    python scripts/mutation_check.py                 # every mutant
    python scripts/mutation_check.py --list          # names only
    python scripts/mutation_check.py worker-remainder-dropped grouped-padding-removed

Exit status 1 when a mutant survives or no longer applies (its source changed: update the list).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str
    original: str
    mutated: str
    tests: tuple[str, ...]


MUTANTS = [
    Mutant(
        "worker-remainder-dropped",
        "neurotorch/data/sharding.py",
        "    return mine[batch_runs[0] * batch_size : (batch_runs[-1] + 1) * batch_size]",
        "    return mine[batch_runs[0] * batch_size : (batch_runs[-1] + 1) * batch_size]"
        "[: per_rank // batch_size * batch_size or None]",
        (
            "tests/test_sharding.py",
            "tests/test_exactly_once.py::test_one_process_sees_every_item_once",
        ),
    ),
    Mutant(
        "rank-padding-removed",
        "neurotorch/data/sharding.py",
        "    mine = np.arange(rank * per_rank, (rank + 1) * per_rank) % n",
        "    mine = np.arange(rank * per_rank, min((rank + 1) * per_rank, n))",
        ("tests/test_sharding.py",),
    ),
    Mutant(
        "grouped-padding-removed",
        "neurotorch/data/sampling.py",
        "        for k in shard_positions(len(batches), rank, size):",
        "        for k in shard_positions(len(batches), rank, size, drop_last=True):",
        ("tests/test_sharding.py",),
    ),
    Mutant(
        "workers-not-batch-aligned",
        "neurotorch/data/loader.py",
        "            dataset.batch_size, dataset.drop_last = check_batch_size(batch_size), drop_last",
        "            dataset.drop_last = drop_last",
        ("tests/test_exactly_once.py::test_one_process_sees_every_item_once",),
    ),
    Mutant(
        "rank-not-pinned-for-workers",
        "neurotorch/data/loader.py",
        "        self.dataset.pin_shard()\n",
        "",
        ("tests/test_sharding.py::test_workers_of_a_spawned_rank_read_that_ranks_shard",),
    ),
    Mutant(
        "float-scaling-in-float32",
        "neurotorch/io/nifti.py",
        "        return np.result_type(dtype, np.float64)",
        "        return np.result_type(dtype, np.float32)",
        ("tests/test_io_nifti_header.py",),
    ),
    Mutant(
        "qfac-ignored",
        "neurotorch/io/nifti_header.py",
        "        zooms[2] *= pixdim[0]  # qfac: -1 flips the third axis",
        "",
        ("tests/test_io_nifti_header.py",),
    ),
    Mutant(
        "store-session-rebuilt-every-call",
        "neurotorch/data/store.py",
        "    if found is None or any(found.get(key) != value for key, value in expected.items()):",
        "    if True:",
        ("tests/test_data_store.py::test_touching_the_source_or_changing_the_mask_rebuilds",),
    ),
    Mutant(
        "network-map-subjects-ignored",
        "neurotorch/connectome/lnm.py",
        "    subjects = _checked_subjects(subjects, batches.n_subjects)",
        "    subjects = _checked_subjects(None, batches.n_subjects)",
        ("tests/test_connectome_lnm_edges.py::test_subject_subset_matches_a_direct_computation",),
    ),
    Mutant(
        "batch-out-of-sampler-order",
        "neurotorch/data/betas.py",
        "        asked_order = np.argsort(read_order)",
        "        asked_order = np.arange(len(read_order))",
        ("tests/test_data_betas.py::test_a_batch_comes_back_in_the_order_asked_for",),
    ),
    Mutant(
        "ridge-intercept-sign-flipped",
        "neurotorch/models/ridge.py",
        "        every = torch.arange(self.stats.n_folds)\n"
        "        f, mean_x, mean_y, eigvals, eigvecs, projected = self._eigen(every, gamma)\n"
        "        w = eigvecs @ (projected[:, targets] / (eigvals[:, None] + alphas[None, :]))\n"
        "        return f[:, None] * w, mean_y[targets] - mean_x @ w",
        "        every = torch.arange(self.stats.n_folds)\n"
        "        f, mean_x, mean_y, eigvals, eigvecs, projected = self._eigen(every, gamma)\n"
        "        w = eigvecs @ (projected[:, targets] / (eigvals[:, None] + alphas[None, :]))\n"
        "        return f[:, None] * w, -(mean_y[targets] - mean_x @ w)",
        ("tests/test_encoder_ridge.py",),
    ),
    Mutant(
        "ridge-worst-penalty-chosen",
        "neurotorch/models/ridge.py",
        "    best = scores.argmax(0) if per_target else scores.mean(1).argmax().expand(scores.shape[1])",
        "    best = scores.argmin(0) if per_target else scores.mean(1).argmin().expand(scores.shape[1])",
        ("tests/test_encoder_ridge.py",),
    ),
    Mutant(
        "eloreta-noise-applied-twice",
        "neurotorch/meeg/eloreta.py",
        "    blocks = noise_var[:, None, None, None] * operator.unit_blocks",
        "    blocks = noise_var[:, None, None, None] ** 2 * operator.unit_blocks",
        ("tests/test_meeg_solvers.py",),
    ),
    Mutant(
        "eloreta-weights-not-normalised",
        "neurotorch/meeg/eloreta.py",
        "    return prior * (n_sensors / torch.trace(_sensor_cov(blocks, prior)))",
        "    return prior",
        ("tests/test_meeg_solvers.py",),
    ),
    Mutant(
        "gamma-map-free-gamma-not-shared",
        "neurotorch/meeg/sparse_bayes.py",
        "    new = (numer / root / k).repeat_interleave(k, dim=1).clamp_min(0.0)",
        "    new = (numer / root).repeat_interleave(k, dim=1).clamp_min(0.0)",
        ("tests/test_meeg_calibrain_interop.py::test_gamma_map_posterior_against_calibrain",),
    ),
    Mutant(
        "gamma-map-variance-internal-units",
        "neurotorch/meeg/sparse_bayes.py",
        "    var_scale = (scale**2).reshape(-1, *[1] * (posterior.var.ndim - 1))",
        "    var_scale = scale.reshape(-1, *[1] * (posterior.var.ndim - 1))",
        ("tests/test_meeg_solvers.py",),
    ),
    Mutant(
        "gamma-map-noise-update-without-root",
        "neurotorch/meeg/sparse_bayes.py",
        "        (numer_noise.clamp_min(0.0) / diag.clamp_min(_LAMBDA_FLOOR)).sqrt(),",
        "        (numer_noise.clamp_min(0.0) / diag.clamp_min(_LAMBDA_FLOOR)),",
        (
            "tests/test_meeg_calibrain_interop.py::test_gamma_map_with_learned_sensor_noise_against_calibrain",
        ),
    ),
    Mutant(
        "sflex-prior-without-basis",
        "neurotorch/meeg/sparse_bayes.py",
        '        prior = torch.einsum("nj,bjk->bnk", basis**2, prior)',
        '        prior = torch.einsum("nj,bjk->bnk", basis, prior)',
        ("tests/test_meeg_solvers.py",),
    ),
]


def _copy_repo(target: Path) -> None:
    ignore = shutil.ignore_patterns(
        ".git", ".ci-venv", ".venv", "__pycache__", "*.egg-info", ".pytest_cache", ".hypothesis",
        "lightning_logs", "runs", "notebooks",
    )  # fmt: skip
    shutil.copytree(REPO, target, ignore=ignore, dirs_exist_ok=True)


def run_mutant(mutant: Mutant, scratch: Path) -> str:
    """``caught``, ``survived`` or ``stale`` (the original source is not found exactly once)."""
    copy = scratch / mutant.name
    _copy_repo(copy)
    source = copy / mutant.path
    text = source.read_text()
    if text.count(mutant.original) != 1:
        return "stale"
    source.write_text(text.replace(mutant.original, mutant.mutated))
    env = dict(os.environ, PYTHONPATH=str(copy), NEUROTORCH_PROGRESS="0")
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *mutant.tests]
    result = subprocess.run(command, cwd=copy, env=env, capture_output=True, text=True)
    return (
        "caught" if result.returncode == 1 else ("survived" if result.returncode == 0 else "error")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="mutants to run (default: all)")
    parser.add_argument("--list", action="store_true", help="print the mutants' names and exit")
    args = parser.parse_args(argv)
    known = {m.name: m for m in MUTANTS}
    if args.list:
        print("\n".join(known))
        return 0
    unknown = sorted(set(args.names) - set(known))
    if unknown:
        parser.error(f"unknown mutant(s) {unknown}; see --list")
    chosen = [known[n] for n in args.names] if args.names else MUTANTS
    outcomes = {}
    with tempfile.TemporaryDirectory(prefix="neurotorch-mutants-") as scratch:
        for mutant in chosen:
            start = time.perf_counter()
            outcomes[mutant.name] = run_mutant(mutant, Path(scratch))
            print(
                f"{mutant.name:40s} {outcomes[mutant.name]:9s} {time.perf_counter() - start:6.1f} s"
            )
    caught = sum(outcome == "caught" for outcome in outcomes.values())
    print(f"mutants: {caught} caught of {len(outcomes)}")
    return 0 if caught == len(outcomes) else 1


if __name__ == "__main__":
    raise SystemExit(main())
