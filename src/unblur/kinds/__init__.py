"""Model kinds as objects: what a run folder is (a denoiser, an autoencoder, a contrastive
encoder, a prior), each one module with its defaults, checks, training data, network, training
task and how its folder opens and describes itself, in the ``MODEL_KINDS`` registry.

Add a kind: one module here with a ``ModelKind`` subclass (``@register``) and its
``TrainingTask``, its config section, its network in ``nets/``; the contract tests in
``tests/test_kinds.py`` run over the registry.
"""

# isort: off
from . import diffusion, prior, autoencoder, clip  # noqa: F401 - registers the kinds, in this order
# isort: on
from .base import (
    MODEL_KINDS,
    ModelKind,
    PrepareContext,
    Prepared,
    TaskContext,
    TrainingTask,
    config_names,
    given_keys,
    kind_of,
    preview,
    register,
    resolve,
)
from .build import build_denoiser, build_net, build_process, data_info_of

__all__ = [
    "MODEL_KINDS",
    "ModelKind",
    "PrepareContext",
    "Prepared",
    "TaskContext",
    "TrainingTask",
    "build_denoiser",
    "build_net",
    "build_process",
    "config_names",
    "data_info_of",
    "given_keys",
    "kind_of",
    "preview",
    "register",
    "resolve",
]
