"""Measuring instruments of ``train_throughput.py``: machine facts, matmul peaks, peak RSS, FLOPs,
a procedural image folder, PyTorch-VAE's VanillaVAE step, and the timing hooks on the real path.

Nothing here imports vaezoo, so the reference step stays a plain re-implementation.
"""

from __future__ import annotations

import copy
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.profilers import Profiler
from PIL import Image, ImageDraw
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

StepFn = Callable[[Tensor, Tensor, int], Tensor]  # (images, labels, step index) -> detached loss

# --------------------------------------------------------------------------- the machine


def cpu_facts() -> dict[str, str]:
    """CPU model, the SIMD/matrix flags that decide bf16 speed, threads, library versions."""
    name, flags = platform.processor() or "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                name = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    wanted = ["avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile"]
    import lightning

    return {
        "cpu": name,
        "flags": " ".join(f"{f}{'+' if f in flags else '-'}" for f in wanted),
        "threads": str(torch.get_num_threads()),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "python": platform.python_version(),
    }


def matmul_gflops(dtype: torch.dtype, n: int, min_seconds: float = 0.5) -> float:
    """Achieved GFLOP/s of an (n x n) @ (n x n) matmul in ``dtype``, best of repeated timings."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)  # warm-up
    best, spent = float("inf"), 0.0
    while spent < min_seconds:
        start = time.perf_counter()
        torch.mm(a, b)
        took = time.perf_counter() - start
        best, spent = min(best, took), spent + took
    return 2 * n**3 / best / 1e9


# --------------------------------------------------------------------------- memory


class PeakRSS:
    """The process's peak resident set size during a ``with`` block, in MiB.

    Linux resets the high-water mark (VmHWM) on writing 5 to /proc/self/clear_refs; the value read
    at the end is then the largest RSS since the block began (memory kept from earlier rows counts).
    Where the reset is refused the value is the process's lifetime peak, and ``reset`` is False.
    """

    def __enter__(self) -> PeakRSS:
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.reset = True
        except OSError:
            self.reset = False
        self.mib = float("nan")
        return self

    def __exit__(self, *exc: object) -> None:
        self.mib = read_status_kib("VmHWM") / 1024


def read_status_kib(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return float(line.split()[1])
    return float("nan")


# --------------------------------------------------------------------------- FLOPs


def step_flops(make_step: Callable[[nn.Module], StepFn], model: nn.Module, x: Tensor, y: Tensor) -> int:
    """FLOPs of one training step (forward + backward; matmuls and convolutions, as
    ``torch.utils.flop_counter`` counts them) on a copy, so the measured model is untouched."""
    clone = copy.deepcopy(model)
    step = make_step(clone)
    with FlopCounterMode(display=False) as counter:
        step(x, y, 0)
    return int(counter.get_total_flops())


# --------------------------------------------------------------------------- data


def write_image_folder(folder: Path, count: int, size: int = 64, seed: int = 0) -> Path:
    """``count`` RGB PNGs of random coloured ellipses, boxes and triangles on random backgrounds."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        image = Image.new("RGB", (size, size), tuple(int(c) for c in rng.integers(0, 256, 3)))
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(1, 4))):
            x0, y0 = rng.integers(0, size - 8, 2)
            w, h = rng.integers(8, size // 2, 2)
            box = [int(x0), int(y0), int(min(size - 1, x0 + w)), int(min(size - 1, y0 + h))]
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            kind = int(rng.integers(0, 3))
            if kind == 0:
                draw.ellipse(box, fill=colour)
            elif kind == 1:
                draw.rectangle(box, fill=colour)
            else:
                draw.polygon(
                    [(box[0], box[3]), (box[2], box[3]), ((box[0] + box[2]) // 2, box[1])], fill=colour
                )
        image.save(folder / f"{i:05d}.png")
    return folder


# --------------------------------------------------------------------------- the reference step


class ReferenceVanillaVAE(nn.Module):
    """PyTorch-VAE's VanillaVAE, written plainly for 3x64x64: five conv k3 s2 p1 + BN + LeakyReLU
    blocks (32..512, 64x64 -> 2x2), fc_mu / fc_var, the mirrored ConvTranspose2d decoder, tanh."""

    def __init__(
        self,
        in_channels: int = 3,
        latent_dim: int = 128,
        hidden_dims: tuple[int, ...] = (32, 64, 128, 256, 512),
    ):
        super().__init__()
        blocks, c = [], in_channels
        for h in hidden_dims:
            blocks += [nn.Conv2d(c, h, 3, stride=2, padding=1), nn.BatchNorm2d(h), nn.LeakyReLU()]
            c = h
        self.encoder = nn.Sequential(*blocks)
        self.last = hidden_dims[-1]
        self.fc_mu = nn.Linear(self.last * 4, latent_dim)
        self.fc_var = nn.Linear(self.last * 4, latent_dim)
        self.decoder_input = nn.Linear(latent_dim, self.last * 4)
        rev, blocks = list(reversed(hidden_dims)), []
        for a, b in zip(rev[:-1], rev[1:]):
            blocks += [
                nn.ConvTranspose2d(a, b, 3, stride=2, padding=1, output_padding=1),
                nn.BatchNorm2d(b),
                nn.LeakyReLU(),
            ]
        self.decoder = nn.Sequential(*blocks)
        self.final_layer = nn.Sequential(
            nn.ConvTranspose2d(rev[-1], rev[-1], 3, stride=2, padding=1, output_padding=1),
            nn.BatchNorm2d(rev[-1]),
            nn.LeakyReLU(),
            nn.Conv2d(rev[-1], in_channels, 3, padding=1),
            nn.Tanh(),
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        h = torch.flatten(self.encoder(x), start_dim=1)  # (B, 512*2*2)
        mu, log_var = self.fc_mu(h), self.fc_var(h)  # (B, D)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * log_var)
        h = self.decoder_input(z).view(-1, self.last, 2, 2)
        return self.final_layer(self.decoder(h)), mu, log_var


def reference_step(model: nn.Module, lr: float = 0.005, kld_weight: float = 0.00025) -> StepFn:
    """PyTorch-VAE's training step: pixel-mean MSE + 0.00025 * KL (batch mean), Adam lr 0.005."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)

    def step(x: Tensor, y: Tensor, i: int) -> Tensor:
        recons, mu, log_var = model(x)
        kld = torch.mean(-0.5 * torch.sum(1 + log_var - mu**2 - log_var.exp(), dim=1))
        loss = F.mse_loss(recons, x) + kld_weight * kld
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


@dataclass
class EagerResult:
    images_per_s: float
    loss: float  # mean training loss of the last ``loss_window`` steps
    steps: int


def run_eager(
    step: StepFn, pool: tuple[Tensor, Tensor], batch_size: int, steps: int, warmup: int, loss_window: int = 20
) -> EagerResult:
    """A bare loop over in-memory batches; images/s between step ``warmup`` and step ``steps``."""
    images, labels = pool
    batches = max(1, images.shape[0] // batch_size)
    losses: list[Tensor] = []
    start = time.perf_counter()
    for i in range(steps):
        if i == warmup:
            start = time.perf_counter()
        j = (i % batches) * batch_size
        losses.append(step(images[j : j + batch_size], labels[j : j + batch_size], i))
    took = time.perf_counter() - start
    timed = steps - warmup if steps > warmup else steps
    tail = torch.stack(losses[-loss_window:]).float().mean().item()
    return EagerResult(timed * batch_size / took, tail, steps)


# --------------------------------------------------------------------------- hooks on the real path

DATA_ACTION = "[_TrainingEpochLoop].train_dataloader_next"


class DataWaitProfiler(Profiler):
    """Sums the time Lightning's training loop spends in ``next(dataloader)``; ignores all else.

    Lightning calls ``start``/``stop`` around every hook whatever the profiler, so the only cost
    added over its default PassThroughProfiler is one string comparison per hook.
    """

    def __init__(self) -> None:
        super().__init__()
        self.total = 0.0
        self._since: float | None = None

    def start(self, action_name: str) -> None:
        if action_name == DATA_ACTION:
            self._since = time.perf_counter()

    def stop(self, action_name: str) -> None:
        if action_name == DATA_ACTION and self._since is not None:
            self.total += time.perf_counter() - self._since
            self._since = None

    def summary(self) -> str:
        return ""


@dataclass
class StepClock(L.Callback):
    """Timestamps of the real path: the first batch, the end of every batch, epoch boundaries,
    the data-wait total at each batch end, and the training loss of the last steps."""

    profiler: DataWaitProfiler
    started: float  # time.perf_counter() just before train() was called
    total_steps: int
    loss_window: int = 20
    first_batch: float | None = None
    ends: list[float] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)
    dirty: list[bool] = field(default_factory=list)  # the interval ending here crossed an epoch end
    losses: list[float] = field(default_factory=list)
    precision: str = ""
    _epoch_crossed: bool = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.precision = str(trainer.precision)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_crossed = bool(self.ends)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: object, batch_idx: int
    ) -> None:
        if self.first_batch is None:
            self.first_batch = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: object, batch: object, batch_idx: int
    ) -> None:
        self.ends.append(time.perf_counter())
        self.waits.append(self.profiler.total)
        self.dirty.append(self._epoch_crossed)
        self._epoch_crossed = False
        if len(self.ends) > self.total_steps - self.loss_window:
            loss = trainer.callback_metrics.get("train/loss_step")
            if loss is not None:
                self.losses.append(float(loss))

    def steady(self, warmup: int, batch_size: int) -> dict[str, float]:
        """Images/s and data-wait share over the intervals between batch ends after ``warmup``,
        leaving out the intervals that hold an epoch end (validation, checkpoints, image grids)."""
        times = waits = epoch_time = 0.0
        steps = epochs = 0
        for k in range(max(1, warmup), len(self.ends)):
            took = self.ends[k] - self.ends[k - 1]
            if self.dirty[k]:
                epoch_time, epochs = epoch_time + took, epochs + 1
                continue
            times, steps = times + took, steps + 1
            waits += self.waits[k] - self.waits[k - 1]
        step_s = times / steps if steps else float("nan")
        return {
            "images_per_s": batch_size / step_s if steps else float("nan"),
            "data_wait": waits / times if times else float("nan"),
            "timed_steps": steps,
            "epoch_end_s": (epoch_time - epochs * step_s) / epochs if epochs else float("nan"),
            "startup_s": (self.first_batch or float("nan")) - self.started,
            "first_step_s": self.ends[0] - self.first_batch
            if self.ends and self.first_batch
            else float("nan"),
            "loss": float(np.mean(self.losses)) if self.losses else float("nan"),
        }
