"""The speed defaults: precision, memory format, threads and CUDA flags chosen from (mocked) hardware."""

from __future__ import annotations

from typing import NamedTuple

import pytest
import torch
from torch import nn

from vaezoo.config import ConfigError, TrainConfig, from_dict
from vaezoo.nn.distributions import DiagonalGaussian
from vaezoo.registry import create_model
from vaezoo.training import performance
from vaezoo.training.module import VAEModule, to_float32
from vaezoo.training.performance import Hardware, resolve_precision
from vaezoo.training.run import choose_precision, processes_per_node

CPU_BF16 = Hardware("cpu", cpu_bf16=True, cuda_capability=None)
CPU_PLAIN = Hardware("cpu", cpu_bf16=False, cuda_capability=None)


@pytest.mark.parametrize(
    ("hardware", "expected"),
    [
        (CPU_BF16, "bf16-mixed"),
        (CPU_PLAIN, "32-true"),
        (Hardware("cuda", cpu_bf16=False, cuda_capability=(8, 0)), "bf16-mixed"),
        (Hardware("cuda", cpu_bf16=True, cuda_capability=(9, 0)), "bf16-mixed"),
        (Hardware("cuda", cpu_bf16=True, cuda_capability=(7, 5)), "32-true"),  # the GPU decides, not the CPU
        (Hardware("mps", cpu_bf16=True, cuda_capability=None), "32-true"),
    ],
)
def test_auto_precision_is_bf16_only_on_native_bf16_hardware(hardware, expected):
    precision, reason = resolve_precision("auto", hardware)
    assert precision == expected
    assert reason  # the printed line says why


def test_an_explicit_precision_is_kept_whatever_the_hardware():
    assert resolve_precision("16-mixed", CPU_PLAIN)[0] == "16-mixed"
    assert resolve_precision("32-true", CPU_BF16)[0] == "32-true"


def test_detect_reads_torchs_cpu_probes(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert Hardware.detect() == Hardware("cpu", cpu_bf16=True, cuda_capability=None)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert Hardware.detect().cpu_bf16 is False


def test_detect_reads_the_cuda_capability(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 6))
    hardware = Hardware.detect("auto")
    assert hardware.accelerator == "cuda" and hardware.cuda_capability == (8, 6)
    assert Hardware.detect("cpu").accelerator == "cpu"  # the user's accelerator wins


def test_the_choice_is_printed_once_with_its_reason(monkeypatch, capsys, caplog):
    monkeypatch.setattr(
        performance.Hardware, "detect", classmethod(lambda cls, accelerator="auto": CPU_PLAIN)
    )
    caplog.set_level("INFO")
    assert choose_precision(TrainConfig()) == "32-true"
    printed = caplog.text + capsys.readouterr().err
    assert printed.count("precision: 32-true") == 1 and "AVX512-BF16" in printed
    caplog.clear()
    assert choose_precision(TrainConfig(precision="bf16-mixed")) == "bf16-mixed"
    assert "precision:" not in caplog.text  # an explicit choice is not announced


def test_unknown_precision_is_a_config_error():
    with pytest.raises(ConfigError, match="train.precision"):
        from_dict({"train": {"precision": "fp8"}})


def conv_model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten())


def test_channels_last_by_default_for_convolutional_models_only():
    assert performance.memory_format(None, conv_model()) == torch.channels_last
    assert performance.memory_format(None, nn.Linear(3, 3)) == torch.contiguous_format
    assert performance.memory_format(False, conv_model()) == torch.contiguous_format
    assert performance.memory_format(True, nn.Linear(3, 3)) == torch.channels_last


def test_available_cpus_honours_a_cgroup_quota(tmp_path, monkeypatch):
    monkeypatch.setattr(performance.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert performance.available_cpus(tmp_path) == 4  # no cpu.max: the affinity mask
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert performance.available_cpus(tmp_path) == 2  # 1.5 CPUs of quota -> 2 threads
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert performance.available_cpus(tmp_path) == 4


def test_threads_are_this_process_share_unless_omp_num_threads_is_set(monkeypatch):
    before = torch.get_num_threads()
    calls = []
    monkeypatch.setattr(performance, "available_cpus", lambda: 4)
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert performance.configure_threads(processes_per_node=2) == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    performance.configure_threads(processes_per_node=1)
    assert calls == ([] if before == 2 else [2])  # OMP_NUM_THREADS: nothing set


@pytest.mark.parametrize(("devices", "expected"), [("auto", 1), (1, 1), (2, 2), ("3", 3), ([0, 1], 2)])
def test_processes_per_node(devices, expected, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert processes_per_node(devices, "auto") == expected


@pytest.mark.parametrize(
    ("capability", "deterministic", "tf32"),
    [((8, 0), False, True), ((7, 0), False, False), ((8, 0), True, False)],
)
def test_cuda_flags_from_the_gpu_and_determinism(monkeypatch, capability, deterministic, tf32):
    saved = (
        torch.backends.cudnn.benchmark,
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
    )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    try:
        performance.configure_cuda(deterministic)
        assert torch.backends.cudnn.benchmark is (not deterministic)
        assert torch.backends.cuda.matmul.allow_tf32 is tf32 and torch.backends.cudnn.allow_tf32 is tf32
    finally:
        torch.backends.cudnn.benchmark = saved[0]
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[1:]


class Output(NamedTuple):
    recons: torch.Tensor
    codes: torch.Tensor
    mu: torch.Tensor


def test_forward_outputs_reach_the_loss_in_fp32():
    output = Output(torch.ones(2, dtype=torch.bfloat16), torch.arange(2), torch.zeros(2))
    cast = to_float32(output)
    assert isinstance(cast, Output)
    assert cast.recons.dtype == torch.float32 and cast.codes.dtype == torch.int64
    assert cast.mu is output.mu  # fp32 passes through without a copy
    assert to_float32([torch.ones(1, dtype=torch.float16)])[0].dtype == torch.float32
    rungs = to_float32((DiagonalGaussian(torch.ones(2, dtype=torch.bfloat16), torch.zeros(2)),))  # LVAE's
    assert (
        isinstance(rungs[0], DiagonalGaussian)
        and rungs[0].mu.dtype == rungs[0].log_var.dtype == torch.float32
    )


def test_fused_adam_where_the_parameters_allow_it():
    model = create_model("VanillaVAE", 1, 2, hidden_dims=[4], image_size=4)
    optimizer = VAEModule(model, TrainConfig(scheduler="none")).configure_optimizers()[0]
    assert optimizer.defaults["fused"] is True
    assert not performance.fused_optimizer_supported([nn.Parameter(torch.zeros(1, dtype=torch.int64), False)])


@pytest.mark.parametrize("clip", [None, 1.0])
def test_clipping_under_mixed_precision_trains_with_the_unfused_adam(tmp_path, clip):
    """Lightning's mixed-precision plugin refuses to clip gradients of a fused optimizer (which
    unscales them itself): with train.gradient_clip_val under bf16-mixed the optimizer is unfused."""
    import lightning as L

    module = VAEModule(tiny_vae(), TrainConfig(scheduler="none", gradient_clip_val=clip))
    trainer = L.Trainer(
        max_steps=2, precision="bf16-mixed", gradient_clip_val=clip, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=tmp_path,
    )  # fmt: skip
    data = torch.utils.data.TensorDataset(torch.rand(6, 1, 4, 4), torch.zeros(6))
    before = [p.detach().clone() for p in module.model.parameters()]
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(data, batch_size=3))
    assert bool(trainer.optimizers[0].defaults["fused"]) is (clip is None)
    assert any(not torch.equal(b, p) for b, p in zip(before, module.model.parameters(), strict=True))


def tiny_vae() -> nn.Module:
    torch.manual_seed(0)
    return create_model("VanillaVAE", 1, 2, hidden_dims=[4], image_size=4)


def test_compile_runs_the_compiled_forward_after_the_first_step(monkeypatch):
    compiled_calls = []

    def fake_compile(forward):
        def run(*args, **kwargs):
            compiled_calls.append(kwargs["global_step"])
            return forward(*args, **kwargs)

        return run

    monkeypatch.setattr(torch, "compile", fake_compile)
    module = VAEModule(tiny_vae(), TrainConfig(compile=True))
    batch = (torch.rand(3, 1, 4, 4), torch.zeros(3))
    for step in range(3):
        module.batches_seen = step
        module._losses(batch, step)
    assert compiled_calls == [0, 1, 2] and module.compile_seconds is not None


def test_a_model_that_does_not_compile_trains_eagerly_with_one_warning(monkeypatch):
    def broken_compile(forward):
        def run(*args, **kwargs):
            raise RuntimeError("backend exploded\nmore detail")

        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    module = VAEModule(tiny_vae(), TrainConfig(compile=True))
    batch = (torch.rand(3, 1, 4, 4), torch.zeros(3))
    with pytest.warns(
        UserWarning, match="VanillaVAE did not compile .*backend exploded.*without torch.compile"
    ):
        _, losses, _ = module._losses(batch, 0)
    assert torch.isfinite(losses["loss"]) and module.compiled is False
    module._losses(batch, 1)  # no second attempt, no second warning (pytest's filter would show it)
