"""Speed settings chosen from the hardware, so the defaults are fast without flags.

- ``train.precision: auto`` -> ``bf16-mixed`` where the hardware computes bf16 natively (a CPU with
  AVX512-BF16 or AMX, a CUDA GPU of compute capability >= 8.0), ``32-true`` elsewhere: emulated bf16
  is many times *slower* than fp32 (measured 100x for matmuls on an AVX2-only CPU).
- ``train.channels_last: null`` -> NHWC when the model has 2-D convolutions (oneDNN and cuDNN run
  them faster in that layout).
- Threads: one intra-op thread per CPU this process may use (its affinity mask and cgroup quota,
  which ``os.cpu_count()`` ignores), unless ``OMP_NUM_THREADS`` says otherwise.
- CUDA: ``cudnn.benchmark`` (fixed image sizes) and TF32 matmuls / convolutions on GPUs that have
  them, both off under ``train.deterministic``.

Every choice is a plain function of what it reads, so tests can hand it any hardware.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

AUTO = "auto"
BF16 = "bf16-mixed"
FP32 = "32-true"


@dataclass(frozen=True)
class Hardware:
    """What the speed choices depend on; ``Hardware.detect()`` reads this machine."""

    accelerator: str  # "cpu", "cuda" or "mps"
    cpu_bf16: bool  # AVX512-BF16 or AMX tiles
    cuda_capability: tuple[int, int] | None  # of device 0, None without CUDA

    @classmethod
    def detect(cls, accelerator: str = AUTO) -> Hardware:
        cuda = torch.cuda.is_available()
        return cls(
            accelerator=resolve_accelerator(accelerator, cuda, mps_available()),
            cpu_bf16=cpu_has_native_bf16(),
            cuda_capability=torch.cuda.get_device_capability(0) if cuda else None,
        )


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_accelerator(accelerator: str, cuda: bool, mps: bool = False) -> str:
    """Lightning's ``accelerator`` setting -> the device type it will train on."""
    if accelerator in ("gpu", "cuda"):
        return "cuda"
    if accelerator == AUTO:
        return "cuda" if cuda else "mps" if mps else "cpu"
    return accelerator


def cpu_has_native_bf16() -> bool:
    """True if this CPU has AVX512-BF16 or AMX (torch's own CPU probes)."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def resolve_precision(precision: str, hardware: Hardware) -> tuple[str, str]:
    """``(precision for Lightning, why)``; anything but ``auto`` is kept as the user's choice."""
    if precision != AUTO:
        return precision, "as configured"
    if hardware.accelerator == "cuda":
        capability = hardware.cuda_capability or (0, 0)
        if capability >= (8, 0):
            return (
                BF16,
                f"CUDA GPU of compute capability {capability[0]}.{capability[1]} computes bf16 natively",
            )
        return FP32, f"CUDA GPU of compute capability {capability[0]}.{capability[1]} (< 8.0) lacks fast bf16"
    if hardware.accelerator == "cpu":
        if hardware.cpu_bf16:
            return BF16, "this CPU computes bf16 natively (AVX512-BF16 / AMX)"
        return FP32, "this CPU has no AVX512-BF16 or AMX: emulated bf16 would be slower than fp32"
    return FP32, f"no native-bf16 check for accelerator '{hardware.accelerator}'"


def has_convolutions(model: nn.Module) -> bool:
    return any(isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) for m in model.modules())


def memory_format(channels_last: bool | None, model: nn.Module) -> torch.memory_format:
    """NHWC when asked for, or by default (None) when the model convolves 2-D images."""
    use = has_convolutions(model) if channels_last is None else channels_last
    return torch.channels_last if use else torch.contiguous_format


def available_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup v2 CPU quota."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = (cgroup_root / "cpu.max").read_text().split()[:2]
        if quota != "max":
            count = min(count, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, count)


def configure_threads(processes_per_node: int = 1) -> int:
    """Set torch's intra-op threads to this process's share of the CPUs; ``OMP_NUM_THREADS`` wins."""
    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    threads = max(1, available_cpus() // max(1, processes_per_node))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


def configure_cuda(deterministic: bool) -> None:
    """cuDNN autotuning and TF32 (Ampere and newer) unless the run must be deterministic."""
    if not torch.cuda.is_available():
        return
    torch.backends.cudnn.benchmark = not deterministic
    allow_tf32 = not deterministic and torch.cuda.get_device_capability(0) >= (8, 0)
    torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    torch.backends.cudnn.allow_tf32 = allow_tf32


def fused_optimizer_supported(params: list[nn.Parameter]) -> bool:
    """Fused Adam/AdamW (one kernel for all parameters) on CPU and CUDA floating-point tensors."""
    return bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
