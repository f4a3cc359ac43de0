"""The run configuration: one YAML file per model, four typed sections, dotted CLI overrides.

A config has the sections ``model`` (``name`` plus the model constructor's keyword arguments),
``data``, ``train`` and ``logging``. Every key is checked: a misspelled key is an error that names
it and suggests the nearest valid one, and every value is checked against the field's type.
PyTorch-VAE's YAML layout (``model_params`` / ``data_params`` / ``exp_params`` / ``trainer_params``
/ ``logging_params``) is recognised on load and translated by :mod:`vaezoo.pytorch_vae`, so its
users can bring their configs.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import importlib.resources
import inspect
import re
import reprlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union

import yaml

from vaezoo.arguments import resolve_arguments
from vaezoo.fileio import atomic_write_text
from vaezoo.text import first_sentence

if TYPE_CHECKING:
    from vaezoo.pytorch_vae import Translation


class ConfigError(ValueError):
    """A config file, key or value that cannot be used; the message says which and why."""


@dataclass
class DataConfig:
    """Which images to train on and how they are prepared."""

    # dsprites | celeba | image_folder | mnist | fashion_mnist (IDX files) | arrays | cifar10 | cifar100;
    # ground-truth factor sets: shapes3d (3dshapes.h5) | mpi3d (mpi3d_*.npz) | smallnorb (folder of
    # the six .mat files) | cars3d (folder of car_*_mesh.mat); vectors (a .npy / .csv of N rows of D
    # numbers, for models with architecture: mlp); in_memory (set by vaezoo.fit)
    name: str = "dsprites"
    path: str | None = None  # dataset location; dsprites: optional official .npz file
    image_size: int = 64  # images are resized (after the optional centre crop) to this square size
    channels: int | None = None  # None: the dataset's own; 1 or 3 converts image folders
    normalize: Literal["unit", "symmetric"] = "unit"  # pixel range [0, 1] or [-1, 1]
    crop: int | None = None  # centre crop before resizing (CelebA: 148); None: the dataset default
    flip: bool | None = None  # random horizontal flip of training images; None: the dataset default
    subset: int | None = None  # keep a random subset of this many images (train + val), for quick runs
    val_fraction: float = 0.05  # share held out for validation where the dataset has no official split
    split_seed: int = 0  # seed of the subset and train/val split (independent of the training seed)
    num_workers: int = 0
    cache_dir: str | None = None  # default: $VAEZOO_CACHE or ~/.cache/vaezoo
    # An image file that cannot be read (truncated, not an image) met while training: "fail" stops
    # with an error naming it; "skip" warns once, leaves it out and counts the skips in the logs.
    bad_files: Literal["fail", "skip"] = "fail"
    label_column: int | str | None = None  # vectors: the labels' column, a 0-based index or a CSV header name
    standardize: bool = False  # vectors: scale each feature to the training split's zero mean, unit std
    # Weak supervision (Ada-GVAE, GroupVAE ...): batches of pairs that share all factors but this
    # many (an integer k >= 1, or "random": k uniform per pair); null: single images. Datasets with factors only.
    pairs_k: int | str | None = None


@dataclass
class TrainConfig:
    """Optimisation and the Lightning Trainer."""

    optimizer: Literal["adam", "adamw"] = "adam"
    lr: float = 0.005
    weight_decay: float = 0.0
    scheduler: Literal["exponential", "cosine", "none"] = "exponential"
    scheduler_gamma: float = 0.95  # exponential decay per epoch, as in PyTorch-VAE
    # A linear learning-rate warm-up over the first lr_warmup_steps batches, times the scheduler's
    # rate (NVAE and VDVAE warm up: Adam's first, normalised steps would move zero-initialised
    # heads, e.g. a deep hierarchy's posteriors, too far at once). 0: none.
    lr_warmup_steps: int = 0
    # The M_N passed to ``loss_function``: loss = reconstruction + kl_weight * KL, in train and val alike.
    kl_weight: float = 1.0
    # The KL weight over training: constant; linear (a warm-up from 0 over kl_schedule_steps
    # batches); cyclical (Fu et al. 2019: cycles of kl_schedule_steps batches, each rising from 0
    # over its first kl_cycle_ramp fraction). A function of the batch count, so a resume is exact.
    kl_schedule: Literal["constant", "linear", "cyclical"] = "constant"
    kl_schedule_steps: int = 0
    kl_cycle_ramp: float = 0.5
    batch_size: int = 64
    val_batch_size: int | None = None  # None: batch_size
    max_epochs: int | None = 10
    max_steps: int = -1
    # A wall-clock budget in seconds (Lightning's Trainer(max_time=...)): training stops, validates and
    # checkpoints at the first batch past it, whichever of max_epochs, max_steps, max_time comes first.
    # It gives models of different speeds the same training time (benchmarks). None: no limit.
    max_time: float | None = None
    # "auto": bf16-mixed where the hardware computes bf16 natively (CPUs with AVX512-BF16 or AMX,
    # CUDA GPUs of compute capability >= 8.0), else 32-true; or any Lightning precision string.
    precision: str = "auto"
    gradient_clip_val: float | None = None
    seed: int = 1265
    accelerator: str = "auto"
    devices: int | str | list[int] = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    limit_train_batches: int | float | None = None
    limit_val_batches: int | float | None = None
    check_val_every_n_epoch: int = 1
    deterministic: bool = False
    channels_last: bool | None = None  # NHWC memory layout; None: when the model has 2-D convolutions
    compile: bool = False  # torch.compile the forward pass and loss (falls back to eager with a warning)
    # A non-finite loss: "stop" ends the run naming the step and the loss term, keeping the last good
    # checkpoint; "skip" leaves that update out and counts the skips (logged as train/skipped_updates).
    nonfinite: Literal["stop", "skip"] = "stop"
    skip_grad_norm: float | None = None  # skip updates whose gradient norm exceeds this (as VDVAE does)
    # Keep an exponential moving average of the weights with this decay (e.g. 0.999); the average is
    # what is validated, drawn in the grids, summarised and loaded for inference. None: no average.
    ema_decay: float | None = None


LoggerName = Literal["tensorboard", "csv", "mlflow", "wandb"]


@dataclass
class LoggingConfig:
    """Where a run is written and what it logs."""

    save_dir: str = "runs"
    name: str | None = None  # None: the model name
    # One logger or a list of them, e.g. [tensorboard, mlflow]: tensorboard (event files in the run
    # folder); csv (RUN/metrics.csv); mlflow (pip install vaezoo[mlflow]; a local store RUN/mlruns
    # unless mlflow_tracking_uri, `mlflow ui --backend-store-uri RUN/mlruns`); wandb (pip install
    # vaezoo[wandb]; offline unless wandb_mode, files in RUN/wandb, `wandb sync --id ID` uploads them).
    # Metrics, the config and the pictures go to each; a resume continues the same MLflow/W&B run.
    logger: LoggerName | list[LoggerName] = "tensorboard"
    mlflow_tracking_uri: str | None = None  # None: file:RUN/mlruns; or e.g. http://host:5000, sqlite:///m.db
    wandb_mode: Literal["offline", "online"] = "offline"  # online needs `wandb login` and the network
    wandb_project: str | None = None  # None: the run's name (logging.name or the model name)
    log_every_n_steps: int = 50
    progress_bar: Literal["tqdm", "rich", "none"] = "tqdm"
    num_images: int = 64  # images in each reconstruction / sample grid
    save_top_k: int = 1  # best checkpoints kept by validation loss (besides last.ckpt)
    # Also write last.ckpt every this many training batches, mid-epoch (0: at validation ends only).
    checkpoint_every_n_steps: int = 0
    # Metrics during training: every this many training batches (0: never), rank zero runs the
    # evaluation groups in eval_groups on the inference weights and logs them to every logger as
    # eval/<metric> (and the evaluation's own wall time as eval/seconds) at that batch's step.
    eval_every_n_steps: int = 0
    # active_units, kl, elbo, codebook; on data with ground-truth factors (dsprites, shapes3d, mpi3d,
    # smallnorb, cars3d, arrays with factors) also mig, factor_vae, beta_vae, sap, dci, modularity,
    # irs, dcimig, unsupervised, downstream_logreg, downstream_gbt, fairness (the DISENTANGLEMENT_METRICS). A
    # group the model lacks (no posterior for elbo, no codebook) is left out with one note.
    eval_groups: list[str] = field(default_factory=lambda: ["active_units", "elbo"])
    # Validation images for active_units, kl, elbo and codebook; ground-truth observations for the
    # disentanglement groups (factor_vae and beta_vae: variance estimate, then eval_subset // 64 votes).
    eval_subset: int = 500
    # Wall time one evaluation may take: a group that would end past it (by its last run's time)
    # is skipped that time, and one that alone took longer is not run again; each with a note.
    eval_budget_seconds: float = 30.0
    # A GIF of latent traversals of a few validation images at each validation end (at most once an
    # epoch): images/traversals_epochNNN.gif, and to each logger (TensorBoard shows it animated).
    traversal_gif: bool = True


# train.precision: "auto" (see vaezoo.training.performance) or one of Lightning's precision names.
PRECISIONS = (
    "auto",
    "32-true",
    "32",
    "bf16-mixed",
    "bf16",
    "16-mixed",
    "16",
    "bf16-true",
    "16-true",
    "64-true",
    "64",
)

SECTIONS: dict[str, type] = {"data": DataConfig, "train": TrainConfig, "logging": LoggingConfig}


@dataclass
class Config:
    """A whole run: ``model`` is the model name plus its constructor arguments."""

    model: dict[str, Any] = field(default_factory=lambda: {"name": "VanillaVAE"})
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    # How a PyTorch-VAE config was translated (None: the file was in our layout); not part of the
    # saved config.yaml, kept beside it as translation.yaml.
    translation: Translation | None = field(default=None, repr=False, compare=False)

    @property
    def model_name(self) -> str:
        return self.model["name"]

    @property
    def model_kwargs(self) -> dict[str, Any]:
        return {k: v for k, v in self.model.items() if k != "name"}

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": dict(self.model)}
        for section in SECTIONS:
            out[section] = dataclasses.asdict(getattr(self, section))
        return out

    def save(self, path: str | Path) -> None:
        """Write the config as YAML, atomically (a crash never leaves half a file)."""
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        atomic_write_text(Path(path), text)


# --------------------------------------------------------------------------- building and checking


def suggest(name: object, valid: typing.Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the nearest valid name, or ''."""
    close = difflib.get_close_matches(str(name), list(valid), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


# A user's value in a message: YAML aliases can make a small file a structure of billions of items
# (and a line can be megabytes long), so messages show a bounded repr of it.
_BRIEF = reprlib.Repr()
_BRIEF.maxlevel, _BRIEF.maxlist, _BRIEF.maxdict, _BRIEF.maxstring, _BRIEF.maxother = 3, 8, 8, 120, 120


def brief(value: Any) -> str:
    """``repr(value)``, shortened with '...' where it is long or deep."""
    return _BRIEF.repr(value)


def from_dict(raw: dict[str, Any], source: str = "config") -> Config:
    """Build and validate a Config from plain data (parsed YAML, in our layout or PyTorch-VAE's)."""
    raw, translation = _read_layout(raw, source)
    return _build(raw, source, translation)


def _read_layout(raw: Any, source: str, text: str | None = None) -> tuple[dict[str, Any], Translation | None]:
    """``raw`` in our sections, and the record of its translation if it is PyTorch-VAE's layout
    (sections named ``*_params``); a config in our layout is returned as it is."""
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{source}: expected a mapping with sections model/data/train/logging, got {brief(raw)}"
        )
    if not any(str(key).endswith("_params") for key in raw):
        return raw, None
    from vaezoo.pytorch_vae import translate_layout  # imported here: it builds on this module

    return translate_layout(raw, source, text)


def _build(
    raw: dict[str, Any], source: str, translation: Translation | None, overridden: set[str] | None = None
) -> Config:
    valid = ["model", *SECTIONS]
    for key in raw:
        if key not in valid:
            raise ConfigError(f"{source}: unknown section '{key}'{suggest(key, valid)}; sections are {valid}")
    config = Config()
    model = raw.get("model") or {}
    if not isinstance(model, dict):
        raise ConfigError(f"{source}: section 'model' must be a mapping, got {brief(model)}")
    model = {"name": "VanillaVAE", **model}
    try:
        if translation is None:
            config.model = resolve_model_section(model, source)
        else:
            config.model = translation.resolve_model(model, source)
        for name, cls in SECTIONS.items():
            values = raw.get(name) or {}
            if not isinstance(values, dict):
                raise ConfigError(f"{source}: section '{name}' must be a mapping, got {brief(values)}")
            setattr(config, name, build_section(cls, values, f"{source}: {name}"))
        check_values(config, source, overridden or set())
    except ConfigError as err:
        raise ConfigError(str(err) if translation is None else translation.name_origin(str(err))) from None
    if translation is not None:
        translation.warn(stacklevel=4)
        config.translation = translation
    return config


def build_section(cls: type, values: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        if key not in hints:
            raise ConfigError(
                f"{where}: unknown key '{key}'{suggest(key, hints)}; valid keys: {sorted(hints)}"
            )
        check_type(value, hints[key], f"{where}.{key}")
    return cls(**values)


def resolve_model_section(model: dict[str, Any], source: str) -> dict[str, Any]:
    """The model section in the model's own argument names, each value type-checked.

    PyTorch-VAE's names for an argument are translated (and recorded under ours), keys it ignores
    are dropped with a warning, and anything else the constructor does not take is an error
    (see :func:`vaezoo.arguments.resolve_arguments`).
    """
    from vaezoo.registry import get_model_class, model_parameters

    if not isinstance(model["name"], str):
        raise ConfigError(f"{source}: model.name = {brief(model['name'])} must be a model name (a string)")
    name = model["name"]
    cls = get_model_class(name)
    try:
        kwargs = resolve_arguments(cls, {k: v for k, v in model.items() if k != "name"}, f"{source}: model")
    except TypeError as err:
        raise ConfigError(str(err)) from None
    params = model_parameters(cls)
    for key, value in kwargs.items():
        if params[key] is not Any:
            check_type(value, params[key], f"{source}: model.{key}")
    return {"name": name, **kwargs}


def check_values(config: Config, source: str, overridden: collections.abc.Collection[str] = ()) -> None:
    """Range checks that types alone cannot express; a value from ``overridden`` keys is blamed on
    its command-line override, any other on the file."""
    t, d = config.train, config.data
    rules = [
        (t.lr > 0, "train.lr", t.lr, "a positive number"),
        (
            0 < t.scheduler_gamma <= 1,
            "train.scheduler_gamma",
            t.scheduler_gamma,
            "in (0, 1] (0 sets the lr to 0)",
        ),
        (t.lr_warmup_steps >= 0, "train.lr_warmup_steps", t.lr_warmup_steps, "a number of batches >= 0"),
        (t.kl_weight >= 0, "train.kl_weight", t.kl_weight, "a number >= 0"),
        (
            t.kl_schedule == "constant" or t.kl_schedule_steps > 0,
            "train.kl_schedule_steps",
            t.kl_schedule_steps,
            f"a positive number of batches for train.kl_schedule = {t.kl_schedule!r}",
        ),
        (0 < t.kl_cycle_ramp <= 1, "train.kl_cycle_ramp", t.kl_cycle_ramp, "in (0, 1]"),
        (t.batch_size > 0, "train.batch_size", t.batch_size, "a positive integer"),
        (
            t.max_epochs is None or t.max_epochs > 0,
            "train.max_epochs",
            t.max_epochs,
            "a positive integer or null",
        ),
        (
            t.max_time is None or t.max_time > 0,
            "train.max_time",
            t.max_time,
            "a positive number of seconds or null",
        ),
        (t.precision in PRECISIONS, "train.precision", t.precision, f"one of {list(PRECISIONS)}"),
        (d.image_size > 0, "data.image_size", d.image_size, "a positive integer"),
        (d.channels in (None, 1, 3), "data.channels", d.channels, "1, 3 or null"),
        (0 <= d.val_fraction < 1, "data.val_fraction", d.val_fraction, "in [0, 1)"),
        (d.subset is None or d.subset > 1, "data.subset", d.subset, "an integer > 1 or null"),
        (d.num_workers >= 0, "data.num_workers", d.num_workers, "an integer >= 0"),
        (t.ema_decay is None or 0 < t.ema_decay < 1, "train.ema_decay", t.ema_decay, "in (0, 1) or null"),
        (
            t.skip_grad_norm is None or t.skip_grad_norm > 0,
            "train.skip_grad_norm",
            t.skip_grad_norm,
            "a positive number or null",
        ),
        (
            config.logging.eval_every_n_steps >= 0,
            "logging.eval_every_n_steps",
            config.logging.eval_every_n_steps,
            "an integer >= 0 (0: no metrics during training)",
        ),
        (
            config.logging.eval_subset >= 2,
            "logging.eval_subset",
            config.logging.eval_subset,
            "an integer >= 2",
        ),
        (
            config.logging.eval_budget_seconds > 0,
            "logging.eval_budget_seconds",
            config.logging.eval_budget_seconds,
            "a positive number of seconds",
        ),
        (
            isinstance(config.logging.logger, str)
            or 0 < len(config.logging.logger) == len(set(config.logging.logger)),
            "logging.logger",
            config.logging.logger,
            "a logger name or a list of distinct ones, at least one",
        ),
        (
            config.logging.checkpoint_every_n_steps >= 0,
            "logging.checkpoint_every_n_steps",
            config.logging.checkpoint_every_n_steps,
            "an integer >= 0 (0: no mid-epoch checkpoints)",
        ),
    ]
    for ok, key, value, expected in rules:
        if not ok:
            where = f"override --{key}" if key in overridden else f"{source}: {key}"
            raise ConfigError(f"{where} = {value!r} must be {expected}")
    check_eval_groups(config.logging.eval_groups, source, "logging.eval_groups" in overridden)


def check_eval_groups(groups: list[str], source: str, overridden: bool = False) -> None:
    """``logging.eval_groups``: known names, each once."""
    from vaezoo.evaluation.training_metrics import EVAL_GROUPS  # imported here: it imports torch

    where = "override --logging.eval_groups" if overridden else f"{source}: logging.eval_groups"
    unknown = [name for name in groups if name not in EVAL_GROUPS]
    if unknown:
        raise ConfigError(
            f"{where} = {brief(groups)}: unknown group {unknown[0]!r}{suggest(unknown[0], EVAL_GROUPS)}; "
            f"valid groups: {', '.join(EVAL_GROUPS)}"
        )
    twice = sorted({name for name in groups if groups.count(name) > 1})
    if twice:
        raise ConfigError(f"{where} = {brief(groups)} names {twice[0]!r} twice; list each group once")


def check_type(value: Any, annotation: Any, where: str) -> None:
    if not matches_type(value, annotation):
        raise ConfigError(
            f"{where} = {brief(value)} has the wrong type: expected {describe_type(annotation)}"
        )


def matches_type(value: Any, annotation: Any) -> bool:
    if annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        return any(matches_type(value, a) for a in args)
    if origin is Literal:
        return value in args
    if origin in (list, tuple, collections.abc.Sequence):
        if not isinstance(value, (list, tuple)):
            return False
        inner = args[0] if args else Any
        return all(matches_type(v, inner) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def describe_type(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        return " or ".join(describe_type(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (list, tuple, collections.abc.Sequence):
        return f"a list of {describe_type(args[0]) if args else 'values'}"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


# --------------------------------------------------------------------------- the reference of every key

FIELD_LINE = re.compile(r"^\s+(\w+):[^#]*(?:#\s*(.*))?$")


def field_notes(cls: type) -> dict[str, str]:
    """What the source says of each field of a section class: its comment lines and trailing comment."""
    notes: dict[str, str] = {}
    pending: list[str] = []
    for line in inspect.getsource(cls).splitlines():
        text = line.strip()
        if text.startswith("#"):
            pending.append(text.lstrip("#").strip())
            continue
        found = FIELD_LINE.match(line)
        if found and found.group(1) in cls.__dataclass_fields__:  # type: ignore[attr-defined]
            notes[found.group(1)] = " ".join([*pending, found.group(2) or ""]).strip()
        pending = []
    return notes


def config_reference() -> str:
    """Every section and key with its default, type and meaning, as a YAML config of the defaults
    (``vaezoo train --help-config``)."""
    lines = [
        "# Every key of a vaezoo config, with its default. Each is also an override: --section.key VALUE.",
        "model:",
        "  name: VanillaVAE  # a model or alias (`vaezoo list`); the other keys of this section are the",
        "                    # model constructor's arguments (its docstring: help(vaezoo.models.NAME))",
    ]
    for section, cls in SECTIONS.items():
        lines.append(f"{section}:  # {first_sentence(cls.__doc__ or '')}")
        hints, notes = typing.get_type_hints(cls), field_notes(cls)
        for spec in dataclasses.fields(cls):
            factory: Any = spec.default_factory  # a default_factory unless the field has a default
            default = spec.default if spec.default is not dataclasses.MISSING else factory()
            value = (
                yaml.safe_dump(default, default_flow_style=True, width=1000)
                .strip()
                .removesuffix("...")
                .strip()
            )
            note = notes.get(spec.name, "")
            lines.append(
                f"  {spec.name}: {value}  # {describe_type(hints[spec.name])}" + (f"; {note}" if note else "")
            )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- files and overrides


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Parse a YAML file; a syntax error names the file, line and column."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except RecursionError:  # PyYAML's parser recurses once per level of nesting
        raise ConfigError(f"{path}: YAML nested too deeply to read") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(f"{path}: YAML syntax error at {where}: {problem}") from None
    return data or {}


def shipped_configs() -> dict[str, Path]:
    """The model configs inside the package, by name (``vae`` for ``configs/vae.yaml``)."""
    folder = Path(str(importlib.resources.files("vaezoo") / "configs"))
    return {path.stem: path for path in sorted(folder.glob("*.yaml"))}


def config_description(path: Path) -> str:
    """The first sentence of a config's opening comment, whole, as one line."""
    comment: list[str] = []
    for line in path.read_text().splitlines():
        if not line.strip().startswith("#"):
            break
        comment.append(line.strip().lstrip("#"))
    return first_sentence("\n".join(comment))


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A config file: ``name_or_path`` itself when it exists (a path always wins), else the shipped
    config of that name (``betatc_vae`` or ``betatc_vae.yaml``)."""
    path = Path(name_or_path)
    if path.exists() or len(path.parts) > 1:
        return path
    shipped = shipped_configs()
    name = path.stem if path.suffix in (".yaml", ".yml") else path.name
    if name in shipped:
        return shipped[name]
    raise ConfigError(
        f"config file not found: {path}, and no shipped config is named {name!r}{suggest(name, shipped)}; "
        f"shipped configs (`vaezoo configs` lists them): {', '.join(shipped)}"
    )


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None, without: tuple[str, ...] = ()
) -> Config:
    """Load a YAML config (a file, or a shipped config by name; or the defaults), apply dotted
    overrides, validate. ``without``: sections of the file left at their defaults (``vaezoo.fit``
    takes a shipped config's model and training, not its dataset's settings).

    A PyTorch-VAE config is translated first (the overrides then use our names, e.g.
    ``--train.max_steps``); ``config.translation`` records how, with the file's own text.
    """
    path = resolve_config_path(path) if path else None
    raw = load_yaml(path) if path else {}
    source = str(path) if path else "defaults"
    text = Path(path).read_text() if path else None
    raw, translation = _read_layout(raw, source, text)
    raw = {key: value for key, value in raw.items() if key not in without}
    pairs = parse_overrides(overrides or [])
    for key, value in pairs:
        set_dotted(raw, key, value)
        if translation is not None:
            translation.overrides[key] = value
    check_overrides(raw, pairs)
    return _build(raw, source, translation, overridden={key for key, _ in pairs})


def check_overrides(raw: dict[str, Any], overrides: list[tuple[str, Any]]) -> None:
    """Each ``--section.key`` override against its section's keys and types, so that an error names
    the override (``--train.max_step``), not the config file it was applied to."""
    from vaezoo.arguments import merged_class_table
    from vaezoo.registry import UnknownModelError, get_model_class, model_parameters

    for key, value in overrides:
        section, _, name = key.partition(".")
        where = f"override --{key}"
        if section != "model":
            hints = typing.get_type_hints(SECTIONS[section])
            if name not in hints:
                raise ConfigError(
                    f"{where}: '{section}' has no key '{name}'{suggest(name, hints)}; its keys: {sorted(hints)}"
                )
            check_type(value, hints[name], where)
            continue
        model_name = raw["model"].get("name", "VanillaVAE")  # a mapping: set_dotted made sure
        if not isinstance(model_name, str):
            continue  # _build names the bad model.name
        try:
            cls = get_model_class(model_name)
        except UnknownModelError as err:
            raise ConfigError(f"{where}: {err}" if name == "name" else str(err)) from None
        if name == "name":
            continue
        params = model_parameters(cls)
        accepted = {
            *params,
            *merged_class_table(cls, "argument_aliases"),
            *merged_class_table(cls, "ignored_arguments"),
        }
        if name not in accepted:
            raise ConfigError(
                f"{where}: {cls.__name__} takes no argument '{name}'{suggest(name, params)}; "
                f"its arguments: {sorted(params)}"
            )
        if name in params and params[name] is not Any:
            check_type(value, params[name], where)


def parse_overrides(args: list[str]) -> list[tuple[str, Any]]:
    """``['--model.latent_dim', '32', '--train.lr=1e-3']`` -> ``[('model.latent_dim', 32), ...]``.

    Values are read as YAML, so ``null``, ``true``, ``1e-3`` and ``[32, 64]`` have their natural types.
    """
    pairs = []
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or "." not in arg:
            raise ConfigError(f"unexpected argument {arg!r}: overrides look like --section.key VALUE")
        key, eq, text = arg[2:].partition("=")
        if not eq:
            if i + 1 >= len(args):
                raise ConfigError(f"override --{key} has no value")
            i += 1
            text = args[i]
        pairs.append((key, parse_value(text)))
        i += 1
    return pairs


def parse_value(text: str) -> Any:
    """Read one override value as YAML; ``1e-3`` (a string to YAML 1.1) becomes a float."""
    try:
        value = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError):
        return text
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    section, _, name = key.partition(".")
    if not name or "." in name:
        raise ConfigError(f"override --{key}: expected --section.key, e.g. --model.latent_dim")
    valid = ["model", *SECTIONS]
    if section not in valid:
        raise ConfigError(f"override --{key}: unknown section '{section}'{suggest(section, valid)}")
    raw.setdefault(section, {})
    if raw[section] is None:
        raw[section] = {}
    if not isinstance(raw[section], dict):
        raise ConfigError(
            f"override --{key}: section '{section}' must be a mapping, got {brief(raw[section])}"
        )
    raw[section][name] = value
