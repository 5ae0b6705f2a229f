"""A calm console: results on standard output (and kept at ``NEUROTORCH_LOG_LEVEL=WARNING``),
neurotorch's messages on standard error, and nothing else: no Lightning adverts, no deprecation
warnings of the pinned stack, no empty model summary, no progress bar with
``NEUROTORCH_PROGRESS=0``. Counted on real ``neurotorch`` processes, as a user runs them."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from neurotorch import set_log_level
from neurotorch.lightning.cli import quiet_lightning
from neurotorch.log import results

REPO = Path(__file__).resolve().parents[1]
RESULT_LINES = ("checkpoint:", "test: median r", "metrics:", "plot:")


def neurotorch(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """``python -m neurotorch ARGS`` in ``cwd``, importing this checkout."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("NEUROTORCH_LOG")}
    environ.update(PYTHONPATH=str(REPO), NEUROTORCH_PROGRESS="0", **env)
    command = [sys.executable, "-m", "neurotorch", *args]
    return subprocess.run(
        command, cwd=cwd, env=environ, capture_output=True, text=True, timeout=600
    )


def tiny_encoder(root: Path) -> list[str]:
    return ["--config", "encoder", "--data.init_args.data_dir", str(root)]


@pytest.mark.slow
def test_fit_prints_results_on_stdout_and_one_line_on_stderr(tiny_laion_root, tmp_path):
    fit = neurotorch("fit", *tiny_encoder(tiny_laion_root), cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr
    stderr = fit.stderr.splitlines()
    assert len(stderr) == 1 and stderr[0].startswith(f"data: {tiny_laion_root}"), fit.stderr
    assert not re.search(r"Tip:|deprecated|[Ww]arning", fit.stderr + fit.stdout)
    for label in RESULT_LINES:
        assert re.search(rf"^{label}", fit.stdout, re.M), (label, fit.stdout)
    assert "Trainable params" not in fit.stdout  # no summary of a model without parameters
    assert not re.search(r"Epoch 0|it/s", fit.stdout + fit.stderr)  # NEUROTORCH_PROGRESS=0

    checkpoint = re.search(r"^checkpoint: (\S+)", fit.stdout, re.M).group(1)
    test = neurotorch(
        "test",
        *tiny_encoder(tiny_laion_root),
        "--ckpt_path",
        checkpoint,
        cwd=tmp_path,
        NEUROTORCH_LOG_LEVEL="WARNING",
    )
    assert test.returncode == 0 and test.stderr == ""  # no "dirpath has changed" either
    for label in RESULT_LINES[1:]:
        assert re.search(rf"^{label}", test.stdout, re.M), (label, test.stdout)


def test_results_survive_the_warning_level(capsys):
    previous = set_log_level("WARNING")
    try:
        logging.getLogger("neurotorch.models").info("a message")
        results.info("metrics: runs/x/metrics.json")
    finally:
        set_log_level(previous)
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("metrics: runs/x/metrics.json\n", "")


@pytest.mark.parametrize(("level", "shown"), [("INFO", False), ("DEBUG", True)])
def test_lightnings_notes_show_at_debug_and_its_adverts_never(level, shown):
    previous = set_log_level(level)
    try:
        with quiet_lightning():
            for name in (
                "lightning.pytorch.utilities.rank_zero",
                "lightning.fabric.utilities.seed",
            ):
                logger = logging.getLogger(name)
                assert logger.isEnabledFor(logging.INFO) == shown
                advert = logger.makeRecord(name, logging.INFO, __file__, 1, "💡 Tip: try", (), None)
                note = logger.makeRecord(name, logging.INFO, __file__, 1, "Seed set to 0", (), None)
                assert (logger.filter(advert), logger.filter(note)) == (False, True)
    finally:
        set_log_level(previous)
