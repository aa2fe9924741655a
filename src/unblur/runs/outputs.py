"""A folder of samples written as they are made: nothing is lost to a kill, memory stays flat.

``SampleFolder(folder, request)`` locks the folder, and writes each batch the moment it exists:
its slice of ``samples.npy`` (the array's header is written first for the whole request, so the
file has its final shape from the start), one PNG per image (each written atomically), then its
lines of ``samples.jsonl`` (flushed and synced: a record exists only once its data does).
``manifest.json`` holds the request and whether the set is complete:

* a folder holding an unfinished set of the same request is continued from its first missing
  sample (samples are seeded one by one, so the continuation is the same as an unbroken run);
* a complete set, a set of another request, or sample files of unknown origin are kept, and the
  command refuses, unless ``overwrite`` (then the old sample files are removed first).

``finish()`` draws the grid (or the scatter of 2-D points) from the array on disk and marks the
set complete.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..images import grid_scale, make_grid, save_png, scatter_image, write_image
from ..utils import atomic_write_bytes, read_jsonl
from .lock import acquire
from .run import SampleBatch

MANIFEST = "manifest.json"
RECORDS = "samples.jsonl"
ARRAY = "samples.npy"
GRID_MAX = 256  # images in grid.png


def _sample_files(folder: Path) -> list[Path]:
    names = {MANIFEST, RECORDS, ARRAY, "grid.png", "scatter.png"}
    return [p for p in folder.iterdir() if p.name in names or (p.suffix == ".png" and p.stem.isdigit())]


class SampleFolder:
    """The output folder of one sampling request (see the module docstring)."""

    def __init__(self, folder: str | Path, request: dict[str, Any], *, overwrite: bool = False,
                 command: str = "unblur sample"):
        self.folder = Path(folder)
        self.lock = acquire(self.folder, command)
        try:
            self.done = self._open(request, overwrite)
        except BaseException:
            self.lock.release()
            raise
        self.request = request
        atomic_write_bytes(self.folder / MANIFEST, json.dumps({"request": request, "complete": False}, indent=2)
                           .encode())

    def _open(self, request: dict, overwrite: bool) -> int:
        """How many samples are already written for ``request`` (0 for a fresh folder)."""
        files = _sample_files(self.folder)
        manifest = self._manifest()
        same = manifest is not None and manifest.get("request") == request
        if files and not overwrite:
            if manifest is None:
                raise ValueError(f"{str(self.folder)!r} already holds sample files: pass --overwrite to replace them, "
                                 "or choose another --out")
            if manifest.get("complete"):
                raise ValueError(f"{str(self.folder)!r} already holds the complete samples of "
                                 f"{'this' if same else 'another'} request: pass --overwrite to make them again, "
                                 "or choose another --out")
            if not same:
                raise ValueError(f"{str(self.folder)!r} holds the unfinished samples of another request: rerun that "
                                 "command to finish them, pass --overwrite to replace them, or choose another --out")
            return self._count_records()
        for f in files:
            f.unlink()
        return 0

    def _manifest(self) -> dict | None:
        path = self.folder / MANIFEST
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def _count_records(self) -> int:
        """Whole records at the start of samples.jsonl, in order (a line cut by a kill is dropped)."""
        path = self.folder / RECORDS
        good = []
        for rec in read_jsonl(path):
            if rec.get("index") != len(good):
                break
            good.append(rec)
        if path.exists():
            atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in good).encode())
        return len(good)

    def write(self, batch: SampleBatch, texts: list[dict[str, str]] | None = None) -> None:
        """Write one batch: array slice, PNGs (images; ``texts``: each one's PNG text chunks,
        e.g. ``runs.pnginfo.text_chunks``), then records."""
        x = batch.x.float().cpu()
        arr = ((x.clamp(-1, 1) + 1) / 2) if x.ndim == 4 else x  # images in [0, 1]; vectors in data units
        self._write_array(arr.numpy().astype(np.float32), batch.start, batch.total)
        if x.ndim == 4:
            for i in range(len(x)):
                write_image(x[i], self.folder / f"{batch.start + i:05d}.png", texts[i] if texts else None)
        with (self.folder / RECORDS).open("a", encoding="utf-8") as f:
            f.write("".join(json.dumps(r) + "\n" for r in batch.records))
            f.flush()
            os.fsync(f.fileno())

    def _write_array(self, a: np.ndarray, start: int, total: int) -> None:
        path = self.folder / ARRAY
        if not path.exists():
            with path.open("wb") as f:
                np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False,
                                                         "shape": (total, *a.shape[1:])})
                f.truncate(f.tell() + total * a[0].nbytes)  # the whole array's size, sparse until written
        with path.open("r+b") as f:
            np.lib.format.read_magic(f)
            np.lib.format.read_array_header_1_0(f)
            f.seek(f.tell() + start * a[0].nbytes)
            f.write(np.ascontiguousarray(a).tobytes())
            f.flush()
            os.fsync(f.fileno())

    def finish(self) -> Path:
        """Draw the grid (images) or scatter (2-D points) from the array on disk; mark the set complete.

        ``shown`` is then the number of samples in the picture. Samples of several classes in
        equal numbers (a class-conditional run sampled without --class cycles through its
        classes) are drawn one class per row, in class order.
        """
        a = np.load(self.folder / ARRAY, mmap_mode="r")
        if a.ndim == 4:
            order, per_row = self._class_rows(len(a))
            x = torch.from_numpy(np.array(a[order])) * 2 - 1
            picture = self.folder / "grid.png"
            save_png(make_grid(x, nrow=per_row, scale=grid_scale(x.shape[-2])), picture)
            self.shown = len(order)
        else:
            picture = self.folder / "scatter.png"
            save_png(scatter_image(torch.from_numpy(np.array(a))), picture)
            self.shown = len(a)
        atomic_write_bytes(self.folder / MANIFEST, json.dumps({"request": self.request, "complete": True},
                                                              indent=2).encode())
        return picture

    def _class_rows(self, total: int) -> tuple[list[int], int | None]:
        """(the samples the grid shows, in order; images per row, None for a square grid): one
        class per row where the shown samples hold every class equally often (at most GRID_MAX,
        cut to a whole number of rows), else the first GRID_MAX in order."""
        plain = list(range(min(total, GRID_MAX))), None
        classes = [r.get("class") for r in self._records()[:total]]
        if len(classes) != total or None in classes:
            return plain
        kinds = sorted(set(classes))
        if len(kinds) < 2 or total % len(kinds):
            return plain
        per_row = min(total, GRID_MAX) // len(kinds)
        rows = [[i for i, c in enumerate(classes) if c == k][:per_row] for k in kinds]
        if per_row == 0 or any(len(row) < per_row for row in rows):
            return plain
        return [i for row in rows for i in row], per_row

    def _records(self) -> list[dict]:
        path = self.folder / RECORDS
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def close(self) -> None:
        self.lock.release()
