"""The tables of ``train_throughput.py``: markdown for benchmarks/results/throughput.md, rich for the terminal."""

from __future__ import annotations

import argparse
import datetime
import math
from typing import Any

COLUMNS = [
    "row", "path", "data", "precision", "images/s", "x ref", "x own eager", "GFLOP/s", "% fp32 peak",
    "peak RSS MiB", "data wait", "start-up s", "first step s", "epoch end s", "loss", "note",
]  # fmt: skip


def fmt(value: float, digits: int = 1, suffix: str = "") -> str:
    return (
        "—"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else f"{value:,.{digits}f}{suffix}"
    )


def baselines(lines: list[Any]) -> tuple[float, dict[str, float]]:
    ref = next((ln.images_per_s for ln in lines if ln.path == "reference eager"), math.nan)
    own = {ln.group: ln.images_per_s for ln in lines if ln.path == "own eager fp32"}
    return ref, own


def cells(line: Any, ref: float, own: dict[str, float], peaks: dict[str, float]) -> list[str]:
    ips = line.images_per_s
    vs_own = ips / own[line.group] if line.group in own and line.path.startswith("vaezoo") else math.nan
    gflops = line.gflops
    return [
        line.group, line.path, line.data, line.precision, fmt(ips), fmt(ips / ref, 2, "x"), fmt(vs_own, 2, "x"),
        fmt(gflops, 2), fmt(100 * gflops / peaks["fp32"], 1, " %"), fmt(line.rss_mib, 0),
        fmt(100 * line.data_wait, 1, " %"), fmt(line.startup_s, 1), fmt(line.first_step_s, 2),
        fmt(line.epoch_end_s, 2), fmt(line.loss, 4), line.note,
    ]  # fmt: skip


def target_rows(lines: list[Any], tolerance: float) -> list[list[str]]:
    """Per row: the speed target (seed: >= 4x the reference; models: >= 3x their own eager step)
    and the learning check (default precision's loss within ``tolerance`` of the fp32 run's)."""
    ref, own = baselines(lines)
    out = []
    for line in (ln for ln in lines if ln.path == "vaezoo default"):
        seed = line.group not in own
        base, want, versus = (
            (ref, 4.0, "reference eager") if seed else (own[line.group], 3.0, "own eager fp32")
        )
        ratio = line.images_per_s / base
        fp32 = next((ln for ln in lines if ln.group == line.group and ln.path == "vaezoo 32-true"), None)
        if fp32 is None:
            same = "fp32 is the default (one run)" if line.precision in ("32-true", "32") else "—"
            fp32_loss, delta = math.nan, math.nan
        else:
            fp32_loss = fp32.loss
            delta = abs(line.loss - fp32_loss) / abs(fp32_loss)
            same = "yes" if delta <= tolerance else "NO"
        met = "—" if math.isnan(ratio) else ("yes" if ratio >= want else "no")
        out.append([
            line.group, versus, fmt(line.images_per_s), fmt(base), fmt(ratio, 2, "x"), f">= {want:.0f}x", met,
            line.precision, fmt(line.loss, 4), fmt(fp32_loss, 4), fmt(100 * delta, 2, " %"), same,
        ])  # fmt: skip
    return out


TARGET_COLUMNS = [
    "row", "baseline", "vaezoo images/s", "baseline images/s", "ratio", "target", "met",
    "default precision", "loss (default)", "loss (fp32)", "loss diff", "same learning (<= 2 %)",
]  # fmt: skip


def md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def how_to_read(args: argparse.Namespace) -> str:
    return f"""## How to read

Every number comes from one process and one run, measured side by side; on this shared machine only
the ratios mean much. **images/s** is steady state: for the eager loops the time from step {args.warmup}
to step {args.steps}; for vaezoo (`vaezoo.training.run.train`, the function behind `vaezoo train`, with
its Lightning Trainer, VAEModule, real DataModule, TensorBoard logging and tqdm bar) the intervals
between batch ends after step {args.warmup}, leaving out the intervals that hold an epoch end
(validation, checkpoints, image grids: their extra time per epoch is **epoch end s**). **start-up s** is
the time from calling `train()` to the first batch (data set-up, model check, Trainer, sanity
validation); **first step s** is the first batch (it holds torch.compile's compilation where enabled).
**x ref** divides by PyTorch-VAE's VanillaVAE step (fp32, NCHW, eager, in-memory float tensors);
**x own eager** divides by the same model's own fp32 eager step on in-memory tensors (no Lightning,
no data loading). **GFLOP/s** = the FLOPs of one training step (forward + backward, as
`torch.utils.flop_counter` counts them: matmuls and convolutions only) x steps/s; compare it with the
measured matmul peaks above. **peak RSS** is the process's resident-set high-water mark during the
line (reset through /proc/self/clear_refs before it; memory the process already held counts).
**data wait** is the share of step time vaezoo spends in `next(train_dataloader)` (Lightning's
`train_dataloader_next` profiler action). **loss** is the mean training loss of the last 20 of the
{args.steps} steps, from the config's seed (the reference and the seed network share the loss
definition, MSE + 0.00025 KL, not the initial weights)."""


def markdown(lines, args, command, facts, peaks, elapsed, failures, tolerance) -> str:
    ref, own = baselines(lines)
    facts_md = "\n".join(f"- {k}: {v}" for k, v in facts.items())
    body = [
        "# Training throughput: vaezoo's real path vs plain eager PyTorch",
        "",
        f"Command: `{command}`  ",
        f"Date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}  ",
        f"Whole run: {elapsed / 60:.1f} min; {args.steps} steps per line, warm-up {args.warmup}, "
        f"batch {args.batch_size}, image folder of {args.images} procedural 64x64 RGB PNGs, dSprites "
        "from the configs (procedural, 40k subset).",
        "",
        "## Machine",
        "",
        facts_md,
        f"- fp32 matmul peak (1024^3): {peaks['fp32']:.1f} GFLOP/s; bf16 (256^3): {peaks['bf16']:.2f} GFLOP/s",
        "",
        "## Targets",
        "",
        md_table(TARGET_COLUMNS, target_rows(lines, tolerance)),
        "",
        "## All measurements",
        "",
        md_table(COLUMNS, [cells(ln, ref, own, peaks) for ln in lines]),
        "",
        how_to_read(args),
        "",
    ]
    if failures:
        body += ["## Failures", "", *(f"- {f}" for f in failures), ""]
    return "\n".join(body)


def print_table(lines: list[Any], peaks: dict[str, float]) -> None:
    from rich.console import Console
    from rich.table import Table

    ref, own = baselines(lines)
    table = Table(
        title=f"training throughput (fp32 peak {peaks['fp32']:.0f}, bf16 {peaks['bf16']:.1f} GFLOP/s)"
    )
    keep = [0, 1, 3, 4, 5, 6, 7, 9, 10, 11, 14]
    for i in keep:
        table.add_column(COLUMNS[i], justify="left" if i < 4 else "right")
    for line in lines:
        row = cells(line, ref, own, peaks)
        table.add_row(*(row[i] for i in keep))
    Console(width=200).print(table)
