"""Training throughput of vaezoo's real path against plain eager PyTorch steps, side by side in one process.

Lines measured (``make bench`` = ``.venv/bin/python benchmarks/train_throughput.py $(ARGS)``):

- reference: a plain re-implementation of PyTorch-VAE's VanillaVAE step (conv 32..512 + BN +
  LeakyReLU, fc_mu / fc_var, mirrored ConvTranspose2d decoder, tanh, pixel-mean MSE + 0.00025 KL,
  Adam lr 0.005), fp32, NCHW, eager, on in-memory float tensors of a procedural 64x64 image folder;
- per model: that model's own fp32 eager step (``model(x, labels=y)`` -> ``loss_function`` ->
  backward -> Adam, plus the auxiliary step where the model declares one), on in-memory tensors;
- per model: ``vaezoo.training.run.train`` -- the function behind ``vaezoo train`` -- with the
  model's configs/<model>.yaml, overriding only data, batch size, step count and run folder.

Images/s of the real path are measured between batch ends after ``--warmup`` steps; intervals that
hold an epoch end (validation, checkpoints, image grids) are left out and reported on their own,
as are start-up (train() called -> first batch) and the first step (where torch.compile compiles).
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import throughput_probes as probes  # noqa: E402
import throughput_report as report  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
DEFAULT_MODELS = ["VanillaVAE", "BetaTCVAE", "IWAE", "VQVAE", "FactorVAE", "DFCVAE", "LVAE"]
LOSS_TOLERANCE = 0.02  # "same learning": the 300-step loss within 2 % of the fp32 run
FP32 = ("32-true", "32")


@dataclass
class Line:
    """One measurement: a model on one path."""

    group: str  # the row it belongs to, e.g. "BetaTCVAE"
    path: str  # "reference eager" | "own eager fp32" | "vaezoo default" | "vaezoo 32-true" | "vaezoo compile"
    data: str
    precision: str = "32-true"
    images_per_s: float = math.nan
    flops_per_step: float = math.nan
    batch_size: int = 64
    rss_mib: float = math.nan
    data_wait: float = math.nan
    startup_s: float = math.nan
    first_step_s: float = math.nan
    epoch_end_s: float = math.nan
    loss: float = math.nan
    note: str = ""

    @property
    def gflops(self) -> float:
        return self.flops_per_step * self.images_per_s / self.batch_size / 1e9


@dataclass
class Row:
    """What to run for one table row: a config file (or the package defaults) and overrides."""

    group: str
    model: str
    config: Path | None
    data: str  # "image_folder" | "dsprites"
    overrides: list[str] = field(default_factory=list)
    own_eager: bool = True  # the seed network is compared with the reference instead
    optimizers: int = 1  # optimizer steps per batch (2 with an auxiliary optimizer), set by measure_eager


# --------------------------------------------------------------------------- configs


def config_for(model: str) -> Path | None:
    """The first configs/*.yaml that trains ``model`` (or an alias of it); None: package defaults."""
    import yaml

    from vaezoo.registry import get_model_class

    cls = get_model_class(model)
    preferred = {"VanillaVAE": "vae.yaml"}
    if cls.__name__ in preferred:
        return CONFIGS / preferred[cls.__name__]
    for path in sorted(CONFIGS.glob("*.yaml")):
        name = ((yaml.safe_load(path.read_text()) or {}).get("model") or {}).get("name")
        try:
            if name and get_model_class(name) is cls:
                return path
        except KeyError:
            continue
    return None


def data_overrides(data: str, folder: Path) -> list[str]:
    if data == "image_folder":
        return ["--data.name=image_folder", f"--data.path={folder}", "--data.subset=null"]
    return ["--data.name=dsprites"]


def build_config(row: Row, args: argparse.Namespace, folder: Path, run_root: Path, extra: list[str] = ()):
    """The row's config with only what the bench must fix overridden (``train.max_steps`` counts
    batches, also for a model with a second optimizer)."""
    from vaezoo.config import load_config

    overrides = [
        *data_overrides(row.data, folder),
        f"--train.batch_size={args.batch_size}",
        f"--train.max_steps={args.steps}",
        "--train.max_epochs=null",  # the step count ends the run
        f"--logging.save_dir={run_root}",
        *row.overrides,
        *extra,
    ]
    return load_config(row.config, overrides)


def rows_for(args: argparse.Namespace) -> list[Row]:
    rows = []
    if not args.skip_seed:
        # PyTorch-VAE's network and loss scale: latent 128, hidden 32..512 (the model default),
        # tanh output on [-1, 1] data, pixel-mean MSE (the default), KL weight 0.00025.
        seed = [
            "--model.name=VanillaVAE",
            "--model.latent_dim=128",
            "--data.normalize=symmetric",
            "--train.kl_weight=0.00025",
        ]
        rows.append(
            Row("VanillaVAE (seed network)", "VanillaVAE", None, "image_folder", seed, own_eager=False)
        )
    for name in args.models:
        data = "dsprites" if args.data == "config" else args.data
        config = config_for(name)
        label = f"{name} ({config.name if config else 'package defaults'})"
        rows.append(Row(label, name, config, data, [] if config else [f"--model.name={name}"]))
    return rows


# --------------------------------------------------------------------------- measurements


def own_step(model: torch.nn.Module, cfg: Any) -> probes.StepFn:
    """The model's own eager training step, as VAEModule would run it but without Lightning."""
    aux = list(model.auxiliary_parameters())
    aux_ids = {id(p) for p in aux}
    opt_cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[cfg.train.optimizer]
    main = opt_cls(
        [p for p in model.parameters() if id(p) not in aux_ids],
        lr=cfg.train.lr,
        weight_decay=cfg.train.weight_decay,
    )
    second = None
    if aux:
        options = {"lr": model.auxiliary_lr or cfg.train.lr, **model.auxiliary_optimizer_kwargs()}
        second = opt_cls(aux, **options)

    def step(x: torch.Tensor, y: torch.Tensor, i: int) -> torch.Tensor:
        context = {"labels": y, "global_step": i, "batch_idx": i}
        out = model(x, **context)
        loss = model.loss_function(*out, M_N=cfg.train.kl_weight, **context)["loss"]
        main.zero_grad()
        loss.backward()
        main.step()
        if second is not None:
            aux_loss = model.auxiliary_loss(out, **context)["loss"]
            second.zero_grad()
            aux_loss.backward()
            second.step()
        return loss.detach()

    return step


def measure_eager(row: Row, cfg: Any, args: argparse.Namespace, reference: bool) -> tuple[Line, float]:
    """The reference step (seed row) or the model's own eager step, fp32 NCHW, in-memory batches."""
    from vaezoo.training.run import prepare

    prepared = prepare(cfg)  # seeds from train.seed, builds the data and the model as train() does
    pool = prepared.datamodule.fixed_batch(args.pool, split="train")
    x, y = pool[0][: args.batch_size], pool[1][: args.batch_size]
    row.optimizers = 2 if list(prepared.model.auxiliary_parameters()) else 1
    own_flops = probes.step_flops(lambda m: own_step(m, cfg), prepared.model, x, y)  # the real path's
    model, make, path, flops = prepared.model, (lambda m: own_step(m, cfg)), "own eager fp32", own_flops
    if reference:
        torch.manual_seed(cfg.train.seed)
        model = probes.ReferenceVanillaVAE(in_channels=x.shape[1], latent_dim=128)
        make, path = probes.reference_step, "reference eager"
        flops = probes.step_flops(make, model, x, y)
    del prepared
    line = Line(row.group, path, row.data, batch_size=args.batch_size, flops_per_step=flops)
    model.train()
    with probes.PeakRSS() as rss:
        result = probes.run_eager(make(model), pool, args.batch_size, args.steps, args.warmup)
    line.images_per_s, line.loss, line.rss_mib = result.images_per_s, result.loss, rss.mib
    return line, own_flops


def measure_vaezoo(row: Row, cfg: Any, args: argparse.Namespace, path: str, flops: float) -> Line:
    """``vaezoo.training.run.train`` with a timing callback and the data-wait profiler."""
    from vaezoo.training.run import train

    profiler = probes.DataWaitProfiler()
    clock = probes.StepClock(profiler, time.perf_counter(), args.steps)
    with probes.PeakRSS() as rss:
        clock.started = time.perf_counter()
        train(cfg, extra_callbacks=[clock], profiler=profiler)
    stats = clock.steady(args.warmup, args.batch_size)
    line = Line(
        row.group, path, row.data, precision=clock.precision, batch_size=args.batch_size, flops_per_step=flops
    )
    for key in ("images_per_s", "data_wait", "startup_s", "first_step_s", "epoch_end_s", "loss"):
        setattr(line, key, stats[key])
    line.rss_mib = rss.mib
    if stats["timed_steps"] < 1:
        line.note = "no steady-state steps: raise --steps above --warmup"
    return line


def measure_row(row: Row, args: argparse.Namespace, folder: Path, run_root: Path) -> list[Line]:
    lines = []
    eager, flops = measure_eager(
        row, build_config(row, args, folder, run_root), args, reference=not row.own_eager
    )
    lines.append(eager)
    default = measure_vaezoo(row, build_config(row, args, folder, run_root), args, "vaezoo default", flops)
    lines.append(default)
    if default.precision not in FP32:  # same learning: the fp32 run's loss next to the default's
        cfg = build_config(row, args, folder, run_root, ["--train.precision=32-true"])
        lines.append(measure_vaezoo(row, cfg, args, "vaezoo 32-true", flops))
    else:
        default.note = "; ".join(
            filter(None, [default.note, "precision resolved to 32-true: the fp32 run itself"])
        )
    return lines


def measure_compile(row: Row, args: argparse.Namespace, folder: Path, run_root: Path, flops: float) -> Line:
    from vaezoo.config import ConfigError

    try:
        cfg = build_config(row, args, folder, run_root, ["--train.compile=true"])
    except ConfigError as err:
        return Line(
            row.group,
            "vaezoo compile",
            row.data,
            note=f"skipped: train.compile is not a config key yet ({err})",
        )
    line = measure_vaezoo(row, cfg, args, "vaezoo compile", flops)
    line.note = "first step includes torch.compile"
    return line


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--models", nargs="+", default=None, help=f"models to run (default: {' '.join(DEFAULT_MODELS)})"
    )
    p.add_argument(
        "--model", action="append", default=None, metavar="NAME", help="one registered model (repeatable)"
    )
    p.add_argument("--steps", type=int, default=300, help="training steps per run (default 300)")
    p.add_argument("--warmup", type=int, default=50, help="steps before the steady-state window (default 50)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--images", type=int, default=5000, help="PNGs in the generated image folder")
    p.add_argument("--pool", type=int, default=1024, help="in-memory images of the eager loops")
    p.add_argument(
        "--data",
        choices=["config", "image_folder", "dsprites"],
        default="config",
        help="data of the model rows (default: their config's, dSprites)",
    )
    p.add_argument("--compile", action="store_true", help="add the seed network with train.compile: true")
    p.add_argument("--skip-seed", action="store_true", help="leave out the reference and seed-network row")
    p.add_argument("--quick", action="store_true", help="smoke run: 20 steps, 256 images, VanillaVAE only")
    p.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "throughput.md")
    p.add_argument(
        "--workdir", type=Path, default=None, help="image folder and run folders (default: a temp dir)"
    )
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.warmup, args.images, args.pool = (
            min(args.steps, 20),
            min(args.warmup, 5),
            min(args.images, 256),
            min(args.pool, 256),
        )
        args.models = args.models or args.model or ["VanillaVAE"]
    args.models = args.models or args.model or DEFAULT_MODELS
    if args.warmup >= args.steps:
        p.error("--warmup must be smaller than --steps")
    args.pool = max(args.pool, args.batch_size)
    return args


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    command = ".venv/bin/python benchmarks/train_throughput.py " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )
    began = time.perf_counter()
    facts = probes.cpu_facts()
    peaks = {
        "fp32": probes.matmul_gflops(torch.float32, 1024),
        "bf16": probes.matmul_gflops(torch.bfloat16, 256, 0.2),
    }
    lines: list[Line] = []
    failures: list[str] = []

    def write(final: bool) -> None:  # after every row, so a crash keeps the rows before it
        elapsed = time.perf_counter() - began
        text = report.markdown(lines, args, command, facts, peaks, elapsed, failures, LOSS_TOLERANCE)
        if not final:
            text = text.replace(
                "\n## Machine", "\n**Incomplete: the run is still going (or died).**\n\n## Machine", 1
            )
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)

    with tempfile.TemporaryDirectory(prefix="vaezoo-bench-") as tmp:
        work = args.workdir or Path(tmp)
        folder = probes.write_image_folder(work / "images", args.images)
        for row in rows_for(args):
            print(f"\n=== {row.group} ===", flush=True)
            try:
                got = measure_row(row, args, folder, work / "runs")
                lines += got
                if args.compile and not row.own_eager:
                    lines.append(measure_compile(row, args, folder, work / "runs", got[0].flops_per_step))
            except Exception as err:  # one broken model must not lose the others' numbers
                traceback.print_exc()
                failures.append(f"{row.group}: {type(err).__name__}: {err}")
                lines.append(Line(row.group, "failed", row.data, note=f"{type(err).__name__}: {err}"[:200]))
            write(final=False)
    if str(torch.get_num_threads()) != facts["threads"]:
        facts["threads"] += f" at the start, {torch.get_num_threads()} after the vaezoo runs"
    facts["precision chosen by vaezoo"] = (
        ", ".join(sorted({ln.precision for ln in lines if ln.path == "vaezoo default"})) or "n/a"
    )
    write(final=True)
    elapsed = time.perf_counter() - began
    report.print_table(lines, peaks)
    print(f"\nwrote {args.output} ({elapsed / 60:.1f} min)")
    return args.output


if __name__ == "__main__":
    main()
