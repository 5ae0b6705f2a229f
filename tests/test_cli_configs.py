"""Configs as the user meets them: built in, found by name from any folder, listed, copied out to
edit; a mistake in one is a single ``error:`` line naming the key, the value and the choices,
exit 2, before any data work; ``--help`` lists neurotorch's classes and documents every option."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

import neurotorch
from neurotorch.cli import main
from neurotorch.cli.configs import builtin_configs, builtin_folder, resolve_config
from neurotorch.cli.main import build_parser

REPO = Path(__file__).resolve().parents[1]
NAMES = ["calibrator", "encoder", "encoder_banded", "encoder_features", "encoder_stream", "lnm"]


def run(capsys, *args: str) -> tuple[int, str, str]:
    status = main(list(args))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_the_builtin_configs_are_the_checkouts_configs_folder():
    assert sorted(builtin_configs()) == NAMES
    assert (REPO / "configs").resolve() == builtin_folder().resolve()  # one copy of each YAML
    for path in builtin_configs().values():
        config = yaml.safe_load(path.read_text())
        assert {"trainer", "model", "data"} <= set(config)
        assert config["trainer"]["enable_checkpointing"] is True


@pytest.mark.slow
def test_the_configs_are_package_data_of_the_wheel(tmp_path):
    """The wheel carries the configs and both licences (the package's, the split files'), and
    its build warns of nothing: setuptools deprecations become build failures on their date."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(
        REPO / "neurotorch", source / "neurotorch", ignore=shutil.ignore_patterns("__pycache__")
    )
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-v"]
    build = subprocess.run(
        [*command, "-w", str(tmp_path / "wheel"), str(source)], capture_output=True, text=True
    )
    assert build.returncode == 0, build.stderr
    assert "deprecated" not in (build.stdout + build.stderr).lower()
    (wheel,) = (tmp_path / "wheel").glob("neurotorch-*.whl")
    packed = zipfile.ZipFile(wheel)
    assert {f"neurotorch/configs/{name}.yaml" for name in NAMES} <= set(packed.namelist())
    info = f"neurotorch-{neurotorch.__version__}.dist-info"
    licences = {n for n in packed.namelist() if n.startswith(f"{info}/licenses/")}
    assert licences == {
        f"{info}/licenses/LICENSE",
        f"{info}/licenses/neurotorch/fmri/official_splits/LICENSE",
    }
    assert "License-Expression: BSD-3-Clause" in packed.read(f"{info}/METADATA").decode()


def test_jsonargparse_is_asked_in_the_range_of_lightnings_cli():
    """The commands are Lightning's CLI, which calls jsonargparse APIs that version 5 removes:
    the package asks for the range Lightning's own CLI extra declares."""
    from importlib.metadata import requires

    from packaging.requirements import Requirement

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    (ours,) = [r for r in map(Requirement, declared) if r.name == "jsonargparse"]
    (theirs,) = [
        r
        for r in map(Requirement, requires("lightning") or [])
        if r.name == "jsonargparse" and r.marker and r.marker.evaluate({"extra": "pytorch-extra"})
    ]
    for version in ("4.38.0", "4.39.0", "4.53.0", "5.0.0", "5.1.0"):
        assert ours.specifier.contains(version) == theirs.specifier.contains(version), version


@pytest.mark.parametrize("given", ["encoder", "encoder.yaml", "configs/encoder.yaml"])
def test_a_builtin_config_is_found_by_name_from_any_folder(given, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert Path(resolve_config(given)) == builtin_folder() / "encoder.yaml"


def test_a_file_of_the_same_name_wins_over_the_builtin(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("encoder.yaml").write_text("model: {}\n")
    assert resolve_config("encoder.yaml") == "encoder.yaml"


def test_an_unknown_config_lists_the_builtins(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    status, _, err = run(capsys, "fit", "--config", "encodr")
    assert status == 2 and err.count("\n") == 1
    assert "--config encodr" in err and all(name in err for name in NAMES)
    status, _, err = run(capsys, "fit")
    assert status == 2 and "--config NAME_OR_FILE" in err and "encoder_banded" in err


def test_an_unknown_config_is_named_before_lightning_is_imported(tmp_path):
    """A mistyped config name is a usage error told at once, not after Lightning's imports."""
    probe = (
        "import sys; from neurotorch.cli import main; status = main(['fit', '--config', "
        "'encodr']); print(status, 'lightning' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.stdout.split() == ["2", "False"], done.stdout + done.stderr
    assert "encodr" in done.stderr and "encoder_banded" in done.stderr


def test_configs_lists_every_builtin_with_what_it_trains(capsys):
    status, out, _ = run(capsys, "configs")
    assert status == 0
    listed = {line.split()[0]: line for line in out.splitlines()[: len(NAMES)]}
    assert sorted(listed) == NAMES
    assert "ridge encoder" in listed["encoder"] and "isotonic" in listed["calibrator"]


def test_configs_copy_never_overwrites_without_force(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run(capsys, "configs", "copy", "encoder")[0] == 0
    copied = tmp_path / "encoder.yaml"
    assert copied.read_text() == (builtin_folder() / "encoder.yaml").read_text()
    copied.write_text("# my edits\n")
    status, _, err = run(capsys, "configs", "copy", "encoder")
    assert status == 1 and "--force" in err and str(copied.name) in err
    assert copied.read_text() == "# my edits\n"
    assert run(capsys, "configs", "copy", "encoder", "--force")[0] == 0
    assert copied.read_text() == (builtin_folder() / "encoder.yaml").read_text()
    (tmp_path / "mine").mkdir()
    assert run(capsys, "configs", "copy", "lnm.yaml", "mine")[0] == 0
    assert (tmp_path / "mine" / "lnm.yaml").is_file()
    assert run(capsys, "configs", "copy", "lnm", "new/")[0] == 0  # a new folder, by its slash
    assert (tmp_path / "new" / "lnm.yaml").is_file()
    status, _, err = run(capsys, "configs", "copy", "nosuch")
    assert status == 2 and "encoder" in err


# -- config mistakes: one line, exit 2, nothing read or written ---------------------------------

MISTAKES = {
    "choice of a model": (
        ["--model.init_args.score", "rr"],
        ["--model.init_args.score", "'rr'", "'r', 'r2', 'mse'", "did you mean 'r'"],
    ),
    "choice of a calibrator": (
        ["--model", "IsotonicCalibrator", "--model.init_args.coverage_mode", "pointwize"],
        ["coverage_mode", "'pointwize'", "'time_averaged', 'pointwise'"],
    ),
    "removed DataModule key": (
        ["--data.init_args.mode", "strem"],
        ["--data.init_args.mode", "LaionFMRIDataModule has no parameter 'mode'", "'streaming'"],
    ),
    "choice of a DataModule setting": (
        ["--data.init_args.read.nan_policy", "zeroo"],
        ["nan_policy", "'zeroo'", "'raise'", "'zero'", "'keep'"],
    ),
    "misspelt model key": (
        ["--model.init_args.scor", "r"],
        ["LinearEncoder has no parameter 'scor'", "did you mean 'score'"],
    ),
    "misspelt key of a settings parameter": (
        ["--data.init_args.voxels.rio", "face"],
        ["VoxelSelection has no parameter 'rio'", "'nc_threshold'", "did you mean 'roi'"],
    ),
    "wrong type": (["--data.init_args.streaming", "maybe"], ["streaming", "bool", "'maybe'"]),
    "value a model refuses": (
        ["--model.init_args.n_folds", "1"],
        ["LinearEncoder", "n_folds must be at least 2"],
    ),
    "unknown model class": (
        ["--model", "LinearEncodr"],
        ["--model", "'LinearEncodr'", "did you mean 'LinearEncoder'"],
    ),
    "trainer setting": (["--trainer.max_epochs", "x"], ["--trainer.max_epochs", "int", "'x'"]),
}


@pytest.mark.parametrize("case", sorted(MISTAKES))
def test_a_config_mistake_is_one_line_before_any_data_work(
    case, tmp_path, monkeypatch, capsys, record_property
):
    args, phrases = MISTAKES[case]
    data_home = tmp_path / "data"
    monkeypatch.setenv("NEUROTORCH_DATA", str(data_home))
    monkeypatch.chdir(tmp_path)
    status, out, err = run(capsys, "fit", "--config", "encoder", *args)
    assert status == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for phrase in phrases:
        assert phrase in err, (phrase, err)
    assert "Namespace(" not in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no runs/, no dataset
    record_property("fault", "named")


@pytest.mark.parametrize(
    ("written", "typo", "phrases"),
    [
        ("neurotorch.models.LinearEncoder", "LinearEncodr", ["--model", "'LinearEncoder'"]),
        ("neurotorch.lightning.LaionFMRIDataModule", "LaionFMRIDataModul", ["--data"]),
    ],
)
def test_a_misspelt_class_path_in_a_config_file_is_named(
    written, typo, phrases, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    assert run(capsys, "configs", "copy", "encoder", "mine.yaml")[0] == 0
    mine = tmp_path / "mine.yaml"
    misspelt = written.rsplit(".", 1)[0] + "." + typo
    mine.write_text(mine.read_text().replace(written, misspelt))
    status, _, err = run(capsys, "fit", "--config", "mine.yaml")
    assert status == 2 and err.count("\n") == 1 and f"no class '{misspelt}'" in err
    assert "did you mean" in err and "NoneType" not in err
    for phrase in phrases:
        assert phrase in err, (phrase, err)


@pytest.mark.parametrize(
    ("broken", "phrases"),
    [
        ("    alphas: [1, 10\n", ["line 4, column 13", "flow sequence", "line 5, column"]),
        (
            "    penalties: [1, 10]\n   n_folds: 3\n",
            ["block mapping at line 2", "line 5, column 4"],
        ),
    ],
)
def test_a_config_that_is_not_yaml_names_its_file_and_line(
    broken, phrases, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    Path("mine.yaml").write_text(
        "model:\n  class_path: LinearEncoder\n  init_args:\n" + broken + "data:\n  x: 1\n"
    )
    for args in (["--config", "mine.yaml"], ["--config=mine.yaml"]):
        status, out, err = run(capsys, "fit", *args)
        assert status == 2 and out == "" and err.count("\n") == 1, err
        assert err.startswith("error: --config mine.yaml: not valid YAML"), err
        for phrase in phrases:
            assert phrase in err, (phrase, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.yaml"]


# -- help ------------------------------------------------------------------------------------------


def test_fit_help_lists_neurotorchs_models_and_datamodules(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--help"])
    assert exit_.value.code == 0
    out = re.sub(r"\s+", " ", capsys.readouterr().out)
    for name in ("LinearEncoder", "IsotonicCalibrator", "NeuralCalibrator", "LesionNetworkModel"):
        assert f"neurotorch.models.{name}" in out
    for name in ("LaionFMRIDataModule", "CalibrationDataModule", "ConnectomeDataModule"):
        assert f"neurotorch.lightning.{name}" in out


@pytest.mark.parametrize(
    "model", ["LinearEncoder", "IsotonicCalibrator", "NeuralCalibrator", "LesionNetworkModel"]
)
def test_every_model_argument_has_help_text_and_choices_are_listed(model, capsys):
    import inspect

    import neurotorch.models

    with pytest.raises(SystemExit):
        main(["fit", "--model.help", model])
    out = capsys.readouterr().out
    blocks: dict[str, str] = {}
    for entry in re.split(r"\n(?=  --model\.)", out)[1:]:
        head, *rest = entry.strip().splitlines()
        spec, *described = re.split(r"\s{2,}", head, maxsplit=1)
        name = re.match(r"--model\.(\w+)", spec).group(1)
        blocks[name] = " ".join([*described, *(line.strip() for line in rest)])
    parameters = inspect.signature(getattr(neurotorch.models, model)).parameters
    assert sorted(blocks) == sorted(parameters)
    for name, text in blocks.items():
        described = re.sub(r"\(type:.*", "", " ".join(text.split()), flags=re.S).strip()
        assert len(described.split()) >= 3, (name, text)
        assert "default:" in text
    if model == "LinearEncoder":
        assert "--model.score {r,r2,mse}" in out and "--model.solver {auto,primal,dual}" in out


def test_every_option_of_every_argparse_command_has_help_and_shows_its_default():
    parser = build_parser()
    (commands,) = [a for a in parser._actions if a.dest == "command"]
    for name, sub in commands.choices.items():
        if not sub.add_help:  # fit/validate/test/predict: Lightning's help (tested above)
            continue
        text = sub.format_help()
        for action in sub._actions:
            if action.dest == "help":
                continue
            assert action.help, f"neurotorch {name} {action.option_strings or action.dest}"
            if action.default not in (None, False) and not action.required:
                assert f"(default: {action.default})" in re.sub(r"\s+", " ", text), (name, action)


def test_no_arguments_prints_usage_and_exits_2(capsys):
    status, out, err = run(capsys)
    assert status == 2 and out == ""
    assert err.startswith("usage: neurotorch") and "configs" in err and "fit" in err


def test_models_and_datamodules_are_found_by_short_name(capsys):
    short = ["--model", "NeuralCalibrator", "--data", "CalibrationDataModule"]
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", "calibrator", *short, "--print_config"])
    assert exit_.value.code == 0
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["model"]["class_path"] == "neurotorch.models.NeuralCalibrator"
    assert config["data"]["class_path"] == "neurotorch.lightning.CalibrationDataModule"
