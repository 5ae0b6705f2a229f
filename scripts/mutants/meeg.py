"""Mutants of the M/EEG area (0.4): physical checks, posterior checks, solver stopping and
registry, the EMD, the grid, its manifest, CaliBrain fidelity and the DataModules' epochs."""

from mutants import Mutant

FAULTS = "tests/test_faults_meeg.py::test_meeg_fault_is_named"

MUTANTS = [
    Mutant(
        "bmn-stop-on-absolute-change",
        "neurotorch/meeg/posterior.py",
        "        change = (new_gamma - gamma).abs() / (gamma.abs() + _EPS * gamma_scale)",
        "        change = (new_gamma - gamma).abs()",
        ("tests/test_meeg_posterior.py::test_posteriors_do_not_depend_on_the_unit_of_the_data",),
    ),
    Mutant(
        "leadfield-all-zero-accepted",
        "neurotorch/meeg/leadfield_data.py",
        "    if not np.any(data.leadfield):",
        "    if False:",
        (f"{FAULTS}[leadfield-all-zero]",),
    ),
    Mutant(
        "leadfield-units-not-checked-against-kind",
        "neurotorch/meeg/leadfield_data.py",
        "        and units not in _KIND_UNITS[kind]\n",
        "        and False\n",
        (f"{FAULTS}[leadfield-eeg-in-tesla]",),
    ),
    Mutant(
        "leadfield-coil-not-checked-against-kind",
        "neurotorch/meeg/leadfield_data.py",
        "    if kind_name and eeg_coil != (kind == layout.KIND_EEG):",
        "    if False:",
        (f"{FAULTS}[leadfield-eeg-gradiometer-coil]",),
    ),
    Mutant(
        "negative-variance-counted-as-zero",
        "neurotorch/meeg/calibration.py",
        "    if negative.any():",
        "    if False:",
        (
            "tests/test_meeg_posterior.py::test_coverage_refuses_impossible_variances_and_returns_its_levels",
            f"{FAULTS}[summary-negative-variance]",
        ),
    ),
    Mutant(
        "indefinite-covariance-accepted",
        "neurotorch/meeg/calibration.py",
        "    if asymmetry > 1e3 * tolerance * scale or bad.any():",
        "    if False:",
        (f"{FAULTS}[summary-indefinite-block]",),
    ),
    Mutant(
        "coverage-curve-default-levels",
        "neurotorch/meeg/calibration.py",
        "    return CoverageCurve(levels, coverage_from_scores(standardized_errors(x_true, mean, var), z))",
        "    return CoverageCurve(DEFAULT_LEVELS, coverage_from_scores(standardized_errors(x_true, mean, var), z))",
        (
            "tests/test_meeg_posterior.py::test_coverage_refuses_impossible_variances_and_returns_its_levels",
        ),
    ),
    Mutant(
        "emd-lp-with-presolve",
        "neurotorch/meeg/metrics.py",
        '            "presolve": False,',
        '            "presolve": True,',
        (
            "tests/test_meeg_metrics.py::test_earth_movers_distance_with_nearly_pruned_masses_equals_pot",
        ),
    ),
    Mutant(
        "emd-one-source-unweighted",
        "neurotorch/meeg/metrics.py",
        "        return float(np.sum(cost * a[:, None] * b[None, :]))",
        "        return float(np.mean(cost))",
        (
            "tests/test_meeg_metrics.py::test_earth_movers_distance_from_one_source_is_the_mean_distance",
        ),
    ),
    Mutant(
        "solver-unknown-options-passed-on",
        "neurotorch/meeg/solvers/__init__.py",
        "    if unknown:",
        "    if False:",
        ("tests/test_meeg_solvers.py::test_solver_options_are_checked",),
    ),
    Mutant(
        "manifest-solver-not-calibrains-name",
        "neurotorch/meeg/grid.py",
        '            "solver": settings.solver.calibrain_name(self.noise_type),',
        '            "solver": settings.solver.name,',
        ("tests/test_meeg_grid.py::test_manifest_names_solvers_as_calibrain",),
    ),
    Mutant(
        "manifest-absolute-paths-not-written",
        "neurotorch/meeg/grid.py",
        '        prefix=f"{out.as_posix()}/" if manifest_paths == "absolute" else "",',
        '        prefix="",',
        (
            "tests/test_meeg_calibrain_interop.py::test_grid_manifest_is_aggregated_and_calibrated_like_calibrain",
        ),
    ),
    Mutant(
        "manifest-path-may-leave-its-folder",
        "neurotorch/meeg/grid.py",
        "        if not path.is_relative_to(folder):",
        "        if False:",
        (
            "tests/test_meeg_grid.py::test_manifest_paths_stay_inside_the_manifest_folder",
            f"{FAULTS}[manifest-path-escapes]",
        ),
    ),
    Mutant(
        "manifest-repeated-header-read",
        "neurotorch/meeg/grid.py",
        '        if value == "posterior_summary":',
        "        if False:",
        (f"{FAULTS}[manifest-two-headers]",),
    ),
    Mutant(
        "grid-nnz-rounded",
        "neurotorch/meeg/grid.py",
        '        "nnz": as_ints("nnz", data_grid["nnz"], minimum=1),',
        '        "nnz": [int(n) for n in data_grid["nnz"]],',
        (f"{FAULTS}[grid-fractional-nnz]",),
    ),
    Mutant(
        "grid-subject-string-split",
        "neurotorch/meeg/grid.py",
        '        "subject": [layout.check_subject(s) for s in as_names("subject", data_grid["subject"])],',
        '        "subject": [layout.check_subject(s) for s in data_grid["subject"]],',
        ("tests/test_meeg_grid.py::test_grid_values_are_checked_not_rounded_or_split",),
    ),
    Mutant(
        "grid-unit-seeded-with-the-next-runs-seed",
        "neurotorch/meeg/grid.py",
        "        GridUnit(settings, global_id, int(seed), data_params=data_params, noise_type=noise_type)",
        "        GridUnit(settings, global_id, int(seeds[global_id % len(seeds)]), data_params=data_params, noise_type=noise_type)",
        ("tests/test_meeg_grid_units.py::test_each_run_has_calibrains_configuration_and_seed",),
    ),
    Mutant(
        "grid-unit-on-all-threads",
        "neurotorch/meeg/grid.py",
        "        with one_thread():\n            data, prepared",
        "        if True:\n            data, prepared",
        (
            "tests/test_meeg_grid_units.py::test_each_run_has_calibrains_configuration_and_seed",
            "tests/test_meeg_grid_units.py::test_two_local_workers_write_the_bytes_of_one_process",
        ),
    ),
    Mutant(
        "grid-unit-never-done",
        "neurotorch/meeg/grid.py",
        "        if self.path().is_file():\n            return True\n",
        "        if False:\n            return True\n",
        ("tests/test_meeg_grid_units.py::test_a_second_run_does_no_work",),
    ),
    Mutant(
        "grid-unit-blind-to-a-finished-grid",
        "neurotorch/meeg/grid.py",
        "        if not folder.endswith(WORK_SUFFIX):\n            return False\n",
        "        if True:\n            return False\n",
        (
            "tests/test_meeg_grid_units.py::"
            "test_a_plan_made_before_another_run_finished_computes_nothing_after",
        ),
    ),
    Mutant(
        "grid-runs-written-unlocked",
        "neurotorch/meeg/grid.py",
        '        return _grid_lock(f"{self.settings.fingerprint[:24]}-run{self.global_id:08d}")',
        "        return None",
        (
            "tests/test_meeg_grid_units.py::test_a_run_being_written_elsewhere_is_waited_for_not_moved",
        ),
    ),
    Mutant(
        "grid-work-folder-of-another-grid-reused",
        "neurotorch/meeg/grid.py",
        "    if held is not None and held != fingerprint:",
        "    if False:",
        (
            "tests/test_meeg_grid_units.py::test_another_grid_is_refused_in_a_work_folder_or_a_finished_folder",
        ),
    ),
    Mutant(
        "grid-job-array-task-finishes-the-grid",
        "neurotorch/meeg/grid.py",
        "                units, finish=only is None, workers=workers, scheduler=scheduler, progress=progress",
        "                units, finish=True, workers=workers, scheduler=scheduler, progress=progress",
        (
            "tests/test_meeg_grid_units.py::test_a_job_array_task_runs_one_unit_and_the_last_run_finishes",
        ),
    ),
    Mutant(
        "grid-killed-writers-temporary-kept",
        "neurotorch/meeg/grid.py",
        "                stale.unlink(missing_ok=True)",
        "                pass",
        ("tests/test_meeg_grid_units.py::test_a_worker_killed_mid_run_costs_only_its_run",),
    ),
    Mutant(
        "aggregated-meg-runs-without-q-basis",
        "neurotorch/synthetic/meeg.py",
        '        arrays["Q_basis"] = q_basis',
        "        pass",
        (
            "tests/test_meeg_calibrain_interop.py::test_calibrain_calibrates_the_aggregated_free_meg_runs_of_make_calibrain",
        ),
    ),
    Mutant(
        "builder-ignores-require-src-coords",
        "neurotorch/meeg/leadfield.py",
        "            require_src_coords=self.require_src_coords,",
        "            require_src_coords=True,",
        (
            "tests/test_meeg_leadfield.py::test_calibrain_simulate_mode_files_load_without_positions",
        ),
    ),
    Mutant(
        "builder-needs-a-root-for-memory-modes",
        "neurotorch/meeg/leadfield.py",
        "        self._root: DataRoot | None = None\n",
        "        self._root: DataRoot | None = None\n        self.root  # noqa: B018\n",
        ("tests/test_meeg_leadfield.py::test_memory_modes_need_no_data_root",),
    ),
    Mutant(
        "npz-compression-damage-unnamed",
        "neurotorch/meeg/npz.py",
        "    NotImplementedError,\n",
        "",
        (f"{FAULTS}[npz-damaged-central-directory]",),
    ),
    Mutant(
        "hdf5-header-damage-unnamed",
        "neurotorch/meeg/summaries.py",
        "    except (OSError, RuntimeError, KeyError, ValueError, TypeError) as exc:",
        "    except OSError as exc:",
        (f"{FAULTS}[summary-damaged-btree]", f"{FAULTS}[summary-damaged-local-heap]"),
    ),
    Mutant(
        "summary-written-without-checksums",
        "neurotorch/meeg/grid.py",
        "            handle.create_dataset(key, data=run[key], fletcher32=True)",
        "            handle.create_dataset(key, data=run[key])",
        (f"{FAULTS}[summary-damaged-values]",),
    ),
    Mutant(
        "noise-misspecification-ignored",
        "neurotorch/data/meeg/calibration.py",
        "        assumed = assumed * spec.noise_var_scale",
        "        assumed = assumed",
        ("tests/test_meeg_data.py::test_calibration_items_hold_the_posterior",),
    ),
    Mutant(
        "validation-drawn-anew-every-epoch",
        "neurotorch/lightning/meeg.py",
        '                fresh_each_epoch=part == "train",',
        "                fresh_each_epoch=True,",
        ("tests/test_meeg_epochs.py::test_second_epoch_through_a_trainer",),
    ),
    Mutant(
        "parts-share-one-seed-stream",
        "neurotorch/lightning/meeg.py",
        "            seed=split_seed(self.seed, part),",
        "            seed=self.seed,",
        ("tests/test_meeg_lightning.py::test_sensor_sim_datamodule_splits_differ",),
    ),
    Mutant(
        "leadfield-raw-si-scaled-only-on-load",
        "neurotorch/meeg/leadfield_data.py",
        "        self.leadfield, self.sensor_unitmult = scale_to_display_units(\n"
        "            self.leadfield, self.sensor_units, self.sensor_unitmult\n"
        "        )\n",
        "        if self.source is not None:  # files only\n"
        "            self.leadfield, self.sensor_unitmult = scale_to_display_units(\n"
        "                self.leadfield, self.sensor_units, self.sensor_unitmult\n"
        "            )\n",
        (
            "tests/test_meeg_boundaries.py::test_raw_si_leadfield_in_memory_is_scaled_as_on_load[eeg-raw]",
            "tests/test_meeg_boundaries.py::test_raw_si_leadfield_simulates_the_same_before_and_after_a_round_trip",
        ),
    ),
    Mutant(
        "simulate-replaces-an-existing-leadfield-file",
        "neurotorch/meeg/leadfield.py",
        "        if existing and not overwrite:",
        "        if False:",
        (
            "tests/test_meeg_boundaries.py::test_simulate_keeps_an_existing_leadfield_file_unless_told_to_overwrite",
        ),
    ),
    Mutant(
        "fmri-sensors-of-several-subjects-through-one-head",
        "neurotorch/data/meeg/from_fmri.py",
        "    if subjects == [subject]:\n        return\n",
        "    if subject in subjects:\n        return\n",
        (
            "tests/test_meeg_boundaries.py::test_fmri_informed_sensors_refuse_betas_of_other_subjects[two-subjects]",
        ),
    ),
    Mutant(
        "silent-sources-drawn-active",
        "neurotorch/meeg/simulation.py",
        "            scores[:, torch.as_tensor(silent, dtype=torch.long, device=self.device)] = -1.0",
        "            pass",
        (
            "tests/test_meeg_boundaries.py::test_silent_sources_are_never_drawn_as_active",
            "tests/test_meeg_boundaries.py::test_grid_runs_never_make_a_silent_source_active",
        ),
    ),
    Mutant(
        "run-predictions-without-run-ids",
        "neurotorch/models/calibrator.py",
        'ID_KEYS = ("index", "run_id", "seed", "nnz", "alpha")',
        'ID_KEYS = ("index", "nnz", "alpha")',
        ("tests/test_meeg_boundaries.py::test_predictions_of_runs_carry_run_id_and_seed",),
    ),
    Mutant(
        "sim-start-room-off-by-one",
        "neurotorch/meeg/simulation.py",
        "room = (cfg.n_post - lengths + 1).to(self.dtype)",
        "room = (cfg.n_post - lengths).to(self.dtype)",
        (
            "tests/test_meeg_and_lesion_arithmetic.py::test_erp_timing_draws_every_length_and_every_start",
        ),
    ),
    Mutant(
        "sim-length-upper-bound-exclusive",
        "neurotorch/meeg/simulation.py",
        "cfg.erp_min_length, cfg.n_post + 1, (n,), generator=generator",
        "cfg.erp_min_length, cfg.n_post, (n,), generator=generator",
        (
            "tests/test_meeg_and_lesion_arithmetic.py::test_erp_timing_draws_every_length_and_every_start",
        ),
    ),
    Mutant(
        "coverage-ties-not-covered",
        "neurotorch/meeg/calibration.py",
        'return np.searchsorted(ordered, np.asarray(thresholds), side="right") / ordered.size',
        'return np.searchsorted(ordered, np.asarray(thresholds), side="left") / ordered.size',
        (
            "tests/test_meeg_and_lesion_arithmetic.py::test_coverage_counts_scores_at_the_threshold_as_covered",
        ),
    ),
    Mutant(
        "isotonic-weights-ignored",
        "neurotorch/meeg/calibration.py",
        "result = isotonic_regression(empirical, weights=w, increasing=True)",
        "result = isotonic_regression(empirical, weights=None, increasing=True)",
        ("tests/test_meeg_and_lesion_arithmetic.py::test_isotonic_fit_uses_its_weights",),
    ),
    Mutant(
        "isotonic-fit-unsorted",
        "neurotorch/meeg/calibration.py",
        "        order = np.argsort(levels)\n",
        "        order = np.arange(len(levels))\n",
        (
            "tests/test_meeg_and_lesion_arithmetic.py::test_isotonic_fit_does_not_depend_on_the_order_of_its_levels",
        ),
    ),
]
