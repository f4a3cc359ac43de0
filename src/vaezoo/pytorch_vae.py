"""PyTorch-VAE's YAML configs, translated into ours (:mod:`vaezoo.config`'s four sections).

PyTorch-VAE (github.com/AntixK/PyTorch-VAE, HEAD a6896b9) configures a run with five sections,
``model_params`` / ``data_params`` / ``exp_params`` / ``trainer_params`` / ``logging_params``, in
two layouts: the current one (December 2021 on: ``data_params`` for ``VAEDataset``, Lightning 1.5's
``trainer_params``) and the 2020 one (``exp_params.dataset / data_path / img_size / batch_size``,
Lightning 0.6's ``trainer_params.max_nb_epochs``), which its ``vampvae.yaml`` still uses. Each key
means here what PyTorch-VAE's code makes of it, and the rules come from that code:

- ``dataset.py`` (2021) and the 2020 ``experiment.py``: the data is CelebA in torchvision's layout
  under ``data_path``, flipped at random, centre-cropped to 148 pixels and resized to
  ``patch_size`` (``img_size``); pixels in [0, 1] (the 2020 layout: ``2x - 1``, in [-1, 1]);
  ``VAEDataset``'s defaults fill missing ``data_params`` keys;
- the models' ``loss_function``: the squared error averages over pixels, so
  ``model.recon_reduction: mean``; model keys are each model's business (its
  ``argument_aliases`` and ``ignored_arguments``, see :mod:`vaezoo.arguments`);
- ``experiment.py``'s ``configure_optimizers``: Adam(``LR``, ``weight_decay``), ExponentialLR
  (``scheduler_gamma``; without it no scheduler, and 0 or null, which would stop training, fall
  back to a constant learning rate), and a second Adam (``LR_2``) on ``submodel``, which is
  FactorVAE's ``discriminator_lr`` here; ``kld_weight`` is the KL weight M_N (the 2020
  layout: ``batch_size`` / training images, counted from CelebA's list file when it is there,
  else :data:`CELEBA_TRAIN_IMAGES`);
- ``Trainer(**trainer_params)``, Lightning 1.5's (2020: Lightning 0.6's): ``gpus: [1]`` is the GPU
  with index 1, ``1`` one GPU, precision 16 is mixed precision; a machine without those GPUs falls
  back when training starts (see :mod:`vaezoo.training.run`);
- ``run.py``: the seed is ``exp_params.manual_seed`` (2020: ``logging_params.manual_seed``) and the
  log folder is named after ``model_params.name`` (2020: ``logging_params.name``).

Keys PyTorch-VAE never reads are dropped with one warning naming them all; any other key is an
error with the nearest valid one. A :class:`Translation` records all of it; a run folder keeps it
as ``translation.yaml``.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vaezoo.config import SECTIONS, ConfigError, resolve_model_section, suggest

# --------------------------------------------------------------------------- the layouts and their keys

PYTORCH_VAE = (
    "pytorch-vae"  # its layout since December 2021 (run.py + dataset.py): data_params holds the data
)
PYTORCH_VAE_2020 = (
    "pytorch-vae-2020"  # its 2020 layout: exp_params holds dataset, data_path, img_size, batch_size
)
LAYOUT_2020_KEYS = ("dataset", "data_path", "img_size", "batch_size")
CELEBA_TRAIN_IMAGES = 162_770  # CelebA's official training split (list_eval_partition.txt, label 0)
SPECIAL = "*"  # a key translated in code (_Translator), not by a rename

_TRAINER_KEYS: dict[str, str] = {  # Lightning 1.5 Trainer arguments that have a place in our train section
    "gpus": SPECIAL,
    "accelerator": SPECIAL,
    "devices": SPECIAL,
    "max_epochs": SPECIAL,
    "max_steps": SPECIAL,
    "gradient_clip_val": SPECIAL,
    "precision": SPECIAL,
    "num_nodes": "train.num_nodes",
    "limit_train_batches": "train.limit_train_batches",
    "limit_val_batches": "train.limit_val_batches",
    "check_val_every_n_epoch": "train.check_val_every_n_epoch",
    "deterministic": "train.deterministic",
    "log_every_n_steps": "logging.log_every_n_steps",
}
_OPTIMIZER_KEYS: dict[str, str] = {
    "LR": "train.lr",
    "weight_decay": "train.weight_decay",
    "scheduler_gamma": SPECIAL,
    "LR_2": SPECIAL,
    "submodel": SPECIAL,
    "scheduler_gamma_2": SPECIAL,
}
_HOLD_GRAPH = "experiment.py keeps it as hold_graph, which nothing reads"

# Every key PyTorch-VAE reads, per layout and section -> our "section.key" (or SPECIAL) ...
_PYTORCH_VAE_KEYS: dict[str, dict[str, dict[str, str]]] = {
    PYTORCH_VAE: {
        "data_params": {  # VAEDataset(**data_params)
            "data_path": "data.path",
            "train_batch_size": "train.batch_size",
            "val_batch_size": "train.val_batch_size",
            "patch_size": SPECIAL,
            "num_workers": "data.num_workers",
        },
        "exp_params": {**_OPTIMIZER_KEYS, "kld_weight": "train.kl_weight", "manual_seed": "train.seed"},
        "trainer_params": _TRAINER_KEYS,  # Trainer(**trainer_params)
        "logging_params": {"save_dir": "logging.save_dir", "name": SPECIAL},
    },
    PYTORCH_VAE_2020: {
        "exp_params": {
            "dataset": SPECIAL,
            "data_path": "data.path",
            "img_size": "data.image_size",
            "batch_size": SPECIAL,
            **_OPTIMIZER_KEYS,
        },
        "trainer_params": {  # Lightning 0.6's Trainer: the arguments its run.py did not set itself
            **{
                k: _TRAINER_KEYS[k]
                for k in ("gpus", "max_epochs", "max_steps", "gradient_clip_val", "precision")
            },
            "num_nodes": "train.num_nodes",
            "max_nb_epochs": SPECIAL,  # Lightning 0.6's name of max_epochs
        },
        "logging_params": {
            "save_dir": "logging.save_dir",
            "name": "logging.name",
            "manual_seed": "train.seed",
        },
    },
}
# ... and the keys its configs carry that its code never reads, with where that is to be seen.
_IGNORED_KEYS: dict[str, dict[str, dict[str, str]]] = {
    PYTORCH_VAE: {
        "exp_params": {
            "retain_first_backpass": _HOLD_GRAPH,
            **{
                key: "its 2020 layout's data key; with data_params, experiment.py never reads it"
                for key in LAYOUT_2020_KEYS
            },
        },
        "logging_params": {"manual_seed": "run.py seeds from exp_params.manual_seed"},
    },
    PYTORCH_VAE_2020: {
        "exp_params": {
            "retain_first_backpass": _HOLD_GRAPH,
            "kld_weight": "the 2020 experiment.py weighs the KL by batch_size / training images",
            "manual_seed": "the 2020 run.py seeds from logging_params.manual_seed",
        },
    },
}
_SECTIONS = ("model_params", "data_params", "exp_params", "trainer_params", "logging_params")
# Lightning 1.5 precision -> Lightning 2's name (16 was mixed precision with native AMP there)
_PRECISION_NAMES = {
    16: "16-mixed",
    32: "32-true",
    64: "64-true",
    "16": "16-mixed",
    "32": "32-true",
    "64": "64-true",
    "bf16": "bf16-mixed",
}


# --------------------------------------------------------------------------- the record of a translation


@dataclass
class Translation:
    """How a PyTorch-VAE config became ours; a run folder keeps it as ``translation.yaml``.

    ``translated``: each PyTorch-VAE key, its value and where it went (``to``: our keys and values);
    ``implied``: what PyTorch-VAE fixes in its code rather than in the file (CelebA, the 148-pixel
    crop, the pixel range ...); ``ignored``: keys PyTorch-VAE never reads; ``overrides``: command-line
    overrides laid over the translation; ``fallbacks``: settings that cannot be honoured as written
    and what is done instead (the training run adds device fallbacks here).
    """

    source: str
    layout: str
    original: dict[str, Any]
    text: str | None = None  # the file as the user wrote it (the run folder's source_config.yaml)
    translated: list[dict[str, Any]] = field(default_factory=list)
    implied: list[dict[str, Any]] = field(default_factory=list)
    ignored: list[dict[str, str]] = field(default_factory=list)
    overrides: dict[str, Any] = field(default_factory=dict)
    fallbacks: list[str] = field(default_factory=list)
    # our dotted key -> (the PyTorch-VAE key it came from, the value it was given)
    origins: dict[str, tuple[str, Any]] = field(default_factory=dict)

    def add_translated(self, origin: str, value: Any, to: dict[str, Any], why: str = "") -> None:
        entry = {"from": origin, "value": value, "to": dict(to)}
        self.translated.append({**entry, "why": why} if why else entry)
        for dotted, new in to.items():
            self.origins[dotted] = (origin, new)

    def add_implied(self, dotted: str, value: Any, why: str) -> None:
        self.implied.append({"key": dotted, "value": value, "why": why})

    def add_ignored(self, key: str, why: str) -> None:
        self.ignored.append({"key": key, "why": why})

    def origin(self, dotted: str, value: Any) -> str | None:
        """The PyTorch-VAE key behind ``dotted``, if it still holds the translated value."""
        if dotted in self.origins and self.origins[dotted][1] == value and dotted not in self.overrides:
            return self.origins[dotted][0]
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "layout": self.layout,
            "translated": copy.deepcopy(self.translated),
            "implied": copy.deepcopy(self.implied),
            "ignored": copy.deepcopy(self.ignored),
            "overrides": dict(self.overrides),
            "fallbacks": list(self.fallbacks),
        }

    def ignored_text(self) -> str:
        return "; ".join(f"{item['key']} ({item['why']})" for item in self.ignored)

    def summary(self) -> str:
        """Readable lines: what was translated, implied, ignored, overridden and fallen back from."""
        lines = [f"{self.source}: PyTorch-VAE config ({self.layout} layout), translated:"]
        for item in self.translated:
            to = ", ".join(f"{k}: {v!r}" for k, v in item["to"].items()) or "(nothing to set)"
            why = f"  ({item['why']})" if item.get("why") else ""
            lines.append(f"  {item['from']}: {item['value']!r} -> {to}{why}")
        if self.implied:
            lines.append("  implied by PyTorch-VAE's code:")
            lines += [f"    {i['key']}: {i['value']!r}  ({i['why']})" for i in self.implied]
        if self.ignored:
            lines.append("  ignored (PyTorch-VAE never reads them):")
            lines += [f"    {i['key']}  ({i['why']})" for i in self.ignored]
        if self.overrides:
            lines.append("  command-line overrides:")
            lines += [f"    {k}: {v!r}" for k, v in self.overrides.items()]
        if self.fallbacks:
            lines.append("  fallbacks:")
            lines += [f"    {message}" for message in self.fallbacks]
        return "\n".join(lines)

    def name_origin(self, message: str) -> str:
        """An error about one of our keys also names the PyTorch-VAE key it was translated from."""
        for dotted, (origin, _) in self.origins.items():
            if f"{dotted} = " in message and dotted not in self.overrides:
                return f"{message} (translated from {origin})"
        return message

    def warn(self, stacklevel: int = 3) -> None:
        """One warning per fallback and ONE warning naming every ignored key."""
        for message in self.fallbacks:
            warnings.warn(f"{self.source}: {message}", stacklevel=stacklevel)
        if self.ignored:
            warnings.warn(
                f"{self.source}: PyTorch-VAE never reads these keys, so they are ignored here too: "
                + self.ignored_text(),
                stacklevel=stacklevel,
            )

    def resolve_model(self, model: dict[str, Any], source: str) -> dict[str, Any]:
        """:func:`~vaezoo.config.resolve_model_section` for a translated config: the model's renames
        of PyTorch-VAE's keys go into the record, and the keys it ignores join the one warning about
        ignored keys."""
        from vaezoo.arguments import Alias, merged_class_table
        from vaezoo.registry import get_model_class, model_parameters

        prefix = f"{source}: model: "
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            resolved = resolve_model_section(model, source)
        for item in caught:  # the model's "ignores ..." warning is replaced by the record's
            text = str(item.message)
            if not (
                issubclass(item.category, UserWarning) and text.startswith(prefix) and " ignores " in text
            ):
                warnings.warn_explicit(item.message, item.category, item.filename, item.lineno)
        cls = get_model_class(str(resolved["name"]))
        params = model_parameters(cls)
        aliases = merged_class_table(cls, "argument_aliases")
        ignored = merged_class_table(cls, "ignored_arguments")
        for key, value in (self.original.get("model_params") or {}).items():
            if key in params:
                continue
            if key in aliases:
                alias = aliases[key]
                target = alias.target if isinstance(alias, Alias) else str(alias)
                self.add_translated(
                    f"model_params.{key}",
                    value,
                    {f"model.{target}": resolved.get(target)},
                    f"{cls.__name__}'s name for it",
                )
            elif key in ignored:
                self.add_ignored(f"model_params.{key}", f"{cls.__name__}: {ignored[key]}")
        return resolved


# --------------------------------------------------------------------------- the translator


def pytorch_vae_layout(raw: dict[str, Any]) -> str:
    """Which of PyTorch-VAE's two layouts ``raw`` uses (the 2020 one has no data_params)."""
    exp = raw.get("exp_params")
    if "data_params" not in raw and isinstance(exp, dict) and any(k in exp for k in LAYOUT_2020_KEYS):
        return PYTORCH_VAE_2020
    return PYTORCH_VAE


def _celeba_train_images(path: Any) -> int | None:
    """How many training images the CelebA folder at ``path`` lists (None: none readable there)."""
    from vaezoo.data.celeba import PARTITION_FILE, find_root, read_partition
    from vaezoo.data.errors import DataError

    if not isinstance(path, str):
        return None
    try:
        split = read_partition(find_root(Path(path).expanduser()) / PARTITION_FILE)
    except (DataError, OSError):
        return None
    return sum(1 for part in split.values() if part == 0) or None


class _Translator:
    """One PyTorch-VAE config -> our sections, keeping a :class:`Translation` record."""

    def __init__(self, raw: dict[str, Any], source: str) -> None:
        self.source = source
        self.layout = pytorch_vae_layout(raw)
        self.record = Translation(source, self.layout, copy.deepcopy(raw))
        self.out: dict[str, dict[str, Any]] = {"model": {}, "data": {}, "train": {}, "logging": {}}
        self.sections: dict[str, dict[str, Any]] = {}
        for section, values in raw.items():
            known = [s for s in _SECTIONS if s != "data_params" or self.layout == PYTORCH_VAE]
            if section not in known:
                raise ConfigError(
                    f"{source}: unknown PyTorch-VAE section '{section}'{suggest(str(section), known)}"
                )
            if values is not None and not isinstance(values, dict):
                raise ConfigError(f"{source}: {section} must be a mapping, got {values!r}")
            self.sections[section] = dict(values or {})
        for section, values in self.sections.items():
            if section == "model_params":
                continue
            table = _PYTORCH_VAE_KEYS[self.layout].get(section, {})
            ignored = _IGNORED_KEYS[self.layout].get(section, {})
            for key in values:
                if key not in table and key not in ignored:
                    raise ConfigError(
                        f"{source}: {section}.{key} is not a PyTorch-VAE key{suggest(str(key), [*table, *ignored])}"
                        f"; {section} takes {sorted([*table, *ignored])}"
                    )

    # -- recording
    def put(self, origin: str, value: Any, targets: dict[str, Any], why: str = "") -> None:
        """``origin`` (a PyTorch-VAE key holding ``value``) becomes ``targets`` (our dotted keys)."""
        for dotted, new in targets.items():
            section, key = dotted.split(".")
            self.out[section][key] = new
        self.record.add_translated(origin, value, targets, why)

    def imply(self, dotted: str, value: Any, why: str) -> None:
        section, key = dotted.split(".")
        self.out[section][key] = value
        self.record.add_implied(dotted, value, why)

    def ignore(self, origin: str, why: str) -> None:
        self.record.add_ignored(origin, why)

    def fall_back(self, message: str) -> None:
        self.record.fallbacks.append(message)

    # -- the sections
    def translate(self) -> dict[str, dict[str, Any]]:
        model = self.sections.get("model_params", {})
        self.out["model"].update(model)
        if "recon_reduction" not in model:
            self.imply(
                "model.recon_reduction", "mean", "PyTorch-VAE's losses average the squared error over pixels"
            )
        self.model_name = str(model.get("name", "VanillaVAE"))
        for section, values in self.sections.items():
            for key, why in _IGNORED_KEYS[self.layout].get(section, {}).items():
                if key in values:
                    self.ignore(f"{section}.{key}", why)
        if self.layout == PYTORCH_VAE:
            self.data_2021()
        else:
            self.data_2020()
        self.optimizer()
        self.trainer()
        self.logging()
        return self.out

    def plain(self, section: str, key: str, value: Any) -> None:
        target = _PYTORCH_VAE_KEYS[self.layout][section][key]
        self.put(f"{section}.{key}", value, {target: value})

    def data_2021(self) -> None:
        """dataset.py: MyCelebA(data_path), RandomHorizontalFlip, CenterCrop(148), Resize(patch_size), ToTensor."""
        self.imply("data.name", "celeba", "dataset.py reads CelebA from data_path")
        self.imply("data.crop", 148, "dataset.py: CenterCrop(148)")
        self.imply("data.normalize", "unit", "dataset.py: ToTensor, pixels in [0, 1]")
        self.imply("data.flip", True, "dataset.py: RandomHorizontalFlip")
        if "data_params" not in self.sections:
            return
        data = self.sections["data_params"]
        defaults = {"train_batch_size": 8, "val_batch_size": 8, "patch_size": 256, "num_workers": 0}
        for key, value in data.items():
            if key == "patch_size":
                self.put("data_params.patch_size", value, {"data.image_size": self.square(value)})
            else:
                self.plain("data_params", key, value)
        for key, default in defaults.items():
            if key not in data:
                target = (
                    "data.image_size"
                    if key == "patch_size"
                    else _PYTORCH_VAE_KEYS[PYTORCH_VAE]["data_params"][key]
                )
                self.imply(target, default, f"no data_params.{key}: VAEDataset's default")

    def square(self, value: Any) -> Any:
        """patch_size (an int, or [h, w]) -> our square image_size."""
        if isinstance(value, (list, tuple)) and len(value) == 2 and value[0] == value[1]:
            return value[0]
        if isinstance(value, (list, tuple)):
            raise ConfigError(
                f"{self.source}: data_params.patch_size = {value!r}: images here are square; give one size"
            )
        return value

    def data_2020(self) -> None:
        """The 2020 experiment.py: CelebA(data_path) with the same crop, pixels moved to [-1, 1]."""
        exp = self.sections.get("exp_params", {})
        dataset = exp.get("dataset", "celeba")
        if dataset != "celeba":
            raise ConfigError(
                f"{self.source}: exp_params.dataset = {dataset!r}: the 2020 PyTorch-VAE layout is translated for "
                "'celeba' only (its other choice, cifar10, has no reader here)"
            )
        if "dataset" in exp:
            self.put("exp_params.dataset", dataset, {"data.name": "celeba"})
        else:
            self.imply("data.name", "celeba", "the 2020 experiment.py's only dataset")
        self.imply("data.crop", 148, "the 2020 experiment.py: CenterCrop(148)")
        self.imply(
            "data.normalize", "symmetric", "the 2020 experiment.py: ToTensor then 2x - 1, pixels in [-1, 1]"
        )
        self.imply("data.flip", True, "the 2020 experiment.py: RandomHorizontalFlip")
        for key in ("data_path", "img_size"):
            if key in exp:
                self.plain("exp_params", key, exp[key])
        self.imply("train.val_batch_size", 144, "the 2020 experiment.py validates in batches of 144")
        if "batch_size" in exp:
            batch = exp["batch_size"]
            count = _celeba_train_images(exp.get("data_path"))
            counted = f"the {count} training images listed under data_path"
            if count is None:
                count, counted = CELEBA_TRAIN_IMAGES, f"CelebA's {CELEBA_TRAIN_IMAGES} training images"
            weight = (
                batch / count if isinstance(batch, (int, float)) and not isinstance(batch, bool) else None
            )
            targets = {"train.batch_size": batch}
            if weight is not None:
                targets["train.kl_weight"] = weight
            self.put(
                "exp_params.batch_size",
                batch,
                targets,
                f"the 2020 experiment.py's KL weight M_N = batch_size / {counted}",
            )

    def optimizer(self) -> None:
        """configure_optimizers: Adam(LR, weight_decay), ExponentialLR(scheduler_gamma), the second optimizer."""
        exp = self.sections.get("exp_params", {})
        for key in ("LR", "weight_decay", "kld_weight", "manual_seed"):
            if key in exp and key in _PYTORCH_VAE_KEYS[self.layout]["exp_params"]:
                self.plain("exp_params", key, exp[key])
        gamma = exp.get("scheduler_gamma")
        if "scheduler_gamma" not in exp:
            self.imply(
                "train.scheduler",
                "none",
                "no exp_params.scheduler_gamma: configure_optimizers builds no scheduler",
            )
        elif gamma is None or gamma == 0:
            consequence = (
                "would set the learning rate to 0 after one epoch"
                if gamma == 0
                else "makes configure_optimizers return nothing (Lightning then trains without an optimizer)"
            )
            self.fall_back(
                f"exp_params.scheduler_gamma = {gamma} {consequence}; translated to scheduler 'none' "
                "(a constant learning rate)"
            )
            self.put("exp_params.scheduler_gamma", gamma, {"train.scheduler": "none"})
        else:
            self.put(
                "exp_params.scheduler_gamma",
                gamma,
                {"train.scheduler": "exponential", "train.scheduler_gamma": gamma},
                "ExponentialLR, stepped once per epoch",
            )
        self.second_optimizer(exp)

    def second_optimizer(self, exp: dict[str, Any]) -> None:
        """LR_2 / submodel / scheduler_gamma_2: PyTorch-VAE's Adam on getattr(model, submodel)."""
        keys = [k for k in ("LR_2", "submodel", "scheduler_gamma_2") if k in exp]
        if not keys:
            return
        try:
            from vaezoo.registry import get_model_class, model_parameters

            params = model_parameters(get_model_class(self.model_name))
        except Exception:  # an unknown model: resolving the model section names it
            params = {}
        takes = "discriminator_lr" in params
        lr, submodel = exp.get("LR_2"), exp.get("submodel")
        if lr is None or submodel is None:
            why = "configure_optimizers builds a second optimizer only when LR_2 and submodel are both set"
            for key in keys:
                self.ignore(f"exp_params.{key}", why)
            return
        if submodel != "discriminator" or not takes:
            if submodel == "discriminator":
                why = f"{self.model_name} has no discriminator, so configure_optimizers' try/except skips it"
                for key in keys:
                    self.ignore(f"exp_params.{key}", why)
                return
            raise ConfigError(
                f"{self.source}: exp_params.submodel = {submodel!r}: PyTorch-VAE would train model.{submodel} with "
                f"a second Adam optimizer (lr LR_2); here only a model's own auxiliary network has one "
                f"(FactorVAE's 'discriminator')"
            )
        self.put(
            "exp_params.LR_2",
            lr,
            {"model.discriminator_lr": lr},
            f"the learning rate of {self.model_name}'s discriminator",
        )
        self.record.add_translated(
            "exp_params.submodel",
            submodel,
            {},
            f"{self.model_name}'s second optimizer trains its discriminator, as this names",
        )
        scheduler = self.out["train"].get("scheduler")
        gamma = self.out["train"].get("scheduler_gamma")
        if "scheduler_gamma_2" not in exp:
            if scheduler == "exponential":
                self.fall_back(
                    "exp_params has LR_2 but no scheduler_gamma_2: PyTorch-VAE keeps the discriminator's learning "
                    f"rate constant; here it decays with train.scheduler_gamma = {gamma} like the model's"
                )
            return
        gamma_2 = exp["scheduler_gamma_2"]
        if scheduler != "exponential":
            self.ignore(
                "exp_params.scheduler_gamma_2",
                "configure_optimizers reads it only next to a usable exp_params.scheduler_gamma",
            )
        elif gamma_2 != gamma:
            raise ConfigError(
                f"{self.source}: exp_params.scheduler_gamma_2 = {gamma_2} differs from scheduler_gamma = {gamma}: "
                "here both optimizers decay with train.scheduler_gamma; give them the same value"
            )
        else:
            self.record.add_translated(
                "exp_params.scheduler_gamma_2",
                gamma_2,
                {},
                "the discriminator's learning rate decays with train.scheduler_gamma, the same value",
            )

    def trainer(self) -> None:
        """Trainer(**trainer_params), Lightning 1.5 (0.6 for the 2020 layout)."""
        if "trainer_params" not in self.sections:
            return
        trainer = self.sections["trainer_params"]
        done = {"gpus", "accelerator", "devices", "max_epochs", "max_steps", "max_nb_epochs"}
        self.devices(trainer)
        self.epochs(trainer)
        for key, value in trainer.items():
            if key in done:
                continue
            if key == "gradient_clip_val":
                clip = value if value else None  # Lightning 1.5: 0 (its default) means no clipping
                self.put("trainer_params.gradient_clip_val", value, {"train.gradient_clip_val": clip})
            elif key == "precision":
                if value not in _PRECISION_NAMES:
                    raise ConfigError(
                        f"{self.source}: trainer_params.precision = {value!r} must be one of "
                        f"{sorted(map(str, _PRECISION_NAMES))}"
                    )
                self.put("trainer_params.precision", value, {"train.precision": _PRECISION_NAMES[value]})
            else:
                self.plain("trainer_params", key, value)

    def epochs(self, trainer: dict[str, Any]) -> None:
        epochs = {k: trainer[k] for k in ("max_epochs", "max_nb_epochs") if k in trainer}
        if len(set(map(repr, epochs.values()))) > 1:
            raise ConfigError(
                f"{self.source}: trainer_params.max_epochs = {trainer['max_epochs']} and max_nb_epochs = "
                f"{trainer['max_nb_epochs']} (its old name) disagree; give one"
            )
        for key, value in epochs.items():
            self.put(f"trainer_params.{key}", value, {"train.max_epochs": value})
        if "max_steps" in trainer:
            steps = trainer["max_steps"]
            self.put("trainer_params.max_steps", steps, {"train.max_steps": -1 if steps is None else steps})
        if not epochs:
            value = None if trainer.get("max_steps") not in (None, -1) else 1000
            self.imply("train.max_epochs", value, "no trainer_params.max_epochs: Lightning 1.5's default")

    def devices(self, trainer: dict[str, Any]) -> None:
        """gpus (Lightning 1.5: a count, -1, a list or a string of indices) -> accelerator and devices."""
        if "gpus" in trainer:
            gpus = trainer["gpus"]
            accelerator, devices = self.parse_gpus(gpus)
            if "devices" in trainer and trainer["devices"] not in (None, devices):
                raise ConfigError(
                    f"{self.source}: trainer_params.gpus = {gpus!r} and devices = {trainer['devices']!r} "
                    "disagree; give one"
                )
            if accelerator == "gpu" and trainer.get("accelerator") not in (None, "gpu", "auto"):
                raise ConfigError(
                    f"{self.source}: trainer_params.gpus = {gpus!r} asks for GPUs but accelerator = "
                    f"{trainer['accelerator']!r}; give one"
                )
            targets = {"train.accelerator": accelerator, "train.devices": devices}
            self.put("trainer_params.gpus", gpus, targets, describe_gpus(accelerator, devices))
        elif "devices" in trainer:
            given = trainer["devices"]
            self.put("trainer_params.devices", given, {"train.devices": "auto" if given is None else given})
        if "accelerator" in trainer and (trainer["accelerator"] is not None or "gpus" not in trainer):
            given = trainer["accelerator"]
            self.put("trainer_params.accelerator", given, {"train.accelerator": given or "auto"})

    def parse_gpus(self, gpus: Any) -> tuple[str, int | list[int]]:
        where = f"{self.source}: trainer_params.gpus = {gpus!r}"
        if isinstance(gpus, str):
            text = gpus.strip()
            try:
                if text in ("", "0"):
                    gpus = 0
                elif text == "-1":
                    gpus = -1
                elif "," in text:
                    gpus = [int(part) for part in text.split(",") if part.strip()]
                else:
                    gpus = int(text)
            except ValueError:
                raise ConfigError(f"{where}: expected a number of GPUs or a list of GPU indices") from None
        if gpus is None or gpus == 0 or gpus == []:
            return "cpu", 1
        if isinstance(gpus, bool) or not isinstance(gpus, (int, list, tuple)):
            raise ConfigError(f"{where}: expected a number of GPUs or a list of GPU indices")
        if isinstance(gpus, int):
            if gpus < -1:
                raise ConfigError(f"{where}: expected a number of GPUs, -1 (all) or a list of GPU indices")
            return "gpu", gpus
        if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in gpus):
            raise ConfigError(f"{where}: GPU indices are integers >= 0")
        return "gpu", list(gpus)

    def logging(self) -> None:
        log = self.sections.get("logging_params", {})
        if "save_dir" in log:
            self.plain("logging_params", "save_dir", log["save_dir"])
        if self.layout == PYTORCH_VAE_2020:
            for key in ("name", "manual_seed"):
                if key in log:
                    self.plain("logging_params", key, log[key])
            return
        # run.py: TensorBoardLogger(save_dir, name=model_params.name); logging_params.name is never read
        self.imply("logging.name", self.model_name, "run.py names the log folder after model_params.name")
        if "name" in log and log["name"] != self.model_name:
            self.ignore(
                "logging_params.name",
                f"run.py names the log folder after model_params.name, {self.model_name!r}",
            )


def describe_gpus(accelerator: str, devices: int | list[int]) -> str:
    """Lightning 1.5's reading of ``gpus``, in words."""
    if accelerator == "cpu":
        return "no GPU: the CPU"
    if isinstance(devices, list):
        return f"GPU {devices[0]}, counted from 0" if len(devices) == 1 else f"GPUs {devices}, counted from 0"
    return "every GPU" if devices == -1 else f"{devices} GPU{'s' if devices != 1 else ''}"


# --------------------------------------------------------------------------- entry points


def translate_layout(
    raw: dict[str, Any], source: str, text: str | None = None
) -> tuple[dict[str, Any], Translation]:
    """Our sections for ``raw``: PyTorch-VAE's ``*_params`` sections translated (with the record of it,
    ``text`` being the file as written), any of our sections laid over them."""
    ours = {key: value for key, value in raw.items() if key in ("model", *SECTIONS)}
    translator = _Translator({k: v for k, v in raw.items() if k not in ours}, source)
    out: dict[str, Any] = translator.translate()
    record = translator.record
    record.original, record.text = copy.deepcopy(raw), text
    for section, values in ours.items():
        if values is not None and not isinstance(values, dict):
            raise ConfigError(f"{source}: section '{section}' must be a mapping, got {values!r}")
        out.setdefault(section, {}).update(values or {})
    return out, record


def translate_pytorch_vae(raw: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """Translate a PyTorch-VAE config (``model_params`` ... ``logging_params``) into our sections,
    by the rules in this module's docstring; the fallbacks and ignored keys are warned about."""
    if any(str(key).endswith("_params") for key in raw):
        out, record = translate_layout(raw, source)
    else:
        translator = _Translator(raw, source)
        out, record = translator.translate(), translator.record
    record.warn()
    return out
