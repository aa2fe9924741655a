"""What a front end offers and checks before it opens a run: the names (and help) of the
samplers, grids and processes in their registries, the data sources a config names, and the
prompt check of text models. The CLI and the server reach these through ``runs``, so their
lists cannot drift from the registries."""

from __future__ import annotations

from ..data import load_data, load_training_data
from ..processes import DEGRADATIONS, GRIDS, gaussian_processes
from ..processes.cold import COLD_PROCESSES, COLD_SAMPLERS
from ..sampling import nfe, resolve_sampler, sampler_help
from ..text.encoders import check_prompts

__all__ = ["COLD_PROCESSES", "COLD_SAMPLERS", "DEGRADATIONS", "GRIDS", "check_prompts", "gaussian_processes",
           "load_data", "load_training_data", "nfe", "resolve_sampler", "sampler_help"]
