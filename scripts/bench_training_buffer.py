"""The shuffle buffer of a whole-brain streaming DataModule: first batch and worker memory.

A DataModule's training stream shuffles through a buffer that every DataLoader worker fills
before its first item. This compares the default (1,024 trials, or as many as fit in 256 MB: 117
at whole brain; `neurotorch.data.fmri.settings.training_shuffle_buffer`) with a 1,024-trial
buffer (the default before 0.4.0) on a subject of several sessions: the one session of a
``real``-preset tree (``neurotorch synth laion-fmri --size real``, see ``bench_scale.py``)
linked ``--sessions`` times into a scratch tree. Whole brain, ``random_0`` train part,
batches of 64, 2 workers; each run in a fresh process, the two alternated within each round.

    python scripts/bench_training_buffer.py --root /data/real --sessions 4 --repeat 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
sys.path.insert(0, str(SCRIPTS))

from bench_processes import best, interleaved, peak_rss_of_live_children, run_child  # noqa: E402

SUBJECT, SESSION = "sub-01", "ses-01"
BETAS = Path("derivatives", "glmsingle-tedana", SUBJECT)


def linked_tree(root: Path, sessions: int, into: Path) -> Path:
    """``root`` with its one session linked as ``ses-01 … ses-NN`` (every other entry linked)."""
    into.mkdir()
    for entry in root.iterdir():
        if entry.name != "derivatives":
            (into / entry.name).symlink_to(entry.resolve())
    for entry in (root / "derivatives").iterdir():
        if entry.name != BETAS.parts[1]:
            (into / "derivatives" / entry.name).parent.mkdir(parents=True, exist_ok=True)
            (into / "derivatives" / entry.name).symlink_to(entry.resolve())
    subject = into / BETAS
    subject.mkdir(parents=True)
    for entry in (root / BETAS).iterdir():
        if entry.is_file():
            (subject / entry.name).symlink_to(entry.resolve())
    for k in range(1, sessions + 1):
        session = f"ses-{k:02d}"
        folder = subject / session / "func"
        folder.mkdir(parents=True)
        for source in (root / BETAS / SESSION / "func").iterdir():
            name = source.name.replace(SESSION, session)
            (folder / name).symlink_to(source.resolve())
    return into


def child(root: str, buffer: int | None) -> None:
    """First batch and the whole epoch of the training loader; prints one JSON line."""
    from neurotorch.lightning import LaionFMRIDataModule

    dm = LaionFMRIDataModule(
        data_dir=root,
        subject=SUBJECT,
        voxels={"roi": None},
        trials={"split": "random_0", "val_fraction": 0.1},
        read={"shuffle_buffer": buffer},
        streaming=True,
        batch_size=64,
        num_workers=2,
        features=None,
    )
    dm.setup("fit")
    start = time.perf_counter()
    batches = iter(dm.train_dataloader())
    items = len(next(batches)["betas"])
    first = time.perf_counter() - start
    items += sum(len(batch["betas"]) for batch in batches)
    print(
        json.dumps(
            {
                "buffer": dm.datasets["train"].read.shuffle_buffer,
                "first": first,
                "epoch": time.perf_counter() - start,
                "items": items,
                "workers_peak_rss": peak_rss_of_live_children(),  # they persist
            }
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, help="a real-preset tree (one session)")
    parser.add_argument("--sessions", type=int, default=4, help="times the session is linked")
    parser.add_argument("--repeat", type=int, default=2, help="rounds (default 2)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child[0], None if args.child[1] == "default" else int(args.child[1]))
        return 0
    if args.root is None:
        parser.error("--root is required")
    scratch = Path(tempfile.mkdtemp(prefix="buffer-bench-"))
    try:
        tree = linked_tree(args.root.resolve(), args.sessions, scratch / "tree")
        env = dict(os.environ, NEUROTORCH_PROGRESS="0")
        runs = {
            name: (lambda b=buffer: run_child(__file__, ["--child", str(tree), b], env=env))
            for name, buffer in (("1024 trials", "1024"), ("default", "default"))
        }
        run_child(__file__, ["--child", str(tree), "default"], env=env)  # verifies the files
        results = interleaved(runs, args.repeat)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"{args.sessions} sessions linked from {args.root}, whole brain, 2 workers, best of "
          f"{args.repeat}")  # fmt: skip
    print(f"{'buffer':<14}{'trials':>8}{'first batch s':>15}{'epoch s':>10}{'worker GB':>11}")
    summary = {}
    for name, rows in results.items():
        summary[name] = (
            best(rows, "first")["first"],
            best(rows, "epoch")["epoch"],
            max(row["workers_peak_rss"] for row in rows) / 1e9,
        )
        first, epoch, memory = summary[name]
        print(f"{name:<14}{rows[0]['buffer']:>8}{first:>15.1f}{epoch:>10.1f}{memory:>11.2f}")
    (old_first, _, old_memory), (new_first, _, new_memory) = summary.values()
    print(
        f"default / 1024 trials: first batch {new_first / old_first:.2f}, "
        f"largest worker's memory {new_memory / old_memory:.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
