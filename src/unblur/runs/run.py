"""A trained run as a library object: open it, build its sampling denoiser, sample, restore.

Every front end (the CLI, eval, sweep, show, restore, the trainer's sample grids, the
benchmarks, and later a web page) goes through ``Run``; nothing here imports the CLI,
argparse or a progress bar. Progress flows through ``StepInfo`` callbacks.

    run = Run.load("runs/digits")
    for batch in run.sample(16, classes=["3"], sampler="heun", steps=18, seed=0):
        ...  # batch.x (b, C, H, W) in [-1, 1], batch.records one dict per sample
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from ..config import Config
from ..editing.tiles import any_size, tiled
from ..guidance import cfg as guide
from ..guidance import clip_x0
from ..kinds import build_net, kind_of
from ..sampling import generate, resolve_sampler
from ..types import Callback, Cond, DataInfo, Denoiser, Generator, Process
from ..utils import resolve_device, seeded_generators
from .build import build_denoiser, build_process, downsampling, sampling_grid
from .checkpoint import MODEL_FILE, load_model
from .edits import Editing


@dataclass(frozen=True)
class SamplingPlan:
    """The sampler, step count and grid of a request, resolved against the run's defaults."""

    sampler: str
    steps: int
    grid: str


@dataclass
class SampleBatch:
    """One batch of ``Run.sample``: samples ``start .. start + len(x) - 1`` of the request."""

    start: int
    x: Tensor  # (b, *shape) float32 on the CPU, in the data scale ([-1, 1] for images)
    records: list[dict]  # one per sample: seed, sampler, steps, grid and its context
    total: int  # samples in the whole request


@dataclass
class SampleStream:
    """A checked sampling request; iterating it makes its batches (``Run.sample``)."""

    run: Run
    plan: SamplingPlan
    ctx: object  # the request's contexts (``unblur.conditioning.SampleContext``)
    requests: list[dict]
    seed: int
    batch: int
    start: int = 0
    callback: Callback | None = None
    shared_seed: bool = False  # every sample uses ``seed`` (the same noise: an interpolation strip)

    @property
    def total(self) -> int:
        """Samples in the whole request."""
        return len(self.requests)

    def __iter__(self) -> Iterator[SampleBatch]:
        return self.starting_at(self.start)

    def starting_at(self, start: int) -> Iterator[SampleBatch]:
        """The batches from sample ``start`` on (batch boundaries start there)."""
        return self.run._batches(self, start)


class Run(Editing):
    """A trained run: config, data description, network, process and denoiser on a device.

    ``denoiser`` is the plain network denoiser; ``sampling_denoiser`` adds guidance and then
    clipping, decided in this one place. The editing methods (``edit``, ``outpaint``, ``invert``,
    ``interpolate``, ``interpolate_contexts``) come from ``runs.edits.Editing``.
    """

    def __init__(self, config: Config, data: DataInfo, net: nn.Module, process: Process, *,
                 device: torch.device | str = "cpu", path: str | Path | None = None, latent=None):
        self.config, self.data, self.net, self.process = config, data, net, process
        self.device = torch.device(device)
        self.path = Path(path) if path is not None else None
        self.denoiser: Denoiser = build_denoiser(config, net, process)
        self.latent = latent  # a latent run's ``pipelines.latent.LatentSpace``; None in pixel space
        self.ref = str(path) if path is not None else "this run"  # as the user named it (``builtin:NAME``)
        self._model_file: Path | None = None
        self._sha256: str | None = None

    @classmethod
    def load(cls, path: str | Path, *, device: str | torch.device = "auto") -> Run:
        """Open a run folder written by ``unblur train`` (or its ``model.safetensors``), or a run
        shipped in the package as ``builtin:NAME`` (``runs.pretrained``)."""
        from .pretrained import builtin_path, is_builtin

        ref = str(path)
        path = builtin_path(ref) if is_builtin(ref) else Path(path)
        if not path.exists():
            raise ValueError(f"run {str(path)!r} does not exist: give a folder written by `unblur train --out`")
        state, cfg, info = load_model(path / MODEL_FILE if path.is_dir() else path)
        kind = kind_of(cfg)
        if not kind.samples:  # an autoencoder, an encoder: the kind says what it is for
            raise ValueError(kind.refusal(path, cfg, info))
        dev = resolve_device(str(device)) if not isinstance(device, torch.device) else device
        net = build_net(cfg, info)
        net.load_state_dict(state)
        net = net.to(dev).eval().requires_grad_(False)
        folder = path if path.is_dir() else path.parent
        latent = None
        if info.latent:  # the autoencoder is checked against the hash the run recorded
            from ..pipelines.latent import open_latent_space

            latent = open_latent_space(info.latent, folder, device=dev)
        run = cls(cfg, info, net, build_process(cfg, info), device=dev, path=folder, latent=latent)
        run.ref = ref
        run._model_file = path / MODEL_FILE if path.is_dir() else path
        return run

    @property
    def name(self) -> str:
        if self.ref.startswith("builtin:"):
            return self.ref
        return str(self.path) if self.path is not None else "this run"

    @property
    def weights_sha256(self) -> str:
        """The SHA-256 of the run's model file (hex), as AUTOMATIC1111's "Model hash" takes its
        first ten digits; of the weights in memory for a run not opened from a file."""
        if self._sha256 is None:
            import hashlib

            h = hashlib.sha256()
            if self._model_file is not None and self._model_file.is_file():
                with self._model_file.open("rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
            else:
                for k, v in sorted(self.net.state_dict().items()):
                    h.update(k.encode())
                    h.update(v.detach().float().cpu().numpy().tobytes())
            self._sha256 = h.hexdigest()
        return self._sha256

    @property
    def is_image(self) -> bool:
        return self.data.kind == "image"

    @property
    def image_shape(self) -> tuple[int, ...]:
        """The shape of what the run draws: the decoded images of a latent run, else ``data.shape``."""
        return self.data.image_shape

    def decode(self, x: Tensor) -> Tensor:
        """What the network made (latents of a latent run) as the data a user sees (images)."""
        return x if self.latent is None else self.latent.decode(x.to(self.device))

    def encode(self, images: Tensor) -> Tensor:
        """Images as the network sees them (a latent run's latents; the images themselves otherwise)."""
        return images if self.latent is None else self.latent.encode(images.to(self.device))

    # -- sampling ---------------------------------------------------------------------------
    def plan(self, sampler: str | None = None, steps: int | None = None, grid: str | None = None) -> SamplingPlan:
        """The sampler, steps and grid of a request: the given values (checked) or the run's.

        A run whose configured sampler does not apply to its process (a cold run saved with the
        Gaussian default) uses its process's default sampler. ``sampler`` may be a web UI's
        name ("Euler a", "DPM++ 2M Karras": ``sampling.resolve_sampler``); the plan holds the
        canonical one, and a "Karras" name's grid, unless ``grid`` asks for another (refused).
        """
        if steps is not None and (isinstance(steps, bool) or int(steps) != steps or steps < 1):
            raise ValueError(f"steps must be a positive integer, got {steps!r}")
        s = self.config.sample
        if sampler is None:
            sampler = s.sampler if s.sampler in self.process.samplers else self.process.default_sampler
        named, alias_grid = resolve_sampler(sampler)  # an unknown name lists the known ones
        if alias_grid and grid and grid != alias_grid:
            raise ValueError(f"the sampler {sampler!r} samples on the {alias_grid} grid, but the grid asked for is "
                             f"{grid!r}: drop --grid, or name the sampler {named!r} to use the {grid} grid")
        sampler, grid = named, grid or alias_grid
        if sampler not in self.process.samplers:
            raise ValueError(f"the {sampler} sampler does not apply to {self.name}'s {self.process.kind} process; "
                             f"use one of: {', '.join(self.process.samplers)}")
        return SamplingPlan(sampler, int(steps if steps is not None else s.steps), sampling_grid(self.config, grid))

    def sampling_denoiser(self, *, guidance: float = 1.0, uncond: Cond = None) -> Denoiser:
        """The denoiser samplers walk: guided towards the context (one batched forward of the
        conditional and unconditional halves) when ``guidance != 1``, then clipped to the data
        range for images when ``sample.clip`` is set."""
        den = self.denoiser
        if uncond is not None and guidance != 1.0:
            den = guide(den, guidance, uncond)
        if self.is_image and self.config.sample.clip and self.latent is None:  # latents are not in [-1, 1]
            den = clip_x0(den)
        return den

    def requests(self, *, classes: Sequence[str | int] = (), prompts: Sequence[str] = (),
                 negative_prompt: str | None = None, image: str | Path | None = None,
                 guidance: float | None = None, embeddings: Tensor | None = None,
                 embedding_labels: Sequence[str] | None = None):
        """The contexts a sampling request asks for (``unblur.conditioning.SampleContext``)."""
        from ..conditioning import SampleContext

        return SampleContext(self.config, self.data, self.net, self.device, classes=list(classes),
                             prompts=list(prompts), negative=negative_prompt,
                             image=None if image is None else str(image), guidance=guidance, run=self.name,
                             embeddings=embeddings, embedding_labels=embedding_labels)

    def generate(self, n: int, *, plan: SamplingPlan, cond: Cond = None, uncond: Cond = None,
                 guidance: float = 1.0, generator: Generator = None, callback: Callback | None = None) -> Tensor:
        """One batch of ``n`` samples for the contexts ``cond`` (float32 on the run's device)."""
        den = self.sampling_denoiser(guidance=guidance, uncond=uncond)
        with torch.no_grad():
            return generate(den, (n, *self.data.shape), process=self.process, sampler=plan.sampler,
                            steps=plan.steps, grid=plan.grid, cond=cond, generator=generator, device=self.device,
                            callback=callback)

    def sample(self, n: int = 16, *, classes: Sequence[str | int] = (), prompts: Sequence[str] = (),
               negative_prompt: str | None = None, image: str | Path | None = None, guidance: float | None = None,
               sampler: str | None = None, steps: int | None = None, grid: str | None = None, seed: int = 0,
               batch: int = 64, start: int = 0, callback: Callback | None = None, embeddings: Tensor | None = None,
               embedding_labels: Sequence[str] | None = None, shared_seed: bool = False) -> SampleStream:
        """Samples for every combination of the given classes, prompts and embeddings (``n`` each;
        ``embeddings`` (K, E): a decoder's or prior's conditioning vectors, ``embedding_labels``
        what each is, for the records; ``runs.unclip`` makes them), batch by
        batch: sample i uses seed ``seed + i`` whatever the batch, and each batch is yielded
        (on the CPU) before the next is made, so a caller never holds more than one.

        The request is checked here, before anything is made; the returned ``SampleStream``
        makes the batches as it is iterated. ``start``: the first sample to make (a request
        continued after an interruption gives the same samples from there on; see
        ``SampleStream.starting_at``). A batch with a non-finite value is an error (damaged
        weights, or a diverged run), raised before the batch is yielded.
        """
        for name, v in (("n", n), ("batch", batch)):
            if isinstance(v, bool) or int(v) != v or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        plan = self.plan(sampler, steps, grid)
        ctx = self.requests(classes=classes, prompts=prompts, negative_prompt=negative_prompt, image=image,
                            guidance=guidance, embeddings=embeddings, embedding_labels=embedding_labels)
        return SampleStream(self, plan, ctx, ctx.requests(n), seed=seed, batch=batch, start=start, callback=callback,
                            shared_seed=shared_seed)

    def _batches(self, stream: SampleStream, start: int) -> Iterator[SampleBatch]:
        plan, ctx, reqs, seed = stream.plan, stream.ctx, stream.requests, stream.seed
        if not 0 <= start <= len(reqs):
            raise ValueError(f"start must lie in 0..{len(reqs)}, got {start}")
        for first in range(start, len(reqs), stream.batch):
            chunk = reqs[first : first + stream.batch]
            seeds = [seed] * len(chunk) if stream.shared_seed else list(range(seed + first, seed + first + len(chunk)))
            gens = seeded_generators(seeds, device=self.device)
            cond, uncond = ctx.cond(chunk)
            x = self.generate(len(chunk), plan=plan, cond=cond, uncond=uncond, guidance=ctx.guidance,
                              generator=gens, callback=stream.callback)
            x = self.decode(x)
            bad = int((~torch.isfinite(x.flatten(1))).any(1).sum())
            if bad:
                raise ValueError(f"{bad} of {len(x)} samples ({first}..{first + len(x) - 1}) hold NaN or infinite "
                                 f"values: {self.name}'s weights may be damaged or its training diverged")
            records = [{"index": first + i, "seed": seeds[i], "sampler": plan.sampler, "steps": plan.steps,
                        "grid": plan.grid, **ctx.record(r)} for i, r in enumerate(chunk)]
            yield SampleBatch(first, x.float().cpu(), records, len(reqs))

    def check_restorable(self, shape: Sequence[int], *, what: str = "the image") -> None:
        """Refuse to restore an image of shape (C, H, W) whose channels differ from the run's, in
        words that say which restorer would fit. Any H and W are fine (see ``restore``)."""
        if not self.process.restores:
            raise ValueError(f"{self.name} was trained with the Gaussian process {self.process.kind!r}; restoring "
                             "needs a cold-diffusion run (unblur train --process blur, ...)")
        C, c = self.image_shape[0], int(shape[0])
        if c != C:
            (want, count), (got, _) = _channels(C), _channels(c)
            raise ValueError(f"run {self.name} restores {want} images ({count}) but {what} is {got}: train a "
                             f"restorer on {got} images (--set data.channels={c}) or convert the image to {want}")

    def restore(self, x_t: Tensor, level: float | Tensor | None = None, *, sampler: str | None = None,
                steps: int | None = None, seed: int = 0, callback: Callback | None = None,
                tile: tuple[int, int] | None = None) -> tuple[Tensor, Tensor]:
        """(restored images, the level of each) for degraded images x_t (B, C, H, W) of a cold run.

        ``level``: one for all, one per image, or None to estimate each image's level;
        ``sampler``: cold | cold-naive | one-shot, by default the degradation's own.

        The images keep their own size: the degradation acts on any H and W, and the network,
        convolutional, sees them whole, reflect-padded to a multiple of its downsampling factor
        and cropped back; images more than ``TILE_FACTOR`` times the training size in a
        direction are restored in overlapping tiles of that size (``tile``: (h, w) instead),
        blended with a smooth window, so memory stays bounded and there are no seams.
        """
        from ..sampling.cold import estimate_level, restore

        self.check_restorable(x_t.shape[1:], what="the batch")
        if steps is not None and (int(steps) != steps or steps < 1):
            raise ValueError(f"steps must be a positive integer, got {steps!r}")
        sampler = sampler or self.process.restore_sampler
        x_t = self.encode(x_t.to(self.device))  # a latent run restores in its latent space
        den = self._restorer(tuple(x_t.shape[-2:]), tile)
        with torch.no_grad():
            if level is None:
                level = estimate_level(den, x_t, process=self.process)
            else:
                level = torch.as_tensor(level, dtype=torch.float64).reshape(-1).expand(len(x_t))
            x = restore(den, x_t, level, process=self.process, sampler=sampler,
                        steps=steps if steps is not None else self.config.sample.steps,
                        generator=torch.Generator(self.device).manual_seed(seed), callback=callback)
        return self.decode(x), level

    def _restorer(self, size: tuple[int, int], tile: tuple[int, int] | None) -> Denoiser:
        """The sampling denoiser for images of ``size`` (H, W): padded to the network's multiple,
        and tiled where the image exceeds ``TILE_FACTOR`` times the training size (or ``tile``)."""
        multiple = downsampling(self.net)
        den = any_size(self.sampling_denoiser(), multiple)
        if tile is None:
            tile = tuple(TILE_FACTOR * s for s in self.data.shape[-2:])
        tile = tuple(-(-int(t) // multiple) * multiple for t in tile)  # whole multiples of the downsampling
        if size[0] <= tile[0] and size[1] <= tile[1]:
            return den
        return tiled(den, tile)


TILE_FACTOR = 4  # restore: images up to this many times the training size (per side) are run whole


def _channels(c: int) -> tuple[str, str]:
    """Words for images of c channels: ("grey", "1 channel")."""
    return {1: ("grey", "1 channel"), 3: ("colour", "3 channels")}.get(c, (f"{c}-channel", f"{c} channels"))
