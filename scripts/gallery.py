"""Build docs/gallery.md: every model config trained on dSprites and Fashion-MNIST with one budget.

    .venv/bin/python scripts/gallery.py                       # all configs, both datasets
    .venv/bin/python scripts/gallery.py --configs vae bhvae --datasets dsprites --steps 300

Each (config, dataset) pair is a real `vaezoo train` run (a fresh process, a fixed seed, the same
number of optimisation steps for every model); its final reconstruction and sample grids are copied
to docs/gallery/<dataset>/ and its final validation losses and wall time go into the table.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
DATASETS = {
    # dataset -> overrides on top of each model's own YAML (which trains on dSprites)
    "dsprites": ["--data.name", "dsprites"],  # a config made for other data (deep_hvae) is moved here too
    "fashion_mnist": ["--data.name", "fashion_mnist", "--data.image_size", "32", "--data.subset", "null"],
}
DATASETS_WITH_FACTORS = ("dsprites",)
# Binary data: a likelihood over the 256 levels of 8-bit images (deep_hvae's discretized logistic)
# puts its mass on the two end bins; its gradients there soon stay above deep_hvae's skip_grad_norm
# (even with the warm-up, every update is skipped from about batch 50 and the run stops at 150), so
# such configs train on these data with a Bernoulli likelihood.
BINARY_DATASETS = ("dsprites",)
EIGHT_BIT_LIKELIHOODS = ("discretized_logistic",)
NEEDS_FACTORS = "n/a (needs factors)"


def run_one(config: Path, dataset: str, steps: int, batch_size: int, out_root: Path) -> dict:
    """Train one config on one dataset for ``steps`` batches; return its row of the table."""
    if dataset not in DATASETS_WITH_FACTORS and yaml.safe_load(config.read_text()).get("data", {}).get(
        "pairs_k"
    ):
        # a weakly-supervised model trains on pairs that share factors: none without factors
        return {
            "config": config.stem,
            "dataset": dataset,
            "steps": steps,
            "seconds": 0,
            "skipped": NEEDS_FACTORS,
        }
    likelihood = (yaml.safe_load(config.read_text()).get("model") or {}).get("likelihood")
    binary = dataset in BINARY_DATASETS and likelihood in EIGHT_BIT_LIKELIHOODS
    with tempfile.TemporaryDirectory() as tmp:
        command = [
            sys.executable,
            "-m",
            "vaezoo.cli",
            "train",
            "-c",
            str(config),
            *DATASETS[dataset],
            *(["--model.likelihood", "bernoulli"] if binary else []),
            "--train.max_epochs",
            "1",
            "--train.max_steps",
            "-1",
            "--train.limit_train_batches",
            str(steps),
            "--train.limit_val_batches",
            "20",
            "--train.batch_size",
            str(batch_size),
            "--logging.num_images",
            "32",
            "--logging.progress_bar",
            "none",
            "--logging.save_dir",
            tmp,
        ]
        start = time.perf_counter()
        result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        row = {"config": config.stem, "dataset": dataset, "steps": steps, "seconds": round(seconds, 1)}
        if binary:
            row["likelihood"] = "bernoulli"
        if result.returncode != 0:
            row["error"] = (result.stderr.strip().splitlines() or ["failed"])[-1][:200]
            return row
        run = Path(re.search(r"run folder: (.+)", result.stdout).group(1).strip())
        summary = json.loads((run / "summary.json").read_text())
        checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        params = sum(v.numel() for k, v in checkpoint["state_dict"].items() if k.startswith("model."))
        row.update(
            model=checkpoint["vaezoo"]["model_name"],
            params=params,
            **summary["val_metrics"],
            recon_mse=summary["val_recon_mse_per_pixel"],
            mean_image_mse=summary["val_mean_image_mse_per_pixel"],
        )
        target = out_root / dataset
        target.mkdir(parents=True, exist_ok=True)
        for kind in ("reconstructions", "samples"):
            source = run / "images" / f"{kind}_epoch000.png"
            if source.is_file():
                shutil.copy(source, target / f"{config.stem}_{kind}.png")
                row[kind] = f"gallery/{dataset}/{config.stem}_{kind}.png"
        return row


def number(row: dict, key: str) -> str:
    return f"{row[key]:.4g}" if key in row else "–"


def picture(row: dict, key: str) -> str:
    return f"![]({row[key]})" if key in row else "n/a"


def markdown(rows: list[dict], steps: int, batch_size: int, command: str) -> str:
    lines = [
        "# Gallery",
        "",
        f"Every model config under `configs/`, trained for {steps} optimisation steps of batch {batch_size} "
        "on each dataset with seed 1265 on 2 CPU cores, then validated on 20 batches. Produced by",
        f"`{command}` (rows are added or redone with `--configs NAME ...`); the losses are the final validation values at each model's own loss scale "
        "(`recon MSE` is the mean squared error per pixel of the reconstructions, for all models alike, "
        "next to always predicting the mean training image). On binary dSprites a config's likelihood "
        "for 8-bit images (deep_hvae's discretized logistic) is replaced by a Bernoulli one, marked (B).",
        "",
    ]
    for dataset in DATASETS:
        subset = [r for r in rows if r["dataset"] == dataset]
        if not subset:
            continue
        lines += [
            f"## {dataset}",
            "",
            "| config | model | params | time (s) | val loss | val recon loss | "
            "val KLD | recon MSE (mean image) | reconstructions | samples |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in subset:
            if "skipped" in r:
                lines.append(f"| {r['config']} | {r['skipped']} | | | | | | | | |")
                continue
            if "error" in r:
                lines.append(f"| {r['config']} | failed: {r['error']} | | {r['seconds']} | | | | | | |")
                continue
            lines.append(
                f"| {r['config']}{' (B)' if r.get('likelihood') == 'bernoulli' else ''} | {r['model']} | {r['params']:,} | {r['seconds']} | {number(r, 'val/loss')} | "
                f"{number(r, 'val/Reconstruction_Loss')} | {number(r, 'val/KLD')} | "
                f"{r['recon_mse']:.4f} ({r['mean_image_mse']:.4f}) | {picture(r, 'reconstructions')} | "
                f"{picture(r, 'samples')} |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--configs",
        nargs="*",
        help="config stems to (re)train, the others' rows kept (default: every configs/*.yaml)",
    )
    parser.add_argument("--datasets", nargs="*", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    args = parser.parse_args()
    configs = sorted((REPO / "configs").glob("*.yaml"))
    results = args.out / "gallery" / "results.json"
    kept: list[dict] = []
    if args.configs:  # redo or add these rows; the others stay, so they must share the budget
        unknown = sorted(set(args.configs) - {c.stem for c in configs})
        if unknown:
            parser.error(f"no config named {', '.join(unknown)} under configs/")
        configs = [c for c in configs if c.stem in args.configs]
        kept = json.loads(results.read_text()) if results.is_file() else []
        budgets = {(r["steps"], r.get("batch_size", 32)) for r in kept}
        if budgets - {(args.steps, args.batch_size)}:
            parser.error(
                f"{results} holds rows of {sorted(budgets)} (steps, batch size); pass the same "
                "--steps / --batch-size so the gallery stays comparable"
            )
        redone = {(c.stem, d) for c in configs for d in args.datasets}
        kept = [r for r in kept if (r["config"], r["dataset"]) not in redone]
    rows = []
    for dataset in args.datasets:
        for config in configs:
            row = run_one(config, dataset, args.steps, args.batch_size, args.out / "gallery")
            row["batch_size"] = args.batch_size
            print(json.dumps(row), flush=True)
            rows.append(row)
    rows = sorted(kept + rows, key=lambda r: (list(DATASETS).index(r["dataset"]), r["config"]))
    command = f"python scripts/gallery.py --steps {args.steps} --batch-size {args.batch_size}"
    (args.out / "gallery.md").write_text(markdown(rows, args.steps, args.batch_size, command) + "\n")
    results.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
