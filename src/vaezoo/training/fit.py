"""``vaezoo.fit``: train a model from Python on images at hand, with everything ``vaezoo train`` writes.

>>> result = vaezoo.fit("VanillaVAE", images, settings={"train.max_epochs": 5})  # doctest: +SKIP
>>> result.model.sample(16, "cpu")  # doctest: +SKIP

The run is the CLI's own: a run folder with config.yaml, checkpoints, image grids every epoch,
logs and summary.json, the same resume, signals and errors. Only the data differs: the images are
handed over (:mod:`vaezoo.data.in_memory`), so the saved config says ``data.name: in_memory`` and a
later ``vaezoo evaluate`` of the run needs the data named again (``--data DIR`` or ``--data.*``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from vaezoo.config import ConfigError, load_config, shipped_configs
from vaezoo.registry import get_model_class

if TYPE_CHECKING:
    from vaezoo.models.base import BaseVAE


@dataclass
class FitResult:
    """What :func:`fit` made: the run folder, the trained model and the final validation figures."""

    run_dir: Path
    model: BaseVAE  # in eval mode; the moving average of the weights with train.ema_decay
    summary: dict[str, Any]


def fit(
    model: str | BaseVAE,
    data: Any,
    *,
    labels: Any = None,
    config: str | Path | None = None,
    settings: dict[str, Any] | None = None,
    run_dir: str | Path | None = None,
    overwrite: bool = False,
    resume: str | Path | None = None,
) -> FitResult:
    """Train ``model`` on ``data`` and return the run.

    - ``model``: a registered name or alias (``"VanillaVAE"``, ``"BetaTCVAE"``, ``"VAE"`` ...), or a
      model object, which is trained in place (its constructor arguments go into the run's config).
    - ``data``: a tensor or numpy array of images ((N, H, W), (N, H, W, C) or (N, C, H, W); uint8,
      or floats in [0, 1] or [0, 255]), a torch Dataset or a DataLoader whose items or batches are
      images alone or (image, label). ``labels``: class indices or vectors for a tensor / array.
    - ``config``: a YAML file or a shipped config's name; by default the model and train sections
      of the model's shipped config when there is one (e.g. ``vae`` for VanillaVAE), else the
      defaults. The data settings are the defaults' unless ``config`` or ``settings`` give them.
    - ``settings``: dotted keys as on the command line, ``{"train.max_epochs": 5,
      "model.latent_dim": 16, "data.image_size": 32}``. Images are resized to ``data.image_size``.
    - ``run_dir`` / ``overwrite`` / ``resume``: as ``vaezoo train``'s ``--run-dir``, ``--overwrite``
      and ``--resume`` (give the same data again to resume).
    """
    from vaezoo.data.in_memory import NAME, collect, in_memory_splits
    from vaezoo.io import load_run
    from vaezoo.training.run import load_resume_config, train

    given = dict(settings or {})
    instance = None if isinstance(model, str) else model
    if instance is not None:
        given.update({f"model.{key}": value for key, value in instance.config.items()})
        given["model.name"] = type(instance).__name__
    else:
        given.setdefault("model.name", model)
    overrides = as_overrides({**given, "data.name": NAME, "data.path": None})
    if resume is not None:
        run_config = load_resume_config(resume, overrides)
    else:
        shipped = None if config else shipped_config_of(given["model.name"], instance)
        # a shipped config's data section is its dataset's (subset, crop ...), not these images'
        run_config = load_config(config or shipped, overrides, without=("data",) if shipped else ())
    images, label_array = collect(data, labels)
    splits = in_memory_splits(run_config.data, images, label_array)
    run = train(
        run_config, resume=resume, run_dir=run_dir, overwrite=overwrite, splits=splits, model=instance
    )
    summary_file = run / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    return FitResult(run, load_run(run).model, summary)


def shipped_config_of(name: str, instance: BaseVAE | None) -> str | None:
    """The shipped config that trains the model ``name`` (the first by file name), if any; none for
    a model object, whose arguments are its own."""
    if instance is not None:
        return None
    try:
        cls = get_model_class(name)
    except KeyError as err:
        raise ConfigError(str(err)) from None
    for config_name, path in shipped_configs().items():
        raw = yaml.safe_load(path.read_text()) or {}
        shipped = (raw.get("model") or {}).get("name", "VanillaVAE")
        try:
            if get_model_class(shipped) is cls:
                return config_name
        except KeyError:
            continue
    return None


def as_overrides(settings: dict[str, Any]) -> list[str]:
    """``{"train.lr": 1e-3}`` -> ``["--train.lr", "0.001"]``, the command line's form (values as YAML)."""
    overrides = []
    for key, value in settings.items():
        if not isinstance(key, str) or "." not in key:
            raise ConfigError(f"settings key {key!r}: expected 'section.key', e.g. 'train.max_epochs'")
        overrides += [f"--{key}", yaml.safe_dump(value, default_flow_style=True).removesuffix("\n...\n")]
    return overrides
