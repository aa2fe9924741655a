"""One training loop for every model kind, process and network, on one CPU or under torchrun.

The loop only: budget, progress and ETA, EMA, checkpoints and the atomic swap, signals,
logging, DDP, gradient accumulation and clipping. What differs between model kinds (the loss
of a batch, what follows the optimizer step, the picture, the held-out metrics, the export)
is the kind's ``TrainingTask`` (``unblur.kinds``).

Randomness is derived, not carried: the data order of epoch e is a permutation seeded by
(seed, e), and the noise of step s by (seed, s, rank). Resume therefore needs only the step,
the weights and the optimizer, and 20 + resume + 20 steps equal 40 straight steps.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor

from ..config import Config
from ..data import Data, data_block, load_training_data
from ..kinds import PrepareContext, TaskContext, build_net, kind_of, resolve
from ..runs import Run
from ..runs.checkpoint import (
    CONFIG_FILE,
    MODEL_FILE,
    STATE_FILE,
    clean_temporaries,
    load_train_state,
    save_model,
    save_train_state,
)
from ..runs.folder import absolute_paths, check_same_data, prepare_run_dir, resume_config, swap_in, truncate_metrics
from ..runs.lock import LOCK_FILE, acquire
from ..utils import atomic_write_bytes
from .loop import SPEED_SECONDS, SPEED_STEPS, _init_distributed, _mix, _Stop, batch_indices, ema_beta, lr_at, speed_line


class TrainingDiverged(ValueError):
    """The loss became NaN or infinite; the last good checkpoint is left untouched. A ValueError:
    the cause is a value (the learning rate, the data), and the CLI reports it in one line."""


class Trainer:
    """Holds the pieces of one run; ``run()`` trains until the step or time budget is spent."""

    def __init__(self, cfg: Config, out: str | Path, *, resume: bool = False, overwrite: bool = False,
                 data: Data | None = None, progress: bool = True, explicit: set[str] | None = None,
                 report: Callable[[str], None] | None = None):
        self.final_out = Path(out)
        self.dist, self.device = _init_distributed(cfg.train.device)
        self.lock = None
        self._tb = None
        self._report = report if self.dist.main else None
        self.notes: list[str] = []  # what the run says about its set-up (data, model, overrides applied on resume)
        existed = self.final_out.exists()
        if self.dist.main:
            self.lock = acquire(self.final_out, "unblur train")  # one writer per run folder
        try:
            self._setup(cfg, resume=resume, overwrite=overwrite, data=data, progress=progress, explicit=explicit)
        except BaseException:
            self.close()
            self._discard(existed)
            raise

    def _setup(self, cfg: Config, *, resume: bool, overwrite: bool, data: Data | None, progress: bool,
               explicit: set[str] | None) -> None:
        if self.dist.main:
            self.out = prepare_run_dir(self.final_out, resume=resume, overwrite=overwrite)
            self.out.mkdir(parents=True, exist_ok=True)
            clean_temporaries(self.out)
        else:
            self.out = self.final_out
        self._barrier()
        state = None
        if resume:
            state = load_train_state(self.out / STATE_FILE)
            cfg, notes = resume_config(Config.from_dict(state["config"]), absolute_paths(cfg), explicit)
            for note in notes:
                self.say(note)
        else:  # the kind's defaults where the user gave nothing, and its checks
            cfg = resolve(absolute_paths(cfg), explicit)
        self.kind, t = kind_of(cfg), cfg.train
        if t.threads:
            torch.set_num_threads(t.threads)
        if t.batch_size % (self.dist.world * t.grad_accum):
            raise ValueError(f"train.batch_size={t.batch_size} must be divisible by processes x grad_accum "
                             f"= {self.dist.world} x {t.grad_accum}")
        self.progress = progress and self.dist.main
        loaded = data if data is not None else load_training_data(cfg)
        for line in data_block(loaded):
            self.say(line)
        recorded = (state.get("data_info") or {}) if state is not None else None
        prepared = self.kind.prepare(cfg, loaded, PrepareContext(
            device=self.device, out=self.out, recorded=recorded, explicit=explicit, say=self.say,
            progress=self.progress, main=self.dist.main))
        cfg, self.data, self.data_info = prepared.cfg, prepared.data, prepared.info
        if state is not None and data is None:  # data loaded from the run's config: it must be the run's
            check_same_data(recorded or {}, self.data_info, cfg.data.source)
        how = "the run's own"
        if state is None:  # written into the config, so that the run rebuilds the same network
            cfg, preset = self.kind.size(cfg, self.data_info, self.device)
            how = preset or f"{self.kind.sizes_section}.* as given"
        self.cfg = cfg
        self._build_model(prepared)
        self.say(self.task.describe(how))
        self.step, self.nimg = 0, 0
        if state is not None:
            self.net.load_state_dict(state["net"])
            self.ema.load_state_dict(state["ema"])
            self.opt.load_state_dict(state["opt"])
            self.step, self.nimg = int(state["step"]), int(state["nimg"])
            torch.set_rng_state(state["rng_cpu"])
            self.task.load_state(state)
        if self.dist.main:  # metrics after the last checkpoint are logged again; a new run starts afresh
            truncate_metrics(self.out / "metrics.jsonl", self.step)
        self._evaluated = self.step if state is not None else -1  # the step whose held-out metrics are logged

    def _build_model(self, prepared) -> None:
        """The network, its EMA copy, the kind's task, its loss module (compiled, distributed), the optimizer."""
        cfg, t = self.cfg, self.cfg.train
        torch.manual_seed(_mix(t.seed, 0xC0FFEE))
        net = build_net(cfg, self.data_info).to(self.device)
        wants_cl = self.device.type == "cuda" if t.channels_last is None else t.channels_last
        self.channels_last = wants_cl and self.data.kind == "image"
        if self.channels_last:
            net = net.to(memory_format=torch.channels_last)
        self.net = net
        self.ema = copy.deepcopy(net).eval().requires_grad_(False)
        self.task = self.kind.task(TaskContext(
            cfg=cfg, prepared=prepared, net=net, device=self.device, out=self.out, autocast=self._autocast,
            world=self.dist.world, say=self.say, progress=self.progress, make_run=self._make_run, layout=self._layout))
        loss_module = self.task.loss_module
        if t.compile:
            loss_module = torch.compile(loss_module)
        if self.dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            loss_module = DDP(loss_module, device_ids=ids)
        self.loss_module = loss_module
        self.opt = torch.optim.AdamW(net.parameters(), lr=t.lr, betas=t.betas, weight_decay=t.weight_decay,
                                     foreach=True)
        self._net_params = [p.detach() for p in net.parameters()]
        self._ema_params = list(self.ema.parameters())

    def say(self, line: str) -> None:
        """Keep one line about the run in ``notes`` and hand it to ``report`` (the CLI prints it)."""
        self.notes.append(line)
        if self._report is not None:
            self._report(line)

    def _discard(self, existed: bool) -> None:
        """After a failed set-up: remove what this run created and holds nothing (an empty
        ``--out``, or the fresh folder of an ``--overwrite``), so an error leaves no husk."""
        if not self.dist.main:
            return
        fresh = getattr(self, "out", None)
        if fresh is not None and fresh != self.final_out and not (fresh / STATE_FILE).exists():
            shutil.rmtree(fresh, ignore_errors=True)
        if not existed and self.final_out.is_dir():
            left = [p for p in self.final_out.iterdir() if p.name != LOCK_FILE]
            if not left:
                shutil.rmtree(self.final_out, ignore_errors=True)

    def close(self) -> None:
        """Release the run folder's lock and close the TensorBoard writer."""
        if self._tb:
            self._tb.close()
        self._tb = None
        if self.lock is not None:
            self.lock.release()

    # -- helpers ---------------------------------------------------------------------------
    def _kept(self) -> str:
        if (self.out / STATE_FILE).exists():
            return f"the last good checkpoint in {str(self.final_out)!r} was kept"
        return f"no checkpoint had been written yet ({str(self.final_out)!r} is as it was)"

    def _barrier(self):
        if self.dist.world > 1:
            dist.barrier()

    def _autocast(self):
        if not self.cfg.train.bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def _layout(self, x: Tensor) -> Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _make_run(self, net, process, *, latent=None) -> Run:
        return Run(self.cfg, self.data_info, net, process, device=self.device, path=self.out, latent=latent)

    # A denoiser's trainer also answers as the run it trains (benchmarks sample through these).
    @property
    def process(self):
        return self.task.process

    @property
    def conditioner(self):
        return self.task.conditioner

    def ema_run(self) -> Run:
        """The run as sampled now: the EMA network behind the run's process, on the trainer's device."""
        return self.task.run(self.ema)

    def ema_denoiser(self):
        """The EMA network's sampling denoiser (unguided, clipped for images)."""
        return self.ema_run().sampling_denoiser()

    def _log(self, record: dict) -> None:
        with (self.out / "metrics.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is None:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.out / "tb"))
            except ImportError:
                self._tb = False
        if self._tb:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    self._tb.add_scalar(f"train/{k}", v, record["step"])

    def save(self) -> None:
        """Write the inference export and the resume state (rank 0), each atomically."""
        if not self.dist.main:
            return
        atomic_write_bytes(self.out / CONFIG_FILE, self.cfg.to_json().encode())
        extra, metrics = self.task.export(self.ema, step=self.step, evaluate=self.step != self._evaluated)
        if metrics:
            self._log({"step": self.step, **metrics})
            self._evaluated = self.step
        save_model(self.out / MODEL_FILE, self.ema.state_dict(), self.cfg, self.data_info, step=self.step,
                   extra=extra)
        state = {"step": self.step, "nimg": self.nimg, "net": self.net.state_dict(), "ema": self.ema.state_dict(),
                 "opt": self.opt.state_dict(), "rng_cpu": torch.get_rng_state(), "config": self.cfg.to_dict(),
                 "data_info": self.data_info.to_dict(), **self.task.state()}
        save_train_state(self.out / STATE_FILE, state)
        keep = self.cfg.train.keep_checkpoints
        if keep > 0:  # a hard link to the state just written (no second copy on disk), else a copy
            ck = self.out / "checkpoints"
            ck.mkdir(exist_ok=True)
            kept = ck / f"train_state-{self.step:08d}.pt"
            kept.unlink(missing_ok=True)
            try:
                os.link(self.out / STATE_FILE, kept)
            except OSError:
                save_train_state(kept, state)
            for f in sorted(ck.glob("train_state-*.pt"))[:-keep]:
                f.unlink(missing_ok=True)
        if self.out != self.final_out:  # --overwrite: the new run replaces the old one now, whole
            lock = acquire(self.out, "unblur train")
            swap_in(self.out, self.final_out)
            self.out = self.final_out
            self.lock.release()
            self.lock = lock

    def sample_grid(self) -> Path | None:
        """The task's picture of the EMA network now (samples, reconstructions), or None."""
        if not self.dist.main or self.cfg.sample.grid_n <= 0:
            return None
        with torch.no_grad():
            return self.task.grid(self.ema, self.out / "samples" / f"step-{self.step:08d}.png", step=self.step,
                                  log=self._log)

    # -- the loop --------------------------------------------------------------------------
    def train_step(self) -> dict:
        """Draw a batch, ask the task for its loss, backward, clip, step, EMA, log."""
        t, d, task = self.cfg.train, self.dist, self.task
        idx = batch_indices(self.step, t.batch_size, len(task.x_train), t.seed)
        idx = idx[d.rank :: d.world]  # this process's share of the global batch
        gen = torch.Generator(self.device).manual_seed(_mix(t.seed, self.step, d.rank, 1))
        torch.manual_seed(_mix(t.seed, self.step, d.rank, 2))  # dropout
        lr = lr_at(self.step, t)
        for group in self.opt.param_groups:
            group["lr"] = lr
        self.opt.zero_grad(set_to_none=True)
        total, parts = 0.0, {}
        micro = idx.chunk(t.grad_accum)
        for k, mi in enumerate(micro):
            mi = mi.to(self.device)
            sync = self.loss_module.no_sync() if d.world > 1 and k < len(micro) - 1 else contextlib.nullcontext()
            with sync:
                per_sample, terms = task.loss(self.loss_module, task.x_train[mi], mi, gen, step=self.step)
                loss = per_sample.mean()
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"the loss became {loss.item()} at step {self.step}: training stopped and {self._kept()}; "
                    "lower train.lr, enable train.grad_clip, or check the data for NaN values")
            (loss / len(micro)).backward()
            total += loss.item() / len(micro)
            for key, v in terms.items():
                parts[key] = parts.get(key, 0.0) + float(v) / len(micro)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.net.parameters(), t.grad_clip if t.grad_clip > 0 else math.inf)
        if not torch.isfinite(grad_norm):
            raise TrainingDiverged(
                f"the gradient norm became {grad_norm.item()} at step {self.step}: stopped and {self._kept()}; "
                "lower train.lr or enable train.grad_clip")
        self.opt.step()
        parts.update(task.after_step(step=self.step, lr=lr, grad_clip=t.grad_clip))
        self.nimg += t.batch_size
        beta = ema_beta(self.nimg, t.batch_size, t)
        with torch.no_grad():
            torch._foreach_lerp_(self._ema_params, self._net_params, 1 - beta)
            for be, b in zip(self.ema.buffers(), self.net.buffers()):
                be.copy_(b)
        if d.world > 1:
            loss_t = torch.tensor([total], device=self.device)
            dist.all_reduce(loss_t)
            total = loss_t.item() / d.world
        self.step += 1
        return {"loss": total, **parts, "lr": lr, "grad_norm": float(grad_norm)}

    def run(self) -> dict:
        t = self.cfg.train
        start_time = time.time()
        deadline = start_time + t.minutes * 60 if t.minutes else math.inf
        bar = None
        if self.progress:
            import sys

            from tqdm import tqdm

            # A time budget's total is the step it should reach, set once the speed is measured.
            bar = tqdm(total=t.steps if t.steps < 10**9 else None, initial=self.step, unit="step",
                       dynamic_ncols=True, desc=f"train {self.out.name}",
                       mininterval=0.5 if sys.stderr.isatty() else 30)
        last: dict = {}
        tick, tick_img = time.time(), self.nimg
        first: tuple[float, int] | None = None  # (time, step) after this process's first step (warm-up excluded)
        speed, logged = None, self.step  # steps per second, once measured; the last step logged
        reason = "steps"
        with _Stop() as stop:
            while self.step < t.steps:
                code = 2 if stop.requested else 1 if time.time() >= deadline else 0
                if self.dist.world > 1:  # every rank must stop at the same step
                    flag = torch.tensor([code], device=self.device)
                    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                    code = int(flag.item())
                if code:
                    reason = "signal" if code == 2 else "minutes"
                    break
                last = self.train_step()
                if bar is not None:
                    bar.update(1)
                now = time.time()
                if first is None:
                    first = (now, self.step)
                elif speed is None and (self.step - first[1] >= SPEED_STEPS or now - first[0] >= SPEED_SECONDS):
                    speed = (self.step - first[1]) / max(now - first[0], 1e-9)
                    self._report_speed(bar, speed, deadline - now)
                if self.dist.main and (self.step % t.log_every == 0 or self.step == t.steps or self.step == 1):
                    self._log_step(last, tick, tick_img, start_time, bar)
                    tick, tick_img, logged = time.time(), self.nimg, self.step
                    if speed is not None and bar is not None and math.isfinite(deadline):  # keep the ETA honest
                        speed = (self.step - first[1]) / max(now - first[0], 1e-9)  # checkpoints and grids included
                        bar.total = min(t.steps, self.step + int(speed * (deadline - now)))
                if t.checkpoint_every and self.step % t.checkpoint_every == 0:
                    self.save()
                if t.sample_every and self.step % t.sample_every == 0:
                    self.sample_grid()
                self._barrier() if (t.checkpoint_every and self.step % t.checkpoint_every == 0) else None
        if self.dist.main and self.step > logged:  # stopped by the clock or a signal between two log lines
            self._log_step(last, tick, tick_img, start_time, bar)
        if bar is not None:
            if reason != "steps":
                bar.total = self.step
            bar.close()
        self.save()
        grid = self.sample_grid()
        self._barrier()
        return {"step": self.step, "stopped_by": reason, "signal": stop.signal, "grid": str(grid) if grid else None,
                **last, "seconds": time.time() - start_time}

    def _report_speed(self, bar, steps_per_s: float, seconds_left: float) -> None:
        """Say the speed and what the budget buys at it; the bar's total becomes the step it should reach."""
        t = self.cfg.train
        line, end = speed_line(steps_per_s, t.batch_size, step=self.step, steps=t.steps, minutes=t.minutes,
                               seconds_left=seconds_left)
        self.say(line)
        if bar is not None:
            bar.total = max(end, self.step)
            bar.refresh()

    def _log_step(self, last: dict, tick: float, tick_img: int, start_time: float, bar) -> None:
        """One metrics line for the step just taken, with the images per second since the last."""
        if bar is not None:
            bar.set_postfix(loss=f"{last['loss']:.4f}", refresh=False)
        now = time.time()
        rate = (self.nimg - tick_img) / max(now - tick, 1e-9)
        self._log({"step": self.step, **last, "img_per_s": rate, "nimg": self.nimg, "time": now - start_time})


def train(cfg: Config, out: str | Path, *, resume: bool = False, overwrite: bool = False,
          data: Data | None = None, progress: bool = True, explicit: set[str] | None = None,
          report: Callable[[str], None] | None = None) -> dict:
    """Train a run to ``out``; returns a summary (steps, last loss, what stopped it, the notes).

    ``explicit``: the config keys the user gave (the CLI passes them), which decides what a
    resumed run takes from ``cfg`` (see ``resume_config``) and whether the data's classes and
    captions are used by default (``default_conditioning``). ``report``: called with each line
    the run says about itself (data, conditioning, model, speed) as it says it.
    """
    trainer = Trainer(cfg, out, resume=resume, overwrite=overwrite, data=data, progress=progress, explicit=explicit,
                      report=report)
    try:
        return {**trainer.run(), "notes": trainer.notes}
    finally:
        trainer.close()
