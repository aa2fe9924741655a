"""Trained runs: the ``Run`` object every front end opens, its checkpoint files, and how a
config and a data description become a process, a network and a denoiser."""

from .build import build_denoiser, build_net, build_process, data_info_of, sampling_grid
from .checkpoint import CONFIG_FILE, MODEL_FILE, STATE_FILE, load_model, load_train_state, save_model
from .edits import EditResult, Inversion
from .run import Run, SampleBatch, SamplingPlan

__all__ = [
    "CONFIG_FILE",
    "MODEL_FILE",
    "STATE_FILE",
    "EditResult",
    "Inversion",
    "Run",
    "SampleBatch",
    "SamplingPlan",
    "build_denoiser",
    "build_net",
    "build_process",
    "data_info_of",
    "load_model",
    "load_train_state",
    "sampling_grid",
    "save_model",
]
