"""Mutants of the ridge encoder: its solver, the voxel-chunked statistics, the memory preflight."""

from __future__ import annotations

from mutants import Mutant

RIDGE = ("tests/test_encoder_ridge.py",)
CHUNKS = "tests/test_encoder_chunks.py"
MEMORY = "tests/test_encoder_memory.py"
DDP = "tests/test_encoder_ddp.py::test_statistics_summed_over_two_ranks_equal_one_process"
CHUNKED_FIT = f"{CHUNKS}::test_chunked_fit_equals_the_in_memory_fit_and_the_reference"
FLOAT32 = f"{CHUNKS}::test_float32_cross_products_keep_the_penalties_and_the_weights"

MUTANTS = [
    Mutant(
        "ridge-intercept-sign-flipped",
        "neurotorch/models/ridge.py",
        "        return weight, mean_y - fit.mean_x @ w + shift",
        "        return weight, -(mean_y - fit.mean_x @ w) + shift",
        RIDGE,
    ),
    Mutant(
        "ridge-worst-penalty-chosen",
        "neurotorch/models/ridge.py",
        "        best = scores.argmax(0)\n",
        "        best = scores.argmin(0)\n",
        RIDGE,
    ),
    Mutant(
        "chunk-remainder-dropped",
        "neurotorch/models/cross_products.py",
        "    return [slice(start, min(start + chunk, n_targets)) for start in range(0, n_targets, chunk)]",
        "    return [slice(s, s + chunk) for s in range(0, n_targets - n_targets % chunk, chunk)]",
        (CHUNKED_FIT,),
    ),
    Mutant(
        "chunk-refit-with-the-first-chunks-penalties",
        "neurotorch/models/ridge.py",
        "chosen=chosen, alphas=alphas[alpha_index[targets]]",
        "chosen=chosen, alphas=alphas[alpha_index[chosen]]",
        (CHUNKED_FIT,),
    ),
    Mutant(
        "scratch-chunks-overlap",
        "neurotorch/models/cross_products.py",
        "        return n_folds * n_features * self.chunks[j].start * self._numpy_dtype.itemsize",
        "        return n_features * self.chunks[j].start * self._numpy_dtype.itemsize",
        (CHUNKED_FIT,),
    ),
    Mutant(
        "buffer-added-twice",
        "neurotorch/models/ridge_statistics.py",
        "            self.xty.add(j, block)\n        self._buffer = []\n",
        "            self.xty.add(j, block)\n",
        (f"{CHUNKS}::test_chunked_sums_equal_numpy_sums_over_the_raw_trials",),
    ),
    Mutant(
        "intercept-shift-not-undone",
        "neurotorch/models/ridge.py",
        "        shift = shift_y[columns][chosen] - shift_x @ weight",
        "        shift = 0",
        (CHUNKED_FIT,),
    ),
    Mutant(
        "no-shift-before-float32-sums",
        "neurotorch/models/ridge_statistics.py",
        "            self.shift_x = x.mean(0).to(rounded).to(F64)\n"
        "            self.shift_y = y.mean(0, dtype=F64).to(rounded).to(F64)",
        "            self.shift_x = x.mean(0).to(rounded).to(F64) * 0\n"
        "            self.shift_y = y.mean(0, dtype=F64).to(rounded).to(F64) * 0",
        (FLOAT32,),
    ),
    Mutant(
        "rebase-drops-a-cross-term",
        "neurotorch/models/ridge_statistics.py",
        "                + da[None, :, None] * sy[:, None, :]\n",
        "",
        (f"{CHUNKS}::test_rebase_on_another_shift_is_exact",),
    ),
    Mutant(
        "ranks-summed-around-different-shifts",
        "neurotorch/models/ridge_statistics.py",
        "        self.rebase(shift[: self.n_features], shift[self.n_features :])\n",
        "",
        (DDP,),
    ),
    Mutant(
        "held-out-factor-drops-components",
        "neurotorch/models/ridge.py",
        "            kept = values > len(values) * torch.finfo(F64).eps * values.max()",
        "            kept = values > values.mean()",
        (CHUNKED_FIT,),
    ),
    Mutant(
        "test-chunk-scored-against-the-first-columns",
        "neurotorch/models/linear_encoder.py",
        "            scores.update(parts.sum(0) + self.bias[columns], y[:, columns], columns)",
        "            scores.update(parts.sum(0) + self.bias[columns], y[:, : parts.shape[2]], columns)",
        (MEMORY,),
    ),
    Mutant(
        "preflight-ignores-the-available-memory",
        "neurotorch/models/encoder_memory.py",
        "    budget = math.inf if free is None else free * PLAN_FRACTION",
        "    budget = math.inf",
        (MEMORY, "tests/test_faults_encoder.py"),
    ),
    Mutant(
        "cgroup-limit-ignored",
        "neurotorch/models/encoder_memory.py",
        "    found += _cgroup_headroom(proc, cgroups)",
        "    found += []",
        (f"{MEMORY}::test_available_memory_is_the_tightest_of_meminfo_and_the_cgroup_limits",),
    ),
]
