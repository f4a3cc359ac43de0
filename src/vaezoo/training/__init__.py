"""Training: the generic LightningModule, callbacks, checkpoints and the run driver."""

from vaezoo.io import CheckpointError, load_checkpoint
from vaezoo.training.callbacks import ImageGrids
from vaezoo.training.checkpoint import AtomicCheckpointIO
from vaezoo.training.module import VAEModule

__all__ = ["AtomicCheckpointIO", "CheckpointError", "ImageGrids", "VAEModule", "load_checkpoint"]
