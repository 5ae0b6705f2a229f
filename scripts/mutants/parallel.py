"""Mutants of the units of work (0.4): the engine, and the units of verify, download and lesion
network mapping."""

from mutants import Mutant

ENGINE = "tests/test_parallel.py"
COMMANDS = "tests/test_parallel_commands.py"
CLUSTER = "tests/test_parallel_cluster.py"
FAULTS = "tests/test_faults_parallel.py"

MUTANTS = [
    Mutant(
        "unit-index-past-the-end-exits-as-a-data-error",
        "neurotorch/cli/main.py",
        "        if isinstance(exc, UsageError | UnitIndexError):",
        "        if isinstance(exc, UsageError):",
        ("tests/test_scale_store.py::test_units_list_one_array_task_and_a_second_run",),
    ),
    Mutant(
        "unit-index-one-past-the-end-let-through",
        "neurotorch/parallel/engine.py",
        "    beyond = [k for k in positions if k >= len(units)]",
        "    beyond = [k for k in positions if k > len(units)]",
        (f"{ENGINE}::test_a_job_array_task_runs_its_one_unit",),
    ),
    Mutant(
        "threads-not-stopped-on-interrupt",
        "neurotorch/parallel/engine.py",
        "            stop.set()\n",
        "",
        (f"{ENGINE}::test_threads_stop_their_units_when_the_run_is_interrupted",),
    ),
    Mutant(
        "cluster-per-stage",
        "neurotorch/parallel/engine.py",
        '        yield {"workers": None, "scheduler": _LazyCluster(workers, stack)}',
        '        yield {"workers": workers, "scheduler": None}',
        (f"{ENGINE}::test_stages_share_one_local_cluster_started_only_for_work",),
    ),
    Mutant(
        "scheduler-file-read-as-address",
        "neurotorch/parallel/engine.py",
        '        if isinstance(scheduler, str) and scheduler.endswith(".json"):',
        "        if False:",
        (f"{ENGINE}::test_a_scheduler_file_runs_the_units",),
    ),
    Mutant(
        "lnm-units-on-every-thread",
        "neurotorch/parallel/units.py",
        "    torch.set_num_threads(1)\n    try:\n        with threadpool_limits(limits=1):\n",
        "    try:\n        if True:\n",
        (f"{COMMANDS}::test_units_compute_on_one_thread_and_give_the_threads_back",),
    ),
    Mutant(
        "units-blas-on-every-thread",
        "neurotorch/parallel/units.py",
        "        with threadpool_limits(limits=1):\n",
        "        with threadpool_limits(limits=None):\n",
        (f"{COMMANDS}::test_units_compute_on_one_thread_and_give_the_threads_back",),
    ),
    Mutant(
        "merge-without-cross-term",
        "neurotorch/connectome/stats.py",
        "        self.total_sq.add_(other.total_sq).add_(delta * other.total, alpha=2)",
        "        self.total_sq.add_(other.total_sq)",
        (f"{COMMANDS}::test_merged_sums_give_numpy_mean_and_t_and_keep_constant_voxels_exact",),
    ),
    Mutant(
        "merge-ignores-the-other-shift",
        "neurotorch/connectome/stats.py",
        "        self.total.add_(other.total).add_(delta, alpha=other.count)",
        "        self.total.add_(other.total)",
        (f"{COMMANDS}::test_merged_sums_give_numpy_mean_and_t_and_keep_constant_voxels_exact",),
    ),
    Mutant(
        "sign-flips-in-file-order",
        "neurotorch/connectome/lnm_units.py",
        "        signs = signs[:, torch.from_numpy(plan.stacked_order())]",
        "",
        (f"{COMMANDS}::test_units_follow_the_subject_order_of_the_sign_flips",),
    ),
    Mutant(
        "first-permutation-chunk-counted-only",
        "neurotorch/connectome/lnm_units.py",
        '            counts = np.concatenate([sum(c["exceedances"] for c in parts) for parts in chunks])',
        '            counts = np.concatenate([parts[0]["exceedances"] for parts in chunks])',
        (f"{COMMANDS}::test_units_equal_network_map_to_float_rounding",),
    ),
    Mutant(
        "units-folder-of-another-run-reused",
        "neurotorch/connectome/lnm_units.py",
        "        if existing == fingerprint:",
        "        if True:",
        (f"{FAULTS}::test_fault[units-folder-of-another-run]",),
    ),
    Mutant(
        "permutations-before-their-maps",
        "neurotorch/connectome/lnm_units.py",
        '        plan.require(maps, f"unit {self.key}")\n',
        "",
        (f"{FAULTS}::test_fault[unit-run-before-its-stage]",),
    ),
    Mutant(
        "verify-rereads-verified-files",
        "neurotorch/verify.py",
        "        return not self.recheck and recorded_check(self.root, self.relpath) is not None",
        "        return False",
        (f"{COMMANDS}::test_verify_runs_each_file_once_and_lists_its_units",),
    ),
    Mutant(
        "verify-record-without-outcome",
        "neurotorch/io/integrity.py",
        "                record_verified(root, relpath, info, check=result)",
        "                record_verified(root, relpath, info)",
        (f"{COMMANDS}::test_verify_runs_each_file_once_and_lists_its_units",),
    ),
    Mutant(
        "hdf5-child-in-a-daemonic-worker",
        "neurotorch/io/integrity.py",
        "        if multiprocessing.current_process().daemon:",
        "        if False:",
        (f"{COMMANDS}::test_hdf5_is_checked_in_a_daemonic_worker_that_may_not_start_children",),
    ),
    Mutant(
        "download-of-unchecked-kinds-never-done",
        "neurotorch/fmri/download.py",
        '        checked = file_kind(self.relpath) == "other" or is_verified(',
        "        checked = is_verified(",
        (f"{COMMANDS}::test_download_lists_and_runs_its_units_one_by_one",),
    ),
]
