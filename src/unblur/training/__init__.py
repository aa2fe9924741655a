"""The training loop, its checkpoints and its distributed set-up."""

from .trainer import TrainingDiverged, train

__all__ = ["TrainingDiverged", "train"]
