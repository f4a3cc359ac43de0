"""State that must agree across processes, checked in two real processes on gloo (no Lightning).

Each process quantises batches of its own; the EMA codebook must come out the same on both, and the
same as one process's on the concatenated batches. Without the all-reduce in ``ema_update`` each
process would follow its own data (the ranks would differ); without the broadcast in
``initialize_from`` each would start from codes of its own first batch.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor

from vaezoo.nn.quantizers import VectorQuantizer

WORLD = 2
STEPS = 3
CODES, DIM = 16, 4  # a small codebook of 4-vectors
STATE_TOLERANCE = 1e-6  # float32 sums in another order; the per-process update differs by ~1e-2


def local_batch(rank: int, step: int) -> Tensor:
    """Process ``rank``'s (4, D, 3, 3) encoder map at ``step``; the ranks' maps use different codes."""
    generator = torch.Generator().manual_seed(1000 * step + rank)
    return torch.randn(4, DIM, 3, 3, generator=generator) * 0.1 + 0.05 * (rank - 0.5)


def global_batch(step: int) -> Tensor:
    """What one process would see: all processes' batches of ``step``, concatenated."""
    return torch.cat([local_batch(rank, step) for rank in range(WORLD)])


def flatten(z_e: Tensor) -> Tensor:
    return z_e.permute(0, 2, 3, 1).reshape(-1, DIM)  # (B*h*w, D), the quantiser's rows


def new_quantizer(**options: bool) -> VectorQuantizer:
    torch.manual_seed(0)  # the same initial codebook in every process (DDP starts from one model)
    return VectorQuantizer(CODES, DIM, **options).train()


def snapshot(quantizer: VectorQuantizer) -> dict[str, Tensor]:
    return {key: value.detach().clone() for key, value in quantizer.state_dict().items()}


def run_process(rank: int, init_file: str, out_dir: str) -> None:
    """One process: EMA updates on its own batches, then data-dependent initialisations."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        results = {}
        quantizer = new_quantizer(ema=True)
        for step in range(STEPS):
            quantizer(local_batch(rank, step))
        results["ema"] = snapshot(quantizer)
        for ema in (False, True):
            quantizer = new_quantizer(ema=ema, data_init=True)
            torch.manual_seed(rank)  # each process would draw other rows of its batch
            quantizer.initialize_from(flatten(local_batch(rank, 0)))  # what its first forward does
            results[f"data_init_ema_{ema}"] = snapshot(quantizer)
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, dict[str, Tensor]]]:
    """The results of both processes of one two-process run (spawned once for the module)."""
    folder = tmp_path_factory.mktemp("gloo")
    mp.spawn(run_process, args=(str(folder / "init"), str(folder)), nprocs=WORLD, join=True)
    return [torch.load(folder / f"rank{rank}.pt", weights_only=True) for rank in range(WORLD)]


def assert_same_state(a: dict[str, Tensor], b: dict[str, Tensor], atol: float) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=atol, rtol=0, msg=lambda m, k=key: f"{k}: {m}")


@pytest.mark.slow
def test_ema_codebook_is_one_codebook_across_processes(ranks):
    assert_same_state(ranks[0]["ema"], ranks[1]["ema"], atol=0)  # all-reduced, so bit for bit


@pytest.mark.slow
def test_ema_codebook_equals_one_process_on_the_global_batch(ranks):
    single = new_quantizer(ema=True)
    for step in range(STEPS):
        single(global_batch(step))
    assert_same_state(ranks[0]["ema"], snapshot(single), atol=STATE_TOLERANCE)
    # the comparison can fail: a process updating from its own batch alone ends up elsewhere
    alone = new_quantizer(ema=True)
    for step in range(STEPS):
        alone(local_batch(0, step))
    gap = (snapshot(alone)["codebook"] - snapshot(single)["codebook"]).abs().max()
    assert gap > 1000 * STATE_TOLERANCE


@pytest.mark.slow
@pytest.mark.parametrize("ema", [False, True])
def test_data_init_takes_process_zero_codebook_everywhere(ranks, ema):
    states = [rank[f"data_init_ema_{ema}"] for rank in ranks]
    assert_same_state(states[0], states[1], atol=0)
    assert bool(states[1]["initialized"])
    # every code is an encoder vector of process 0's first batch, none of process 1's
    codebook = states[1]["codebook"]  # (K, D)
    for rank, is_source in ((0, True), (1, False)):
        vectors = flatten(local_batch(rank, 0))  # (36, D)
        nearest = (codebook[:, None] - vectors[None]).norm(dim=2).min(dim=1).values  # (K,)
        assert bool((nearest == 0).all() if is_source else (nearest > 1e-3).all())
    if ema:  # the moving averages restart from the shared codebook
        assert torch.equal(states[1]["ema_embedding_sum"], codebook)
