"""Resumable loading: an epoch's order from ``(seed, epoch)`` alone, sharded by rank, able to
start part-way through, and a DataLoader that Lightning checkpoints and restores.

Lightning saves the ``state_dict()`` of a train loader that has one inside each checkpoint and
hands it back to ``load_state_dict()`` on ``--resume``; a run killed mid-epoch then continues
with the very next batch of the same order: no image is seen twice or skipped in that epoch.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Sampler

# The epoch's generator seed: a fixed odd multiplier keeps (seed, epoch) pairs apart.
EPOCH_SEED_STRIDE = 1_000_003


def process_rank() -> tuple[int, int]:
    """``(rank, world_size)`` of this process in torch.distributed's group, or ``(0, 1)``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class EpochSampler(Sampler[int]):
    """This process's share of an epoch's order.

    The order is a permutation drawn from ``(seed, epoch)`` alone (``shuffle``) or the dataset's
    own order; process ``r`` of ``w`` takes positions ``r, r + w, r + 2w, ...`` of it, so the batches
    of all processes at one step are together the batch one process would take with ``w`` times the
    batch size. Every process must take the same number of batches (one left short would wait in a
    collective for the others forever): training (``even=True``) drops the last ``len % w``
    positions; evaluation pads the order with its first positions instead, as torch's
    DistributedSampler does, so every image is evaluated and at most ``w - 1`` twice.

    Lightning calls ``set_epoch`` at every epoch start; ``start_at`` makes the next pass over
    ``epoch`` begin after the first ``consumed`` positions of the whole order (all processes together).
    """

    def __init__(self, size: int, seed: int = 0, shuffle: bool = True, even: bool = True) -> None:
        self.size, self.seed, self.shuffle, self.even = size, seed, shuffle, even
        self.epoch = 0
        self.resume_point: tuple[int, int] | None = None  # (epoch, positions of its whole order consumed)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def start_at(self, epoch: int, consumed: int) -> None:
        self.resume_point = (epoch, consumed)

    def consumed_on_entry(self) -> int:
        """Positions of the whole order the next pass skips (0 unless it resumes this epoch)."""
        if self.resume_point is not None and self.resume_point[0] == self.epoch:
            return self.resume_point[1]
        return 0

    def order(self) -> torch.Tensor:
        """The epoch's order of all positions, before sharding."""
        if not self.shuffle:
            return torch.arange(self.size)
        generator = torch.Generator().manual_seed(self.seed * EPOCH_SEED_STRIDE + self.epoch)
        return torch.randperm(self.size, generator=generator)

    def __len__(self) -> int:
        world = process_rank()[1]
        return self.size // world if self.even else -(-self.size // world)

    def __iter__(self) -> Iterator[int]:
        rank, world = process_rank()
        order = self.order()
        if self.even:
            order = order[: self.size - self.size % world]
        elif self.size % world:
            order = torch.cat([order, order[: world - self.size % world]])
        shard = order[rank::world]
        skip = self.consumed_on_entry() // world
        self.resume_point = None
        return iter(shard[skip:].tolist())


class ResumableLoader(DataLoader):
    """A DataLoader over an :class:`EpochSampler` that reports how far into the epoch it is.

    ``state_dict()`` is what Lightning stores in a checkpoint: the epoch, and how many positions of
    the epoch's whole order (all processes together) the batches handed out so far cover. Lightning
    does not read ahead from a loader that has a length, so that is exactly what training consumed.
    """

    sampler: EpochSampler

    def __init__(self, dataset: Any, sampler: EpochSampler, batch_size: int, **kwargs: Any) -> None:
        # Its own generator: each pass draws the workers' base seed from it, not from the global
        # generator the model's noise comes from (a resumed run starts one pass more than an
        # uninterrupted one, which would shift every later draw).
        generator = torch.Generator().manual_seed(sampler.seed)
        super().__init__(dataset, batch_size=batch_size, sampler=sampler, generator=generator, **kwargs)
        self._batches_out = 0  # batches handed out in the current epoch, counting skipped ones

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]  # a generator over the batches
        self._batches_out = self.sampler.consumed_on_entry() // self.world_batch()
        if self.generator is not None:  # the workers' seeds of an epoch: from (seed, epoch) alone
            self.generator.manual_seed(self.sampler.seed * EPOCH_SEED_STRIDE + self.sampler.epoch)
        for batch in super().__iter__():
            self._batches_out += 1
            yield batch

    def world_batch(self) -> int:
        return int(self.batch_size or 1) * process_rank()[1]

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.sampler.epoch,
            "consumed": self._batches_out * self.world_batch(),
            "seed": self.sampler.seed,
            "size": self.sampler.size,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if (state.get("seed"), state.get("size")) != (self.sampler.seed, self.sampler.size):
            warnings.warn(
                f"the checkpoint's data order (seed {state.get('seed')}, {state.get('size')} images) is not "
                f"this run's (seed {self.sampler.seed}, {self.sampler.size} images): the resumed epoch "
                "starts from its beginning",
                stacklevel=2,
            )
            return
        self.sampler.start_at(int(state["epoch"]), int(state["consumed"]))
