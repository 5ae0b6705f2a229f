"""Mutants of the ridge encoder's scores and report, the DataModules' loaders, the unit engine,
the synthetic writer and feature extraction (0.4.0), guarded by
tests/test_encoder_and_modules_arithmetic.py."""

from mutants import Mutant

MUTANTS = [
    Mutant(
        "ceiling-chunk-into-the-first-columns",
        "neurotorch/models/held_out.py",
        "            self.sums[:, columns].index_add_(0, index, part)",
        "            self.sums[:, : part.shape[1]].index_add_(0, index, part)",
        (
            "tests/test_encoder_and_modules_arithmetic.py::test_ceiling_and_its_standard_error_follow_the_documented_formulas",
        ),
    ),
    Mutant(
        "failed-unit-lines-without-the-error",
        "neurotorch/parallel/units.py",
        '        f"{result.status}  {result.key}" + (f"  {result.error}" if result.error else "")',
        '        f"{result.status}  {result.key}"',
        ("tests/test_encoder_and_modules_arithmetic.py::test_a_failed_units_line_names_its_error",),
    ),
    Mutant(
        "subject-pool-without-its-unique-images",
        "neurotorch/synthetic/laion_fmri.py",
        '        {s: np.concatenate([shared, stimset.indices("unique", participant=s)]) for s in subjects}',
        "        {s: shared for s in subjects}",
        (
            "tests/test_encoder_and_modules_arithmetic.py::test_a_subjects_split_pool_is_the_shared_images_and_its_own_unique_ones",
        ),
    ),
    Mutant(
        "one-worker-starts-a-cluster",
        "neurotorch/parallel/engine.py",
        "    if workers is None or workers == 1:\n        return (execute_unit(unit) for unit in units)",
        "    if workers is None:\n        return (execute_unit(unit) for unit in units)",
        (
            "tests/test_encoder_and_modules_arithmetic.py::test_one_worker_runs_the_units_in_this_process",
        ),
    ),
    Mutant(
        "specs-of-other-transforms-share-a-pass",
        "neurotorch/features/extract.py",
        "        key = json.dumps([spec.recipe(), transform], sort_keys=True, default=str)",
        "        key = json.dumps([spec.recipe()], sort_keys=True, default=str)",
        (
            "tests/test_encoder_and_modules_arithmetic.py::test_specs_of_one_model_with_other_preprocessing_are_each_computed_with_their_own",
        ),
    ),
    Mutant(
        "t1-and-t2-swapped",
        "neurotorch/synthetic/brain.py",
        '    return {"T1w": t1.astype(np.int16), "T2w": t2.astype(np.int16)}',
        '    return {"T1w": t2.astype(np.int16), "T2w": t1.astype(np.int16)}',
        (
            "tests/test_encoder_and_modules_arithmetic.py::test_anatomical_t1w_shows_a_bright_brain_and_t2w_a_dark_one",
        ),
    ),
    Mutant(
        "test-r2-is-r-squared",
        "neurotorch/models/linear_encoder.py",
        '            scores.score("r2").cpu().numpy(),',
        '            (scores.score("r") ** 2).cpu().numpy(),',
        (
            "tests/test_encoder_and_modules_arithmetic.py::test_the_test_report_holds_numpys_r_and_scikit_learns_r2",
        ),
    ),
    Mutant(
        "invalid-torchrun-rank-accepted",
        "neurotorch/features/extract.py",
        "    return (rank, world_size) if 0 <= rank < world_size else (0, 1)",
        "    return (rank, world_size)",
        (
            "tests/test_encoder_and_modules_arithmetic.py::test_a_torchrun_rank_is_the_global_rank_not_the_node_local_one",
        ),
    ),
    Mutant(
        "cv-score-over-all-folds",
        "neurotorch/models/ridge.py",
        "            scores[candidates, columns] = total / len(fits)",
        "            scores[candidates, columns] = total / stats.n_folds",
        (
            "tests/test_encoder_and_modules_arithmetic.py::test_cv_score_is_the_mean_over_the_folds_that_hold_trials",
        ),
    ),
    Mutant(
        "ceiling-sd-counts-rows-not-repeats",
        "neurotorch/models/held_out.py",
        "        sd_explainable = (1 - explainable) * math.sqrt(2 / (n_rows - n_images))",
        "        sd_explainable = (1 - explainable) * math.sqrt(2 / n_rows)",
        (
            "tests/test_encoder_and_modules_arithmetic.py::test_ceiling_and_its_standard_error_follow_the_documented_formulas",
        ),
    ),
    Mutant(
        "margin-without-bias",
        "neurotorch/models/held_out.py",
        "    return float(3 * 1.2533 * spread / math.sqrt(max(1, np.isfinite(fraction).sum())) + bias)",
        "    return float(3 * 1.2533 * spread / math.sqrt(max(1, np.isfinite(fraction).sum())))",
        (
            "tests/test_encoder_and_modules_arithmetic.py::test_summary_metrics_equal_numpy_over_the_voxels_they_describe",
        ),
    ),
    Mutant(
        "test-count-of-the-last-batch",
        "neurotorch/models/held_out.py",
        "        self.count[columns] += y.shape[0]\n        self.sum_p[columns] += pred.sum(0)",
        "        self.count[columns] = y.shape[0]\n        self.sum_p[columns] += pred.sum(0)",
        (
            "tests/test_encoder_and_modules_arithmetic.py::test_scores_summed_over_batches_equal_numpy_and_scikit_learn_over_all_rows",
        ),
    ),
    Mutant(
        "explainable-fraction-unsigned",
        "neurotorch/models/encoder_report.py",
        "                np.nanmedian(np.sign(fraction) * fraction**2)  # r² / ĉ², signed",
        "                np.nanmedian(fraction**2)  # r² / ĉ², signed",
        (
            "tests/test_encoder_and_modules_arithmetic.py::test_summary_metrics_equal_numpy_over_the_voxels_they_describe",
        ),
    ),
    Mutant(
        "mean-r-is-the-median",
        "neurotorch/models/encoder_report.py",
        '        "mean_r": float(np.nanmean(r)),',
        '        "mean_r": float(np.nanmedian(r)),',
        (
            "tests/test_encoder_and_modules_arithmetic.py::test_summary_metrics_equal_numpy_over_the_voxels_they_describe",
        ),
    ),
    Mutant(
        "roi-fraction-ignores-the-minimum-ceiling",
        "neurotorch/models/encoder_report.py",
        "        table = table.assign(fraction=np.where(usable, r / np.where(usable, c, 1), np.nan))",
        "        table = table.assign(fraction=r / c)",
        (
            "tests/test_encoder_and_modules_arithmetic.py::test_summary_metrics_equal_numpy_over_the_voxels_they_describe",
        ),
    ),
    Mutant(
        "space-penalty-of-the-first-space",
        "neurotorch/models/encoder_report.py",
        "            space: _space_metrics(penalty[s], None if partition is None else partition[s])",
        "            space: _space_metrics(penalty[0], None if partition is None else partition[s])",
        (
            "tests/test_encoder_and_modules_arithmetic.py::test_summary_metrics_equal_numpy_over_the_voxels_they_describe",
        ),
    ),
    Mutant(
        "val-median-r-is-the-mean",
        "neurotorch/models/linear_encoder.py",
        '            self.log("val_median_r", float(self._val_stats.correlation().median()))',
        '            self.log("val_median_r", float(self._val_stats.correlation().mean()))',
        (
            "tests/test_encoder_and_modules_arithmetic.py::test_validating_a_fitted_encoder_logs_the_median_of_numpys_per_voxel_r",
        ),
    ),
    Mutant(
        "memory-plan-counts-ratios-for-one-space",
        "neurotorch/models/linear_encoder.py",
        "            n_candidates=len(hp.penalties) * len(hp.band_ratios) ** (len(self.feature_keys) - 1),",
        "            n_candidates=len(hp.penalties) * len(hp.band_ratios),",
        (
            "tests/test_encoder_and_modules_arithmetic.py::test_the_memory_plan_counts_one_candidate_per_penalty_and_band_weighting",
        ),
    ),
    Mutant(
        "predict-part-ignored",
        "neurotorch/lightning/base.py",
        "        return self.dataloader(self.predict_part, shuffle=False)",
        '        return self.dataloader("test", shuffle=False)',
        (
            "tests/test_encoder_and_modules_arithmetic.py::test_predict_serves_its_part_in_order_and_evaluation_parts_are_never_shuffled",
        ),
    ),
    Mutant(
        "datamodule-seed-not-given-to-the-sampler",
        "neurotorch/lightning/base.py",
        "            dataset, self.batch_size, shuffle=shuffle, seed=self.seed\n",
        "            dataset, self.batch_size, shuffle=shuffle\n",
        (
            "tests/test_encoder_and_modules_arithmetic.py::test_the_training_order_is_the_seeded_sampler_of_the_modules_seed",
        ),
    ),
    Mutant(
        "validation-loader-shuffled",
        "neurotorch/lightning/base.py",
        '        shuffle = part == "train" if shuffle is None else shuffle',
        '        shuffle = part != "test" if shuffle is None else shuffle',
        (
            "tests/test_encoder_and_modules_arithmetic.py::test_predict_serves_its_part_in_order_and_evaluation_parts_are_never_shuffled",
        ),
    ),
    Mutant(
        "stream-seed-not-passed",
        "neurotorch/lightning/laion_fmri.py",
        "        return BetasStream(self.root, self.subjects, read=read, seed=self.seed, **settings)",
        "        return BetasStream(self.root, self.subjects, read=read, **settings)",
        (
            "tests/test_encoder_and_modules_arithmetic.py::test_a_streaming_module_gives_its_seed_and_shuffles_the_training_part_only",
        ),
    ),
    Mutant(
        "stream-evaluation-parts-shuffled",
        "neurotorch/lightning/laion_fmri.py",
        '        if part != "train":\n            buffer = 0\n',
        '        if part == "never":\n            buffer = 0\n',
        (
            "tests/test_encoder_and_modules_arithmetic.py::test_a_streaming_module_gives_its_seed_and_shuffles_the_training_part_only",
        ),
    ),
    Mutant(
        "synthetic-root-ignores-the-seed",
        "neurotorch/lightning/laion_fmri.py",
        "            seed=self.hparams.seed,\n",
        "            seed=0,\n",
        (
            "tests/test_encoder_and_modules_arithmetic.py::test_the_synthetic_dataset_of_a_module_is_written_with_the_modules_seed",
        ),
    ),
    Mutant(
        "unit-not-rechecked-under-its-lock",
        "neurotorch/parallel/engine.py",
        '            if unit.done():\n                return UnitResult(unit.key, "skipped")\n',
        "",
        (
            "tests/test_encoder_and_modules_arithmetic.py::test_a_unit_done_by_the_time_it_holds_its_lock_is_skipped_not_run_again",
        ),
    ),
    Mutant(
        "grid-affine-off-centre",
        "neurotorch/synthetic/brain.py",
        "    affine[:3, 3] = -(np.asarray(shape) - 1) / 2 * voxel_mm",
        "    affine[:3, 3] = -np.asarray(shape) / 2 * voxel_mm",
        ("tests/test_encoder_and_modules_arithmetic.py::test_the_grid_is_centred_on_the_origin",),
    ),
    Mutant(
        "r2mean-is-the-sum",
        "neurotorch/synthetic/laion_fmri.py",
        "        _volume(r2_sum / len(schedule), model.brain_index, grid),",
        "        _volume(r2_sum, model.brain_index, grid),",
        (
            "tests/test_encoder_and_modules_arithmetic.py::test_session_tables_number_runs_from_one_and_r2mean_averages_the_sessions",
        ),
    ),
    Mutant(
        "runs-numbered-from-zero",
        "neurotorch/synthetic/laion_fmri.py",
        '            "run": np.arange(len(trials)) * n_runs // len(trials) + 1,',
        '            "run": np.arange(len(trials)) * n_runs // len(trials),',
        (
            "tests/test_encoder_and_modules_arithmetic.py::test_session_tables_number_runs_from_one_and_r2mean_averages_the_sessions",
        ),
    ),
    Mutant(
        "realistic-snr-scales-every-voxel",
        "neurotorch/synthetic/laion_fmri.py",
        "    model.noise_sd[model.signal_rows] *= noise_scale",
        "    model.noise_sd *= noise_scale",
        (
            "tests/test_encoder_and_modules_arithmetic.py::test_the_realistic_preset_adds_noise_to_the_signal_voxels_only",
        ),
    ),
    Mutant(
        "repeats-in-one-session",
        "neurotorch/synthetic/laion_fmri.py",
        "            sessions[(offset + rep) % n_sessions].append(int(image))",
        "            sessions[offset % n_sessions].append(int(image))",
        (
            "tests/test_encoder_and_modules_arithmetic.py::test_repetitions_of_an_image_are_spread_over_the_sessions",
        ),
    ),
    Mutant(
        "pca-sample-of-the-first-seed",
        "neurotorch/features/units.py",
        "            samples.setdefault((spec.pca_images, spec.seed), []).append((spec, entry))",
        "            samples.setdefault((spec.pca_images, self.job.specs[0].seed), []).append((spec, entry))",
        (
            "tests/test_encoder_and_modules_arithmetic.py::test_pca_spaces_of_one_model_fit_on_their_own_seeds_sample",
        ),
    ),
    Mutant(
        "torchrun-rank-from-local-rank",
        "neurotorch/features/extract.py",
        '        rank = int(os.environ.get("RANK", "0"))',
        '        rank = int(os.environ.get("LOCAL_RANK", "0"))',
        (
            "tests/test_encoder_and_modules_arithmetic.py::test_a_torchrun_rank_is_the_global_rank_not_the_node_local_one",
        ),
    ),
    Mutant(
        "folds-by-python-hash",
        "neurotorch/models/ridge.py",
        "    return torch.tensor([zlib.crc32(str(n).encode()) % n_folds for n in names], dtype=torch.long)",
        "    return torch.tensor([hash(str(n)) % n_folds for n in names], dtype=torch.long)",
        (
            "tests/test_encoder_and_modules_arithmetic.py::test_folds_are_the_crc32_of_the_image_name_in_every_process",
        ),
    ),
    Mutant(
        "embeddings-normalised-per-dimension",
        "neurotorch/synthetic/stimuli.py",
        "        emb /= np.linalg.norm(emb, axis=1, keepdims=True)",
        "        emb /= np.linalg.norm(emb, axis=0, keepdims=True)",
        ("tests/test_encoder_and_modules_arithmetic.py::test_every_embedding_row_has_unit_norm",),
    ),
    Mutant(
        "laion-module-drops-predict-part",
        "neurotorch/lightning/laion_fmri.py",
        "            predict_part=predict_part,\n",
        "",
        (
            "tests/test_predict_part.py::test_the_laion_module_predicts_the_trials_of_the_named_part",
        ),
    ),
    Mutant(
        "connectome-module-drops-predict-part",
        "neurotorch/lightning/connectome.py",
        "            predict_part=predict_part,\n",
        "",
        (
            "tests/test_predict_part.py::test_the_connectome_module_predicts_the_subjects_of_the_named_part",
        ),
    ),
    Mutant(
        "leadfield-modules-drop-predict-part",
        "neurotorch/lightning/meeg.py",
        "            predict_part=predict_part,\n        )\n        self.leadfield_spec",
        "        )\n        self.leadfield_spec",
        ("tests/test_predict_part.py::test_simulated_modules_predict_the_named_part",),
    ),
    Mutant(
        "runs-module-drops-predict-part",
        "neurotorch/lightning/meeg.py",
        "seed=seed, predict_part=predict_part\n",
        "seed=seed\n",
        ("tests/test_predict_part.py::test_the_runs_module_predicts_the_runs_of_the_named_part",),
    ),
]
