"""Items seen per split, per DataModule and worker count, through a real Lightning Trainer.

Runs every DataModule of ``tests/test_exactly_once.py`` (fMRI map and stream, M/EEG simulation
and calibration, connectome; split and batch sizes that leave remainders) for one epoch on tiny
synthetic data, and prints a Markdown table of items seen, distinct items and items in the split.
The tests assert the same counts; this prints them.

    python scripts/exactly_once_report.py [--workers 0 2]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
os.environ.setdefault("NEUROTORCH_PROGRESS", "0")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    for name in ("lightning.pytorch", "lightning.pytorch.utilities.rank_zero", "neurotorch"):
        logging.getLogger(name).setLevel(logging.ERROR)

    from exactly_once import as_key, read_records
    from record_ids import RecordIds, trainer
    from test_exactly_once import CASES

    from neurotorch.synthetic.laion_fmri import make_laion_fmri

    with tempfile.TemporaryDirectory(prefix="neurotorch-exactly-once-") as scratch:
        os.environ["NEUROTORCH_DATA"] = str(Path(scratch, "data"))  # the synthetic connectome
        root = make_laion_fmri(Path(scratch) / "tiny", size="tiny", seed=0, progress=False)
        print("| DataModule | workers | split | items seen | distinct | in split |")
        print("|---|---|---|---|---|---|")
        for case, (make, ids, expected) in CASES.items():
            for workers in args.workers:
                out = Path(tempfile.mkdtemp(dir=scratch))
                datamodule = make(root, workers)
                model = RecordIds(str(out), ids)
                run = trainer(out, max_epochs=1)
                run.fit(model, datamodule)
                run.test(model, datamodule)
                (record,) = read_records(out, 1)
                for split, key in (("train", "train/0"), ("val", "val/0"), ("test", "test")):
                    seen = [as_key(i) for batch in record.get(key, []) for i in batch]
                    wanted = len(expected(datamodule, split))
                    print(
                        f"| {case} | {workers} | {split} | {len(seen)} | {len(set(seen))} "
                        f"| {wanted} |"
                    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
