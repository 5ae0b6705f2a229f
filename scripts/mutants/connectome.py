"""Mutants of the connectome family (0.4.0): permutation inference, batch metadata, duplicated
subjects, output folders, atlases, devices, summaries, epochs."""

from mutants import Mutant

PERMUTATION = "tests/test_connectome_permutation.py"
FAULTS = "tests/test_faults_connectome.py"
OUTPUTS = "tests/test_connectome_outputs.py"

MUTANTS = [
    Mutant(
        "fwer-null-last-block-only",
        "neurotorch/connectome/permutation.py",
        "            torch.maximum(null[:, k], abs_t[1:].amax(dim=1), out=null[:, k])",
        "            null[:, k] = abs_t[1:].amax(dim=1)",
        (f"{PERMUTATION}::test_null_spans_every_voxel_block",),
    ),
    Mutant(
        "sign-flips-seed-ignored",
        "neurotorch/connectome/permutation.py",
        '    generator = torch.Generator().manual_seed(check_int("seed", seed))',
        '    generator = torch.Generator().manual_seed(check_int("seed", seed) * 0)',
        (f"{PERMUTATION}::test_sign_flips_honour_their_seed",),
    ),
    Mutant(
        "fwer-observed-in-float32",
        "neurotorch/connectome/lnm.py",
        "        p_fwe = fwe_p_values(observed, max_t_null)",
        "        p_fwe = fwe_p_values(np.abs(t.astype(np.float32)), max_t_null)",
        (f"{PERMUTATION}::test_network_map_fwer_matches_an_independent_computation",),
    ),
    Mutant(
        "duplicate-subjects-counted-twice",
        "neurotorch/connectome/batches.py",
        "        _check_no_duplicate_subjects(self.headers)\n",
        "",
        (f"{FAULTS}::test_fault_gives_named_error[batch-file-copied]",),
    ),
    Mutant(
        "copied-lacuna-file-not-fingerprinted",
        "neurotorch/connectome/batches.py",
        '        keys.append((f"data:{header.first_subject_fingerprint}", "identical stored data"))',
        '        keys.append((f"data:{header.path}", "identical stored data"))',
        (f"{FAULTS}::test_fault_gives_named_error[batch-file-copied-no-ids]",),
    ),
    Mutant(
        "metadata-digest-not-checked",
        "neurotorch/connectome/batches.py",
        "        metadata_checked=_check_digest(f, path, indices=mask_indices, affine=mask_affine),",
        "        metadata_checked=False,",
        (f"{FAULTS}::test_fault_gives_named_error[batch-attribute-value-changed]",),
    ),
    Mutant(
        "affine-finiteness-unchecked",
        "neurotorch/connectome/batches.py",
        "    if not np.all(np.isfinite(affine)):",
        "    if False:",
        (f"{FAULTS}::test_fault_gives_named_error[batch-affine-not-finite]",),
    ),
    Mutant(
        "damaged-attribute-unnamed",
        "neurotorch/connectome/batches.py",
        "    except _DAMAGED as exc:",
        "    except NotImplementedError as exc:",
        (f"{FAULTS}::test_fault_gives_named_error[batch-attribute-message-damaged]",),
    ),
    Mutant(
        "output-folder-ownership-ignored",
        "neurotorch/connectome/outputs.py",
        "    previous = _previous_output(path, what, overwrite)",
        "    previous = _files_under(path) if path.is_dir() else []",
        (
            f"{OUTPUTS}::test_save_takes_an_empty_folder_and_refuses_anything_else",
            f"{OUTPUTS}::test_lnm_command_never_writes_over_the_users_files",
        ),
    ),
    Mutant(
        "partial-output-left-on-error",
        "neurotorch/connectome/outputs.py",
        "        shutil.rmtree(staging, ignore_errors=True)",
        "        pass",
        (f"{OUTPUTS}::test_a_full_disk_leaves_no_partial_output",),
    ),
    Mutant(
        "write-error-without-path",
        "neurotorch/connectome/outputs.py",
        "        with reported_write(self.path / name), atomic_path(self.staging / name) as tmp:",
        "        with atomic_path(self.staging / name) as tmp:",
        (f"{FAULTS}::test_fault_gives_named_error[out-disk-full-save]",),
    ),
    Mutant(
        "atlas-overlap-unchecked",
        "neurotorch/connectome/atlas.py",
        "        if not labels.any():",
        "        if False:",
        (f"{FAULTS}::test_fault_gives_named_error[atlas-misses-the-brain]",),
    ),
    Mutant(
        "lacuna-percent-as-share",
        "neurotorch/connectome/atlas.py",
        '                reduced = 100.0 * parcels.reduce(values, "mean")',
        '                reduced = parcels.reduce(values, "percent")',
        ("tests/test_connectome_api.py::test_lacuna_convention_equals_nilearns_labels_masker",),
    ),
    Mutant(
        "cuda-availability-unchecked",
        "neurotorch/config.py",
        "        if count == 0 or (resolved.index or 0) >= count:",
        "        if False:",
        (f"{FAULTS}::test_fault_gives_named_error[device-cuda-absent]",),
    ),
    Mutant(
        "summary-hides-columns",
        "neurotorch/connectome/_summary_table.py",
        "        return self.to_string(index=False)",
        "        return super().__repr__()",
        ("tests/test_connectome_api.py::test_printed_summary_shows_every_column_and_the_peak",),
    ),
    Mutant(
        "summary-peak-inside-the-lesion",
        "neurotorch/connectome/result.py",
        "        outside = np.where(self.lesion_masks, -1.0, np.abs(self.t.astype(np.float64)))",
        "        outside = np.abs(self.t.astype(np.float64))",
        ("tests/test_connectome_api.py::test_printed_summary_shows_every_column_and_the_peak",),
    ),
    Mutant(
        "stream-epoch-ignored",
        "neurotorch/data/connectome/subjects.py",
        "        order = epoch_order(len(chunks), self.epoch, seed=self.seed, shuffle=self.shuffle)",
        "        order = epoch_order(len(chunks), 0, seed=self.seed, shuffle=self.shuffle)",
        (
            "tests/test_connectome_epochs.py::test_plain_dataloader_with_set_epoch_and_persistent_workers",
        ),
    ),
    Mutant(
        "convert-replaces-foreign-batch",
        "neurotorch/connectome/convert.py",
        '        raise DatasetExistsError(\n            f"{path} holds other subjects',
        "        return False\n        raise DatasetExistsError(\n"
        '            f"{path} holds other subjects',
        (f"{FAULTS}::test_fault_gives_named_error[convert-over-foreign-batch]",),
    ),
    Mutant(
        "connectome-stream-loader-epoch-not-advanced",
        "neurotorch/data/loader.py",
        "                self.dataset.set_epoch(self._epochs_started)",
        "                pass",
        ("tests/test_connectome_epochs.py::test_stream_loader_reshuffles_and_resumes_mid_epoch",),
    ),
    Mutant(
        "connectome-stream-resume-in-epoch-zero",
        "neurotorch/data/loader.py",
        '        self.dataset.set_epoch(state_dict["epoch"])',
        "        self.dataset.set_epoch(0)",
        ("tests/test_connectome_epochs.py::test_stream_loader_reshuffles_and_resumes_mid_epoch",),
    ),
    Mutant(
        "regional-damage-voxel-volume-diagonal",
        "neurotorch/connectome/atlas.py",
        "voxel_mm3 = abs(np.linalg.det(self.image.affine[:3, :3]))",
        "voxel_mm3 = abs(np.prod(np.diag(self.image.affine[:3, :3])))",
        (
            "tests/test_meeg_and_lesion_arithmetic.py::test_regional_damage_volume_uses_the_voxel_volume_of_an_oblique_grid",
        ),
    ),
    Mutant(
        "lesion-network-loss-over-all-voxels",
        "neurotorch/models/lesion_network.py",
        "        return (((predicted - observed) ** 2) * keep).sum() / keep.sum()",
        "        return (((predicted - observed) ** 2) * keep).mean()",
        (
            "tests/test_meeg_and_lesion_arithmetic.py::test_lesion_network_loss_is_the_mean_over_the_voxels_it_keeps",
        ),
    ),
    Mutant(
        "lesion-model-mask-not-averaged",
        "neurotorch/models/lesion_network.py",
        "weights = lesion_masks / lesion_masks.sum(dim=1, keepdim=True).clamp(min=1)",
        "weights = lesion_masks",
        (
            "tests/test_meeg_and_lesion_arithmetic.py::test_lesion_network_prediction_of_a_lesion_is_the_mean_of_its_voxels_predictions",
        ),
    ),
]
