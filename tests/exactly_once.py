"""Helpers of the exactly-once tests: item ids of batches, the ranks' record files and the check
that every expected item was seen once.

`record_ids.RecordIds` (a LightningModule) writes, per rank, the ids of every item of every
train/validation/test batch and the number of batches, to ``<out>/rank<r>.json``; `read_records`
gathers the ranks' files. The expected ids come from the DataModule's own split tables, the
padding from the sharding contract. This module does not import Lightning: processes that only
load data (a spawned rank's DataLoader workers) import it in a fraction of the time.
"""

from __future__ import annotations

import json
import os
import socket
from collections import Counter
from pathlib import Path

import torch

from neurotorch.data.loader import StreamLoader
from neurotorch.data.sharding import ShardedIterable, shard_positions, units_per_rank


def fmri_ids(batch) -> list:
    trials = batch["trial"].tolist()
    return [
        [s, ses, int(t)]
        for s, ses, t in zip(batch["subject"], batch["session"], trials, strict=True)
    ]


def index_ids(batch) -> list:
    return [int(i) for i in batch["index"].tolist()]


def subject_ids(batch) -> list:
    return [int(s) for s in batch["index"].tolist()]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def become_rank(rank: int, port: int, world_size: int = 2) -> None:
    """Make this spawned process a rank as ``torchrun`` makes one.

    A process started by ``spawn`` makes ``spawn`` its default start method, so its DataLoader
    workers would each import the whole stack again (tens of seconds per loader); a ``torchrun``
    rank forks them, and so does this one."""
    torch.multiprocessing.set_start_method("fork", force=True)
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
        NODE_RANK="0",
    )


def read_records(out: Path, world_size: int) -> list[dict[str, list]]:
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(world_size)]


def as_key(item_id) -> tuple | int:
    return tuple(item_id) if isinstance(item_id, list) else item_id


def check_exactly_once(records, key: str, expected: list, padding: int) -> None:
    """Every expected id at least once, exactly ``padding`` extras, equal batch counts per rank."""
    batch_counts = [len(record.get(key, [])) for record in records]
    assert len(set(batch_counts)) == 1, f"{key}: ranks yielded {batch_counts} batches"
    seen = Counter(as_key(i) for record in records for batch in record[key] for i in batch)
    wanted = Counter(as_key(i) for i in expected)
    assert set(seen) == set(wanted), f"{key}: {len(set(wanted) - set(seen))} ids never seen"
    extras = seen - wanted
    assert sum(extras.values()) == padding, f"{key}: {sum(extras.values())} extras, not {padding}"


class Numbers(ShardedIterable):
    """The integers ``0 … n-1`` as a sharded iterable (items, batched by the loader)."""

    def __init__(self, n: int):
        self.n, self.epoch, self.batch_size, self.drop_last = n, 0, 1, False

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return units_per_rank(self.n, self.process_shard()[1], self.drop_last)

    def __iter__(self):
        positions = shard_positions(
            self.n, *self.process_shard(), batch_size=self.batch_size, drop_last=self.drop_last
        )
        yield from ({"index": torch.tensor(int(p))} for p in positions)


def numbers_seen_by_rank(rank: int, port: int, n: int, out: str) -> None:
    """A process of a ``ddp_spawn``-style run (process group, no RANK variables): the numbers its
    2-worker loader yields, written to ``<out>/rank<r>.json``."""
    torch.distributed.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2
    )
    loader = StreamLoader(Numbers(n), batch_size=3, num_workers=2, collate_fn=None)
    seen = [index_ids(batch) for batch in loader]
    Path(out, f"rank{rank}.json").write_text(json.dumps({"train": seen, "len": len(loader)}))
    torch.distributed.destroy_process_group()
