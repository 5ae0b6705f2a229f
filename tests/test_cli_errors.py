"""The command line speaks one way: ``error: ...`` on stderr, exit 2 for usage and 1 for data errors,
no traceback unless asked; plus ``--version``, logging levels and the silenced progress bars."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

import neurotorch
from neurotorch.errors import ConfigError, DataDirNotSetError

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m neurotorch ARGS`` in a fresh process that imports this checkout."""
    environ = {k: v for k, v in os.environ.items() if k not in ("NEUROTORCH_DEBUG",)}
    environ["PYTHONPATH"] = os.pathsep.join([str(REPO), environ.get("PYTHONPATH", "")])
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "neurotorch", *args],
        capture_output=True,
        text=True,
        env=environ,
        timeout=120,
    )


def assert_one_error(
    result: subprocess.CompletedProcess, status: int, *phrases: str, first: bool = True
) -> None:
    """One ``error:`` line (the first line of stderr, unless Lightning spoke first), no traceback."""
    assert result.returncode == status, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and (result.stderr.startswith("error: ") or not first), result.stderr
    assert "Traceback" not in result.stderr
    for phrase in phrases:
        assert phrase in result.stderr, (phrase, result.stderr)


USAGE_ERRORS = {
    "unknown command": (["frobnicate"], "invalid choice"),
    "synth size": (["synth", "laion-fmri", "--out", "x", "--size", "huge"], "--size"),
    "synth no out": (["synth", "connectome"], "--out"),
    "prepare dtype": (["prepare", "--dtype", "int7"], "--dtype"),
    "download workers": (["download", "laion-fmri", "--out", "x", "--workers", "0"], "--workers"),
    "describe no source": (["describe"], "source"),
    "lnm alpha": (["lnm", "l", "--connectome", "c", "--out", "o", "--alpha", "5"], "--alpha"),
    "grid nnz": (["grid", "lf", "--out", "o", "--nnz", "2.7", "--alpha-snr", "0.5"], "--nnz"),
    # the value and what it must be, not the name of a type function ("invalid positive_int")
    "prepare unit word": (["prepare", "--unit", "x"], "--unit: must be a whole number, got 'x'"),
    "lnm alpha word": (
        ["lnm", "l", "--connectome", "c", "--out", "o", "--alpha", "five"],
        "--alpha: must be a number, got 'five'",
    ),
}


@pytest.mark.parametrize("case", sorted(USAGE_ERRORS))
def test_usage_errors_exit_2_with_one_line(case):
    args, phrase = USAGE_ERRORS[case]
    assert_one_error(run_cli(*args), 2, phrase, "--help")


def test_data_errors_of_every_command_exit_1_without_traceback(tiny_laion_root, tmp_path):
    missing = str(tmp_path / "missing")
    unknown_subject = ["prepare", "--data-dir", str(tiny_laion_root), "--subject", "sub-99"]
    download = ["download", "laion-fmri", "--out", str(tmp_path / "dl"), "--source", missing]
    cases = [
        (unknown_subject, ["unknown subject", "sub-99", "sub-01, sub-02"]),
        (["prepare"], ["LAION_FMRI_DATA_DIR"]),
        (["describe", missing], [missing]),
        (download, [missing]),
        (["lnm", missing, "--connectome", missing, "--out", str(tmp_path / "o")], [missing]),
    ]
    for args, phrases in cases:
        assert_one_error(run_cli(*args, env={"LAION_FMRI_DATA_DIR": ""}), 1, *phrases)


def test_synth_overwrite_leaves_a_users_folder_alone(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "results.csv").write_text("1,2,3\n")
    result = run_cli("synth", "laion-fmri", "--out", str(folder), "--size", "tiny", "--overwrite")
    assert_one_error(result, 1, str(folder), "not written by neurotorch")
    assert [p.name for p in folder.iterdir()] == ["results.csv"]
    assert (folder / "results.csv").read_text() == "1,2,3\n"


@pytest.mark.slow
def test_fit_usage_and_data_errors(tmp_path):
    assert_one_error(run_cli("fit", "--config", "no-such.yaml"), 2, "no-such.yaml", "configs")
    result = run_cli(
        "fit",
        *("--config", str(REPO / "configs" / "encoder.yaml")),
        *("--data.init_args.data_dir", str(tmp_path / "nowhere")),
        *("--trainer.logger.init_args.save_dir", str(tmp_path)),
    )
    assert_one_error(result, 1, str(tmp_path / "nowhere"), first=False)
    assert result.stderr.rstrip().splitlines()[-1].startswith("error: ")


def test_debug_flag_and_variable_show_the_traceback(tmp_path):
    missing = str(tmp_path / "missing")
    for result in (
        run_cli("describe", missing, "--debug"),
        run_cli("describe", missing, env={"NEUROTORCH_DEBUG": "1"}),
    ):
        assert result.returncode == 1
        assert "Traceback" in result.stderr and missing in result.stderr


def test_version():
    result = run_cli("--version")
    assert (
        result.returncode == 0 and result.stdout.strip() == f"neurotorch {neurotorch.__version__}"
    )


def test_unexpected_errors_are_one_line_too(monkeypatch, capsys):
    from neurotorch import cli
    from neurotorch.cli import synth

    monkeypatch.setitem(synth.FAMILIES, "laion-fmri", "neurotorch.cli:missing_function")
    assert cli.main(["synth", "laion-fmri", "--out", "x"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: unexpected AttributeError") and "--debug" in err


def test_load_dataset_without_a_data_dir_names_the_variable(monkeypatch):
    monkeypatch.delenv("LAION_FMRI_DATA_DIR", raising=False)
    with pytest.raises(DataDirNotSetError, match="LAION_FMRI_DATA_DIR"):
        neurotorch.load_dataset("laion-fmri", split="random_0/train")


# -- logging ----------------------------------------------------------------------------------------


@pytest.fixture
def restore_level():
    logger = logging.getLogger("neurotorch")
    level = logger.level
    yield logger
    logger.setLevel(level)


def test_one_switch_sets_the_level_of_every_neurotorch_logger(restore_level, capsys, monkeypatch):
    child = logging.getLogger("neurotorch.data.fmri.store")
    assert neurotorch.set_log_level("warning") == logging.INFO
    child.info("hidden")
    child.warning("shown")
    assert capsys.readouterr().err == "warning: shown\n"
    monkeypatch.setenv("NEUROTORCH_LOG_LEVEL", "DEBUG")
    neurotorch.set_log_level()
    child.debug("details")
    assert capsys.readouterr().err == "details\n"
    with pytest.raises(ConfigError, match="'loud'"):
        neurotorch.set_log_level("loud")


def test_info_is_shown_by_default_and_the_variable_silences_it():
    code = "import logging, neurotorch; logging.getLogger('neurotorch.x').info('hello')"
    env = {k: v for k, v in os.environ.items() if k != "NEUROTORCH_LOG_LEVEL"}
    env["PYTHONPATH"] = str(REPO)
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    quiet = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**env, "NEUROTORCH_LOG_LEVEL": "error"},
    )
    assert (shown.stderr, quiet.stderr) == ("hello\n", "")


@pytest.mark.slow
def test_progress_variable_turns_lightnings_bar_off(tiny_laion_root, tmp_path, monkeypatch):
    from neurotorch.lightning.cli import NeurotorchLightningCLI

    args = [
        *("--config", str(REPO / "configs" / "encoder.yaml")),
        *("--data.init_args.data_dir", str(tiny_laion_root)),
        *("--trainer.logger.init_args.save_dir", str(tmp_path)),
    ]
    bars = {}
    for value in ("1", "0"):
        monkeypatch.setenv("NEUROTORCH_PROGRESS", value)
        bars[value] = NeurotorchLightningCLI(args=args, run=False).trainer.progress_bar_callback
    assert bars["1"] is not None and bars["0"] is None


def test_progress_variable_wins_over_progress_true(monkeypatch, capsys):
    import numpy as np

    from neurotorch.fmri.split_makers import make_splits

    names = [f"img-{i:02d}.jpg" for i in range(23)]
    embeddings = np.random.default_rng(1).standard_normal((23, 4))
    for value, shown in (("1", True), ("0", False)):
        monkeypatch.setenv("NEUROTORCH_PROGRESS", value)
        make_splits(names, embeddings, pool="shared", n_random=1, k=2, progress=True)
        assert ("splits shared" in capsys.readouterr().err) == shown


def test_an_error_in_a_dataloader_worker_is_shown_without_the_workers_traceback(
    monkeypatch, capsys
):
    from torch.utils.data import DataLoader, Dataset

    from neurotorch import cli
    from neurotorch.errors import CorruptFileError

    class Damaged(Dataset):
        def __len__(self) -> int:
            return 3

        def __getitem__(self, index: int):
            raise CorruptFileError("b.nii.gz fails its CRC:\ndownload it again")

    def load(args) -> int:
        next(iter(DataLoader(Damaged(), num_workers=1)))
        return 0

    monkeypatch.setattr(cli.describe, "run", load)
    assert cli.main(["describe", "anything"]) == 1
    assert capsys.readouterr().err == "error: b.nii.gz fails its CRC:\ndownload it again\n"


def test_synth_says_when_the_dataset_is_already_there(tmp_path, capsys):
    from neurotorch import cli

    out = tmp_path / "laion"
    args = ["synth", "laion-fmri", "--size", "tiny", "--out", str(out)]
    assert cli.main(args) == 0
    assert capsys.readouterr().out.endswith(f"dataset written to {out}\n")
    files = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert cli.main(args) == 0
    assert capsys.readouterr().out == (
        f"synthetic laion-fmri dataset already in {out} (same size and seed); kept\n"
    )
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == files
    assert cli.main([*args, "--seed", "1"]) == 1  # another dataset: refused, not "already there"
    assert "other parameters" in capsys.readouterr().err
    # a file of it deleted: written again, not kept incomplete
    betas = next(out.rglob("sub-01_ses-02_*SingletrialBetas_statmap.nii.gz"))
    betas.unlink()
    assert cli.main(args) == 0
    assert capsys.readouterr().out == (
        f"synthetic laion-fmri dataset in {out} lacked files; written again\n"
    )
    assert betas.is_file() and sorted(out.rglob("*.nii.gz")) == sorted(
        p for p in files if p.name.endswith(".nii.gz")
    )
