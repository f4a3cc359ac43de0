"""The ``vaezoo`` command: train, sample, reconstruct, list.

Examples::

    vaezoo train -c configs/vae.yaml --model.latent_dim 32 --train.max_epochs 3
    vaezoo train --resume runs/VanillaVAE/version_0 --train.max_epochs 20
    vaezoo sample runs/VanillaVAE/version_0/checkpoints/last.ckpt -n 64 -o samples.png
    vaezoo reconstruct runs/VanillaVAE/version_0 --data some/image/folder -o recon.png
    vaezoo list
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

import torch

from vaezoo.config import ConfigError, from_dict, parse_overrides, set_dotted
from vaezoo.registry import UnknownModelError

if TYPE_CHECKING:
    from vaezoo.data import VAEDataModule

USER_ERRORS: tuple[type[Exception], ...] = (ConfigError, UnknownModelError)


def _user_errors() -> tuple[type[Exception], ...]:
    from vaezoo.data import DataError
    from vaezoo.training.checkpoint import CheckpointError

    return (*USER_ERRORS, DataError, CheckpointError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vaezoo", description="Train, sample and compare VAEs.")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser(
        "train",
        help="train a model from a YAML config",
        description="Train a model. Any config value can be overridden: --section.key VALUE "
        "(e.g. --model.latent_dim 32 --train.max_epochs 3 --data.name image_folder --data.path DIR).",
    )
    train.add_argument("-c", "--config", help="YAML config (ours or PyTorch-VAE's layout)")
    train.add_argument(
        "--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint"
    )
    train.add_argument("--print-config", action="store_true", help="print the resolved config and exit")

    sample = commands.add_parser("sample", help="decode samples from the prior into a PNG grid")
    sample.add_argument("checkpoint", help="a .ckpt file or a run folder (its last checkpoint)")
    sample.add_argument("-n", "--num-samples", type=int, default=64)
    sample.add_argument("-o", "--output", default="samples.png")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--nrow", type=int, default=None, help="images per row (default: square grid)")

    recon = commands.add_parser(
        "reconstruct",
        help="reconstruct images into a PNG grid (rows of inputs, each above its reconstructions)",
        description="Reconstruct images. Data: the run's own validation split by default; --data DIR for a "
        "folder of images; or --data.key VALUE overrides of the run's data config.",
    )
    recon.add_argument("checkpoint", help="a .ckpt file or a run folder (its last checkpoint)")
    recon.add_argument("--data", metavar="DIR", help="a folder of images to reconstruct")
    recon.add_argument("--split", choices=["train", "val"], default="val")
    recon.add_argument("-n", "--num-images", type=int, default=32)
    recon.add_argument("-o", "--output", default="reconstructions.png")
    recon.add_argument("--seed", type=int, default=0)

    commands.add_parser("list", help="list the registered models")
    return parser


def cmd_train(args: argparse.Namespace, overrides: list[str]) -> int:
    from vaezoo.config import load_config
    from vaezoo.training.run import load_resume_config, train

    if args.resume:
        config = load_resume_config(args.resume, overrides)
    else:
        config = load_config(args.config, overrides)
    if args.print_config:
        import yaml

        print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
        return 0
    run_dir = train(config, resume=args.resume)
    print(f"run folder: {run_dir}")
    return 0


def cmd_sample(args: argparse.Namespace, overrides: list[str]) -> int:
    from vaezoo.images import save_image
    from vaezoo.io import model_from_checkpoint

    _no_overrides(overrides, "sample")
    model, config = model_from_checkpoint(args.checkpoint)
    labels = None
    if "num_classes" in model.config:  # a conditional model: condition on labels of real images
        labels = _data_module(config).fixed_batch(args.num_samples, split="val")[1]
    torch.manual_seed(args.seed)
    try:
        with torch.no_grad():
            samples = model.sample(args.num_samples, "cpu", labels=labels)
    except NotImplementedError as err:
        raise ConfigError(f"cannot sample from {type(model).__name__}: {err}") from None
    path = save_image(samples, args.output, nrow=args.nrow, value_range=_value_range(config))
    print(f"wrote {args.num_samples} samples to {path}")
    return 0


def cmd_reconstruct(args: argparse.Namespace, overrides: list[str]) -> int:
    from vaezoo.images import interleave_rows, save_image
    from vaezoo.io import model_from_checkpoint

    model, saved = model_from_checkpoint(args.checkpoint)
    raw = {key: dict(value) for key, value in saved.items()}
    if args.data:
        channels = model.config.get("in_channels")
        raw["data"].update(
            name="image_folder", path=args.data, subset=None, val_fraction=0.0, channels=channels
        )
    for key, value in parse_overrides(overrides):
        if not key.startswith("data."):
            raise ConfigError(f"reconstruct takes only --data.* overrides, not --{key}")
        set_dotted(raw, key, value)
    datamodule = _data_module(raw, source=f"{args.checkpoint} (saved config)")
    split = "train" if args.data else args.split
    images, labels = datamodule.fixed_batch(args.num_images, split=split)
    torch.manual_seed(args.seed)
    with torch.no_grad():
        recons = model.generate(images, labels=labels)
    nrow = max(1, int(len(images) ** 0.5))
    grid = interleave_rows(images, recons, nrow)
    path = save_image(grid, args.output, nrow=nrow, value_range=datamodule.value_range)
    print(f"wrote {len(images)} reconstructions to {path}")
    return 0


def cmd_list(args: argparse.Namespace, overrides: list[str]) -> int:
    from rich.console import Console
    from rich.table import Table

    from vaezoo.registry import aliases_of, get_model_class, list_models

    _no_overrides(overrides, "list")
    table = Table("model", "aliases", "description")
    for name in list_models():
        doc = (get_model_class(name).__doc__ or "").strip().splitlines()
        table.add_row(name, ", ".join(aliases_of(name)), doc[0] if doc else "")
    Console().print(table)
    return 0


def _data_module(raw: dict, source: str = "saved config") -> VAEDataModule:
    """The data of a run's saved config (a plain dict), set up."""
    from vaezoo.data import VAEDataModule

    config = from_dict(raw, source=source)
    datamodule = VAEDataModule(config.data, batch_size=config.train.batch_size)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def _value_range(config: dict) -> tuple[float, float]:
    return (-1.0, 1.0) if config.get("data", {}).get("normalize") == "symmetric" else (0.0, 1.0)


def _no_overrides(overrides: list[str], command: str) -> None:
    if overrides:
        raise ConfigError(f"unexpected arguments for '{command}': {' '.join(overrides)}")


COMMANDS = {"train": cmd_train, "sample": cmd_sample, "reconstruct": cmd_reconstruct, "list": cmd_list}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, overrides = parser.parse_known_args(argv)
    try:
        return COMMANDS[args.command](args, overrides)
    except _user_errors() as err:
        print(f"vaezoo {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
