"""The training driver: config -> data -> model -> Lightning Trainer -> run folder.

Everything that can fail on bad input (config, data path, image files, model shapes) is checked
before the run folder is created, so a failed start leaves nothing behind for ``--resume`` to trip
over. A run folder holds::

    config.yaml              the resolved config (model arguments filled in from the data)
    source_config.yaml       the user's own file, as written, when it was PyTorch-VAE's layout
    translation.yaml         what was translated, implied, ignored, and any device fallback
    checkpoints/last.ckpt    the latest state, for --resume
    checkpoints/best-*.ckpt  the best by validation loss
    images/                  reconstructions_epochNNN.png, samples_epochNNN.png
    images/traversals_epochNNN.gif   latent traversals (logging.traversal_gif)
    events.out.tfevents.*    TensorBoard; metrics.csv: the CSV logger (logging.logger lists them)
    mlruns/, mlflow_run_id   the MLflow logger's local store and its run (continued on --resume)
    wandb/, wandb_run_id     the W&B logger's offline files and its run id (continued on --resume)
    summary.json             final validation figures
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import shutil
import typing
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import lightning as L
import torch
import yaml
from lightning.fabric.connector import _PRECISION_INPUT
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, RichProgressBar, TQDMProgressBar
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException

from vaezoo.config import Config, ConfigError, TrainConfig, load_config
from vaezoo.data import VAEDataModule
from vaezoo.data.common import DataSplits
from vaezoo.fileio import DiskFullError, atomic_write_text, free_bytes, no_room_errno
from vaezoo.io import load_checkpoint
from vaezoo.models.base import BaseVAE
from vaezoo.registry import create_model, get_model_class, model_parameters
from vaezoo.training.callbacks import (
    ImageGrids,
    LastCheckpoint,
    RandomState,
    TrainingClock,
    ValidateAtMaxSteps,
)
from vaezoo.training.checkpoint import AtomicCheckpointIO, check_resume_checkpoint
from vaezoo.training.distributed import DeadProcessReport, strategy_for
from vaezoo.training.evaluation import EvaluateEveryNSteps, check_eval_data
from vaezoo.training.interrupts import StopOnSignal
from vaezoo.training.loggers import (
    FlushLogsAtCheckpoints,
    check_logger_packages,
    finish_loggers,
    make_loggers,
)
from vaezoo.training.module import VAEModule
from vaezoo.training.performance import (
    AUTO,
    Hardware,
    configure_cuda,
    configure_threads,
    mps_available,
    resolve_accelerator,
    resolve_precision,
)
from vaezoo.training.runlock import RUN_DIR_ENV, RunLock, takes_run_lock
from vaezoo.training.traversals import TraversalAnimation

ACTIVATION_FOR_RANGE = {"unit": "sigmoid", "symmetric": "tanh"}
PROGRESS_REFRESH_STEPS = 10  # the bar reads the loss from the device (a sync) once per this many steps


@dataclass
class PreparedRun:
    config: Config
    datamodule: VAEDataModule
    model: BaseVAE


def data_model_arguments(config: Config, datamodule: VAEDataModule) -> dict[str, Any]:
    """Model arguments the data decides: channels, image size, output range, label size, data size.

    They are filled in where the model takes them and the config leaves them out; a config value
    that contradicts the data is an error.
    """
    vectors = datamodule.kind == "vectors"
    facts = {
        "in_channels": datamodule.channels,  # vectors: their length D
        **({"architecture": "mlp"} if vectors else {"image_size": datamodule.image_size}),
        "output_activation": datamodule.output_activation or ACTIVATION_FOR_RANGE[config.data.normalize],
        "num_classes": datamodule.label_dim,  # conditional models
        "dataset_size": datamodule.num_train,  # estimators that weigh a minibatch against the data set
    }
    cls = get_model_class(config.model_name)
    params = model_parameters(cls)
    resolved = dict(config.model)
    if vectors and not (cls.supports_vectors and "architecture" in params):
        raise ConfigError(
            f"model {config.model_name} does not train on vectors (data.name {config.data.name!r}): it works "
            "on images only; models with architecture: mlp take vectors"
        )
    if not vectors and resolved.get("architecture") == "mlp":
        raise ConfigError(
            f"model.architecture = 'mlp' is for vectors, but data.name {config.data.name!r} gives images; "
            "use architecture 'conv' (the default), or data.name vectors"
        )
    for key, value in facts.items():
        if key not in params:
            continue
        if (
            key in resolved
            and key in ("in_channels", "image_size", "architecture")
            and resolved[key] != value
        ):
            raise ConfigError(
                f"model.{key} = {resolved[key]!r} but the data ({config.data.name}) gives {value!r}; "
                f"remove model.{key} or change the data settings"
            )
        resolved.setdefault(key, value)
    return resolved


def prepare(config: Config, splits: DataSplits | None = None, model: BaseVAE | None = None) -> PreparedRun:
    """Set up data and model and run one batch through the model: every input error surfaces here.

    ``splits``: data already built (``vaezoo.fit``'s); ``model``: a model object to train (its
    arguments are ``config.model``'s)."""
    check_logger_packages(config.logging)
    L.seed_everything(config.train.seed, workers=True, verbose=False)
    datamodule = VAEDataModule(
        config.data,
        batch_size=config.train.batch_size,
        val_batch_size=config.train.val_batch_size,
        seed=config.train.seed,
        splits=splits,
    )
    datamodule.prepare_data()
    datamodule.setup("fit")
    datamodule.check_fit(validate=config.train.limit_val_batches != 0)
    check_eval_data(config, datamodule)
    config.model = data_model_arguments(config, datamodule)
    if model is None:
        try:
            model = create_model(config.model_name, **config.model_kwargs)
        except (ValueError, TypeError) as err:
            raise ConfigError(f"model {config.model_name}: {err}") from None
    if model.trains_on_pairs and config.data.pairs_k is None:
        raise ConfigError(
            f"model {config.model_name} trains on pairs of images that share factors: set data.pairs_k "
            "(an integer k or 'random') on a dataset with factors"
        )
    images, labels = datamodule.fixed_batch(2, split="train")
    model.eval()
    with torch.no_grad():
        output = model(images, labels=labels)
        model.loss_function(*output, M_N=config.train.kl_weight, batch_idx=0, global_step=0, labels=labels)
    model.train()
    return PreparedRun(config, datamodule, model)


def new_run_dir(config: Config) -> Path:
    """``save_dir/name/version_N`` with the next free N."""
    root = Path(config.logging.save_dir) / (config.logging.name or config.model_name)
    taken = [int(m.group(1)) for p in root.glob("version_*") if (m := re.fullmatch(r"version_(\d+)", p.name))]
    return root / f"version_{max(taken, default=-1) + 1}"


def resume_checkpoint(run_dir: Path) -> Path:
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"cannot resume {run_dir}: no config.yaml there (is it a vaezoo run folder?)")
    if not checkpoint.is_file():
        raise ConfigError(
            f"cannot resume {run_dir}: {checkpoint} does not exist (the run stopped before its first "
            "checkpoint); start a new run instead"
        )
    # Before anything is written: read with weights_only=True (a file holding code is refused as
    # such), and its zip checksums verified (a torn or damaged file is named, with the intact
    # best-*.ckpt to use instead).
    check_resume_checkpoint(checkpoint)
    return checkpoint


def trained_batches(checkpoint: Path) -> int:
    """How many training batches the run had trained when ``checkpoint`` was written."""
    state = load_checkpoint(checkpoint, mmap=True)["state_dict"]
    return int(state["train_batches"]) if "train_batches" in state else 0


def load_resume_config(run_dir: str | Path, overrides: list[str] | None = None) -> Config:
    """The saved config of a run folder, with overrides (e.g. a larger ``--train.max_epochs``)."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        resume_checkpoint(run_dir)  # says what the folder lacks
    config = load_config(run_dir / "config.yaml", overrides)
    resume_checkpoint(run_dir)  # then its checkpoint, vetted
    return config


def build_trainer(
    config: Config,
    run_dir: Path,
    value_range: tuple[float, float],
    automatic_optimization: bool = True,
    extra_callbacks: list[L.Callback] | None = None,
    profiler: Any = None,
    resumed_step: int | None = None,
) -> L.Trainer:
    """The Trainer of a run; ``resumed_step``: the batches the checkpoint of a resumed run had
    trained (what the interrupted run logged from there on is dropped: it is trained again)."""
    log, train = config.logging, config.train
    # Lightning counts optimizer steps: two per batch for a model with an auxiliary optimizer (FactorVAE)
    steps_per_batch = 1 if automatic_optimization else 2
    loggers = make_loggers(log, run_dir, log.name or config.model_name, resumed_step)
    callbacks: list[L.Callback] = [
        ModelCheckpoint(
            dirpath=run_dir / "checkpoints",
            filename="best-epoch{epoch:03d}-step{step}",
            monitor="val/loss",
            mode="min",
            save_top_k=log.save_top_k,
            auto_insert_metric_name=False,
        ),
        # The latest state, for --resume (Lightning's own save_last only writes when a best
        # checkpoint was written in the same step), saved at validation ends: every epoch's, and the
        # last batch's under ValidateAtMaxSteps. Without validation every epoch, at epoch ends (and
        # at the last batch of an epoch max_steps cuts short, see LastCheckpoint).
        LastCheckpoint(
            run_dir / "checkpoints",
            save_on_train_epoch_end=train.limit_val_batches == 0 or train.check_val_every_n_epoch > 1,
        ),
        *(
            # last.ckpt mid-epoch too; the train loader's position is in it, so a resume neither
            # repeats nor skips a batch of the interrupted epoch
            [
                LastCheckpoint(
                    run_dir / "checkpoints",
                    save_on_train_epoch_end=False,
                    every_n_train_steps=log.checkpoint_every_n_steps * steps_per_batch,
                )
            ]
            if log.checkpoint_every_n_steps > 0
            else []
        ),
        ImageGrids(run_dir / "images", num_images=log.num_images, value_range=value_range),
        *(
            [
                EvaluateEveryNSteps(
                    log.eval_every_n_steps, log.eval_groups, log.eval_subset, log.eval_budget_seconds
                )
            ]
            if log.eval_every_n_steps > 0
            else []
        ),
        *([TraversalAnimation(run_dir / "images", log.num_images, value_range)] if log.traversal_gif else []),
        ValidateAtMaxSteps(),
        RandomState(),
        TrainingClock(),
        FlushLogsAtCheckpoints(),
        LearningRateMonitor(logging_interval="epoch"),
        DeadProcessReport(),  # a rank that dies ends the run naming it
        *(extra_callbacks or []),
    ]
    if log.progress_bar == "tqdm":
        callbacks.append(TQDMProgressBar(refresh_rate=PROGRESS_REFRESH_STEPS))
    elif log.progress_bar == "rich":
        callbacks.append(RichProgressBar(refresh_rate=PROGRESS_REFRESH_STEPS))
    precision = choose_precision(train)
    plugins: list[Any] = [AtomicCheckpointIO()]
    if SLURMEnvironment.detect():  # SLURM's SIGUSR1 stops the run like SIGTERM (StopOnSignal), no requeue
        plugins.append(SLURMEnvironment(auto_requeue=False))
    return L.Trainer(
        default_root_dir=run_dir,
        logger=loggers,
        callbacks=callbacks,
        plugins=plugins,
        enable_progress_bar=log.progress_bar != "none",
        log_every_n_steps=log.log_every_n_steps,
        max_epochs=train.max_epochs,
        # train.max_steps counts batches, Lightning's optimizer steps
        max_steps=train.max_steps * steps_per_batch if train.max_steps > 0 else -1,
        max_time=None if train.max_time is None else datetime.timedelta(seconds=train.max_time),
        precision=precision,
        # with manual optimisation VAEModule clips itself (Lightning refuses to)
        gradient_clip_val=train.gradient_clip_val if automatic_optimization else None,
        accelerator=train.accelerator,
        devices=train.devices,
        strategy=strategy_for(
            train.strategy,
            processes_per_node(train.devices, train.accelerator) * train.num_nodes,
            automatic_optimization,
        ),
        num_nodes=train.num_nodes,
        limit_train_batches=train.limit_train_batches,
        limit_val_batches=train.limit_val_batches,
        check_val_every_n_epoch=train.check_val_every_n_epoch,
        deterministic=train.deterministic,
        # the loaders shard by rank themselves (EpochSampler), resumably
        use_distributed_sampler=False,
        profiler=profiler,
    )


# every value Lightning's Trainer takes for ``precision``
LIGHTNING_PRECISIONS: tuple[Any, ...] = tuple(
    value for literal in typing.get_args(_PRECISION_INPUT) for value in typing.get_args(literal)
)


def choose_precision(train: TrainConfig) -> _PRECISION_INPUT:
    """The Lightning precision of ``train.precision`` ("auto": from the hardware, printed once)."""
    precision, reason = resolve_precision(train.precision, Hardware.detect(train.accelerator))
    if precision not in LIGHTNING_PRECISIONS:
        raise ConfigError(
            f"train.precision = {train.precision!r} gives {precision!r}, which Lightning does not take; "
            f"expected one of {[p for p in LIGHTNING_PRECISIONS if isinstance(p, str)]}"
        )
    if train.precision == AUTO:
        rank_zero_info(f"precision: {precision} ({reason}); set train.precision to override")
    return typing.cast(_PRECISION_INPUT, precision)


Devices = int | str | list[int]


def parse_devices(devices: Devices) -> Devices:
    """Lightning's string forms as numbers: ``"2"`` -> 2, ``"0,1"`` / ``"1,"`` -> [0, 1] / [1], ``"-1"`` -> -1."""
    if not isinstance(devices, str):
        return devices
    text = devices.strip()
    try:
        if "," in text:
            return [int(part) for part in text.split(",") if part.strip()]
        return int(text)
    except ValueError:
        return devices  # "auto", or something Lightning itself will explain


def fit_devices(
    accelerator: str, devices: Devices, cuda_devices: int, mps: bool = False
) -> tuple[str, Devices, str | None]:
    """``(accelerator, devices, why)`` this machine can honour; ``why`` is None when nothing changes.

    ``cuda_devices`` is how many CUDA GPUs the machine has. A GPU request without a GPU trains on
    the CPU; more GPUs than there are, or indices beyond the last (PyTorch-VAE's ``gpus: [1]`` on a
    one-GPU machine), become the GPUs there are, counted from 0; a list of indices or -1 on the CPU
    becomes one process. Anything else (TPUs, an explicit "mps", ...) is left to Lightning.
    """
    acc = accelerator.lower()
    parsed = parse_devices(devices)
    gpus = cuda_devices if cuda_devices > 0 else 1 if mps and acc in ("gpu", "auto") else 0
    kind = "CUDA GPU" if cuda_devices > 0 else "Apple GPU"
    if acc in ("gpu", "cuda") and (cuda_devices == 0 if acc == "cuda" else gpus == 0):
        return "cpu", 1, "this machine has no GPU (torch.cuda.is_available() is False): training on the CPU"
    if acc == "cpu" or (acc == "auto" and gpus == 0):
        if isinstance(parsed, list) or parsed == -1:
            return acc, 1, "devices on the CPU are a number of processes: training in one"
        return accelerator, devices, None
    if acc not in ("gpu", "cuda", "auto"):
        return accelerator, devices, None
    have = f"{gpus} {kind}{'s' if gpus != 1 else ''}"
    if isinstance(parsed, list):
        missing = [i for i in parsed if not 0 <= i < gpus]
        if missing:
            use = list(range(min(len(parsed), gpus)))
            return (
                accelerator,
                use,
                (
                    f"this machine has {have} (indices 0 to {gpus - 1}), no GPU {', '.join(map(str, missing))}: "
                    f"training on GPU{'s' if len(use) > 1 else ''} {use}"
                ),
            )
    elif isinstance(parsed, int) and parsed > gpus:
        return accelerator, gpus, f"this machine has {have}: training on {gpus}"
    return accelerator, parsed if isinstance(parsed, (int, list)) else devices, None


def fit_to_machine(config: Config) -> list[str]:
    """Make ``config.train``'s accelerator and devices what this machine has, with a warning that
    names the setting (the PyTorch-VAE key it came from, if any); returns the fallbacks made."""
    train = config.train
    cuda_devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
    accelerator, devices, why = fit_devices(train.accelerator, train.devices, cuda_devices, mps_available())
    if why is None:
        train.devices = devices
        return []
    names = []
    for key, old, new in (
        ("accelerator", train.accelerator, accelerator),
        ("devices", train.devices, devices),
    ):
        if old != new:
            names.append(setting_name(config, key, old))
    message = (
        f"{' and '.join(dict.fromkeys(names))} cannot be honoured: {why} "
        f"(train.accelerator = {accelerator!r}, train.devices = {devices!r})"
    )
    warnings.warn(f"{config_source(config)}{message}", stacklevel=2)
    train.accelerator, train.devices = accelerator, devices
    if config.translation is not None:
        config.translation.fallbacks.append(message)
    return [message]


def setting_name(config: Config, key: str, value: Any) -> str:
    """``train.<key> = value``, or the PyTorch-VAE key that gave it (``trainer_params.gpus = [1]``)."""
    record = config.translation
    origin = record.origin(f"train.{key}", value) if record is not None else None
    if record is None or origin is None:
        return f"train.{key} = {value!r}"
    section, _, name = origin.partition(".")
    return f"{origin} = {(record.original.get(section) or {}).get(name)!r}"


def config_source(config: Config) -> str:
    return f"{config.translation.source}: " if config.translation is not None else ""


def processes_per_node(devices: int | str | list[int], accelerator: str) -> int:
    """How many training processes Lightning starts on each machine for ``train.devices``."""
    if isinstance(devices, list):
        return max(1, len(devices))
    if isinstance(devices, str) and devices.strip().lstrip("-").isdigit():
        devices = int(devices)
    if isinstance(devices, int) and devices > 0:
        return devices
    if resolve_accelerator(accelerator, torch.cuda.is_available()) == "cuda":
        return max(1, torch.cuda.device_count())
    return 1  # "auto" on a CPU: one process


class RunAlreadyFinished(Exception):
    """``--resume`` of a run that has trained all its config asks for: nothing is done or written."""


def finished_note(run_dir: Path, config: Config, checkpoint: Path) -> str | None:
    """Why resuming ``run_dir`` with ``config`` would train nothing, or None.

    A run is finished when its summary.json was written from this very checkpoint and the resumed
    config asks for no more epochs or steps than the saved one did."""
    summary_path = run_dir / "summary.json"
    if not summary_path.is_file():
        return None
    try:
        summary = json.loads(summary_path.read_text())
    except (ValueError, OSError):  # a damaged summary is not trusted: resume
        return None
    data = load_checkpoint(checkpoint, mmap=True)
    step = data.get("global_step")
    if not isinstance(summary, dict) or summary.get("global_step") != step:
        return None
    # the limits the checkpoint's run trained to (config.yaml may be a failed resume's, with new ones)
    saved = (data["vaezoo"].get("config") or {}).get("train") or {}
    train = config.train
    limits = (train.max_epochs, train.max_steps, train.max_time)
    if limits != (saved.get("max_epochs"), saved.get("max_steps"), saved.get("max_time")):
        return None
    return (
        f"{run_dir} has already finished (step {step}, train.max_epochs = {saved.get('max_epochs')}, "
        f"train.max_steps = {saved.get('max_steps')}, train.max_time = {saved.get('max_time')}); "
        "nothing was trained or written. To train it further, raise them, e.g. --train.max_epochs 20"
    )


def claim_run_dir(config: Config, run_dir: str | Path | None, overwrite: bool) -> Path:
    """The folder a new run writes to, created now: ``run_dir`` if given (it must be empty, or
    ``overwrite`` replaces it once its lock is taken), else the next free ``version_N``, taken
    with an exclusive mkdir so that two runs started at once never share one."""
    if os.environ.get(RUN_DIR_ENV):  # a worker of a distributed run: its launcher chose and holds it
        return Path(os.environ[RUN_DIR_ENV])
    if run_dir is not None:
        target = Path(run_dir)
        if target.exists() and not target.is_dir():
            raise ConfigError(f"--run-dir {target} is a file, not a folder")
        if target.is_dir() and any(target.iterdir()) and not overwrite:
            raise ConfigError(
                f"--run-dir {target} already holds files: a new run never writes into an old folder. "
                f"Continue that run with --resume {target}, choose another folder, or replace it with --overwrite"
            )
        target.mkdir(parents=True, exist_ok=True)
        return target
    while True:
        candidate = new_run_dir(config)
        try:
            candidate.mkdir(parents=True)
            return candidate
        except FileExistsError:  # another run took this version number a moment ago
            continue


def empty_folder(folder: Path, keep: str) -> None:
    """Remove everything in ``folder`` but the file named ``keep`` (its lock)."""
    for entry in folder.iterdir():
        if entry.name == keep:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def train(
    config: Config,
    resume: str | Path | None = None,
    extra_callbacks: list[L.Callback] | None = None,
    profiler: Any = None,
    run_dir: str | Path | None = None,
    overwrite: bool = False,
    splits: DataSplits | None = None,
    model: BaseVAE | None = None,
) -> Path:
    """Train ``config`` in a new run folder (``run_dir``, or the next ``version_N``), or continue the
    run in ``resume``; returns the folder. The folder is locked while the run writes it.

    ``extra_callbacks`` and ``profiler`` go to the Lightning Trainer (the throughput benchmark
    times the real path through them); ``splits`` and ``model`` to :func:`prepare`."""
    resumed = Path(resume) if resume else None
    checkpoint = resume_checkpoint(resumed) if resumed else None
    if resumed is not None and checkpoint is not None:
        note = finished_note(resumed, config, checkpoint)
        if note is not None:
            raise RunAlreadyFinished(note)
    fallbacks = fit_to_machine(config)
    configure_threads(processes_per_node(config.train.devices, config.train.accelerator))
    configure_cuda(config.train.deterministic)
    prepared = prepare(config, splits, model)  # every input error surfaces before a folder is made or locked
    folder = resumed if resumed is not None else claim_run_dir(config, run_dir, overwrite)
    lock = RunLock(folder) if takes_run_lock() else contextlib.nullcontext()
    with lock:
        if resumed is None and overwrite and isinstance(lock, RunLock):
            empty_folder(folder, keep=lock.path.name)
        return train_in(config, prepared, folder, checkpoint, fallbacks, extra_callbacks, profiler)


def train_in(
    config: Config,
    prepared: PreparedRun,
    run_dir: Path,
    checkpoint: Path | None,
    fallbacks: list[str],
    extra_callbacks: list[L.Callback] | None,
    profiler: Any,
) -> Path:
    """The body of :func:`train`, in a run folder this process holds."""
    os.environ[RUN_DIR_ENV] = str(run_dir)
    pairs = config.data.pairs_k is not None and prepared.model.trains_on_pairs
    module = VAEModule(prepared.model, config.train, run_config=config.to_dict(), pairs=pairs)
    stop_on_signal = StopOnSignal(run_dir)
    trainer = build_trainer(
        config,
        run_dir,
        prepared.datamodule.value_range,
        module.automatic_optimization,
        extra_callbacks=[stop_on_signal, *(extra_callbacks or [])],
        profiler=profiler,
        resumed_step=trained_batches(checkpoint) if checkpoint else None,
    )
    if checkpoint:  # the checkpoint folder of a resumed run is not empty, by design
        warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
    try:
        if trainer.is_global_zero:
            # the resolved config, to every logger; first, so that a resume whose MLflow run is
            # gone stops before it rewrites config.yaml
            for logger in trainer.loggers:
                logger.log_hyperparams(config.to_dict())
            config.save(run_dir / "config.yaml")
            if not checkpoint:
                write_translation(run_dir, config, fallbacks)
        with stop_on_signal.handling_signals():
            # weights_only: a resumed checkpoint is read as tensors and plain data, never as code
            trainer.fit(module, datamodule=prepared.datamodule, ckpt_path=checkpoint, weights_only=True)
        if module.validated_at != int(module.train_batches) and trainer.limit_val_batches != 0:
            # the last epoch was not a validation epoch (check_val_every_n_epoch > 1; a max_steps stop
            # is validated within fit by ValidateAtMaxSteps): validate the final weights (losses, grids)
            trainer.validate(module, datamodule=prepared.datamodule, verbose=False)
    except SIGTERMException:  # Lightning's own stop on SIGTERM (StopOnSignal saved the run)
        raise stop_on_signal.interrupted(trainer) from None
    except OSError as err:  # a write of Lightning's or a logger's own (events, hparams) that found no room
        code = None if isinstance(err, DiskFullError) else no_room_errno(err, run_dir)
        if code is None:
            raise
        last = run_dir / "checkpoints" / "last.ckpt"
        kept = (
            f"the run's last checkpoint {last} is intact; `vaezoo train --resume {run_dir}` continues "
            "from it once there is space"
            if last.is_file()
            else "the run stopped before its first checkpoint"
        )
        raise DiskFullError(code, err.filename or run_dir, free_bytes(run_dir), kept) from None
    finally:
        os.environ.pop(RUN_DIR_ENV, None)
        finish_loggers(trainer.loggers)
    if trainer.is_global_zero:
        write_summary(run_dir, trainer, prepared)
    return run_dir


def write_translation(run_dir: Path, config: Config, fallbacks: list[str]) -> None:
    """``source_config.yaml`` (the user's PyTorch-VAE file, as written) and ``translation.yaml``
    (what became what, what was ignored, what fell back), and the same printed once."""
    record = config.translation
    if record is not None:
        text = record.text if record.text is not None else yaml.safe_dump(record.original, sort_keys=False)
        atomic_write_text(run_dir / "source_config.yaml", text)
        rank_zero_info(record.summary())
    if record is None and not fallbacks:
        return
    notes = record.to_dict() if record is not None else {"source": "vaezoo layout", "fallbacks": fallbacks}
    header = "# How the config was read; config.yaml beside it is what the run used.\n"
    atomic_write_text(
        run_dir / "translation.yaml", header + yaml.safe_dump(notes, sort_keys=False, width=100)
    )


def write_summary(run_dir: Path, trainer: L.Trainer, prepared: PreparedRun) -> dict[str, Any]:
    """Final validation figures, next to the baseline of always predicting the mean training image."""
    model = cast(
        VAEModule, trainer.lightning_module
    ).inference_model.eval()  # the average, with train.ema_decay
    datamodule = prepared.datamodule
    device = next(model.parameters()).device
    mean_image = torch.zeros(1)
    count = 0
    for images, _ in datamodule.train_dataloader():
        mean_image = mean_image + images.sum(0)
        count += images.shape[0]
        if count >= 10_000:
            break
    mean_image = mean_image / count
    model_se = baseline_se = 0.0
    pixels = 0
    with torch.no_grad():
        for images, labels in datamodule.val_dataloader():
            recons = model.generate(images.to(device), labels=labels.to(device)).cpu()
            model_se += (recons - images).pow(2).sum().item()
            baseline_se += (mean_image - images).pow(2).sum().item()
            pixels += images.numel()
    model_mse = model_se / pixels
    baseline_mse = baseline_se / pixels
    best = trainer.checkpoint_callback
    callbacks: list[L.Callback] = trainer.callbacks  # type: ignore[attr-defined]  # set by Lightning
    clock = next((c for c in callbacks if isinstance(c, TrainingClock)), None)
    summary: dict[str, Any] = {
        "global_step": trainer.global_step,
        "epochs": trainer.current_epoch,
        "val_metrics": {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")},
        "val_recon_mse_per_pixel": model_mse,
        "val_mean_image_mse_per_pixel": baseline_mse,
        "best_checkpoint": best.best_model_path if isinstance(best, ModelCheckpoint) else None,
        "recon_mse_vs_mean_image": model_mse / max(baseline_mse, 1e-12),
        "train_seconds": clock.seconds if clock is not None else None,
    }
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary
