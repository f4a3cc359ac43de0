"""Loading trained models back from checkpoints, safely (``weights_only=True``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from vaezoo.registry import create_model
from vaezoo.training.checkpoint import CheckpointError, load_checkpoint


def model_from_checkpoint(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model saved in a checkpoint (or a run folder's last one), in eval mode.

    Returns the model and the run config stored with it.
    """
    checkpoint = load_checkpoint(path)
    meta = checkpoint["vaezoo"]
    model = create_model(meta["model_name"], **meta["model_config"])
    prefix = "model."
    state = {k[len(prefix) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not fit {meta['model_name']}: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    return model.eval(), meta.get("config", {})
