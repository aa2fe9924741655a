"""Built-in feature networks: small classifiers shipped with the package as safetensors.

Each built-in net is a small CNN trained by ``scripts/train_features.py`` (fixed seed, CPU,
well under a minute) on a built-in data set. It gives, for images in the data convention
([-1, 1], (B, C, H, W), any size), a feature vector (for FID, KID, precision/recall) and class
probabilities (for the Inception Score and for "is this sample recognizable")::

    clf = digits_classifier("cpu")
    feats, probs = clf.embed(x)                 # (B, 64), (B, 10)
    recognizability((x + 1) / 2)                # {"mean_top_prob": ..., "class_entropy": ..., "counts": [...]}

A net is described by a ``FeatureNetSpec`` in ``BUILTIN_FEATURE_NETS``; its weights live in
``unblur/eval/weights/NAME.safetensors`` with the spec, the training seed and the held-out
accuracy in the file's metadata. Adding a net for another built-in set is one spec, one
loader in the training script and one run of it.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..utils import choice_error, resolve_device

WEIGHTS_DIR = Path(__file__).parent / "weights"


class MissingWeightsError(FileNotFoundError, ValueError):
    """A weights file a feature network needs is not there; the message names what to get."""


class MissingDependencyError(ImportError, ValueError):
    """An optional package a feature network needs is not installed; the message names it."""


@dataclass(frozen=True)
class FeatureNetSpec:
    """The architecture and input convention of one built-in feature network."""

    name: str  # the key in BUILTIN_FEATURE_NETS, also the weights file's stem
    data: str  # the data set it was trained on, e.g. "builtin:digits"
    input_size: tuple[int, int] = (8, 8)  # (H, W) the net sees; other sizes are resized (area / bilinear)
    channels: int = 1  # input channels; RGB input is turned to gray by the mean when this is 1
    num_classes: int = 10
    class_names: tuple[str, ...] = tuple(str(k) for k in range(10))
    widths: tuple[int, ...] = (32, 64, 64)  # conv channels; a 2x2 max-pool follows every conv after the first
    feature_dim: int = 64  # the penultimate layer: the features FID/KID/PR are computed on


BUILTIN_FEATURE_NETS: dict[str, FeatureNetSpec] = {
    "digits": FeatureNetSpec(name="digits", data="builtin:digits"),
    "shapes": FeatureNetSpec(
        name="shapes",
        data="builtin:shapes",
        input_size=(32, 32),
        channels=3,
        num_classes=5,
        class_names=("circle", "square", "triangle", "diamond", "cross"),  # unblur.data.shapes.SHAPES
        widths=(16, 32, 64, 64),
    ),
}


class SmallConvClassifier(nn.Module):
    """conv3x3 -> [conv3x3 -> maxpool2] * k -> linear (features) -> ReLU -> linear (logits)."""

    def __init__(self, spec: FeatureNetSpec):
        super().__init__()
        self.spec = spec
        layers: list[nn.Module] = []
        c_in = spec.channels
        h, w = spec.input_size
        for i, c in enumerate(spec.widths):
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU()]
            if i > 0:
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            c_in = c
        self.body = nn.Sequential(*layers)
        self.to_features = nn.Linear(c_in * h * w, spec.feature_dim)
        self.head = nn.Linear(spec.feature_dim, spec.num_classes)

    def prepare(self, x: Tensor) -> Tensor:
        """Images in [-1, 1], any size and 1 or 3 channels -> the net's input size and channels."""
        if x.ndim != 4:
            raise ValueError(f"the {self.spec.name} feature net takes images (B, C, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] != self.spec.channels:
            if self.spec.channels == 1 and x.shape[1] == 3:
                x = x.mean(1, keepdim=True)
            elif self.spec.channels == 3 and x.shape[1] == 1:
                x = x.expand(-1, 3, -1, -1)
            else:
                raise ValueError(
                    f"the {self.spec.name} feature net takes {self.spec.channels}-channel images, got {x.shape[1]}"
                )
        size = tuple(self.spec.input_size)
        if tuple(x.shape[-2:]) != size:
            H, W = x.shape[-2:]
            if H % size[0] == 0 and W % size[1] == 0 and H >= size[0]:
                x = F.interpolate(x, size=size, mode="area")  # exact inverse of a box upsample
            else:
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        return x

    def features(self, x: Tensor) -> Tensor:
        """(B, C, H, W) in [-1, 1] -> (B, feature_dim)."""
        h = self.body(self.prepare(x))  # (B, C', h, w)
        return self.to_features(h.flatten(1))

    def forward(self, x: Tensor) -> Tensor:
        """Class logits (B, num_classes)."""
        return self.head(F.relu(self.features(x)))

    def embed(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(features (B, feature_dim), class probabilities (B, num_classes)) in one pass."""
        f = self.features(x)
        return f, torch.softmax(self.head(F.relu(f)), dim=-1)


def weights_path(name: str) -> Path:
    if name not in BUILTIN_FEATURE_NETS:
        raise choice_error("built-in feature network", name, BUILTIN_FEATURE_NETS)
    return WEIGHTS_DIR / f"{name}.safetensors"


def feature_net_info(name: str) -> dict:
    """The metadata shipped with a built-in net: spec, seed, held-out accuracy, weights hash."""
    from safetensors import safe_open

    path = weights_path(name)
    if not path.exists():
        raise MissingWeightsError(
            f"the built-in {name!r} feature network's weights {path} are missing: "
            f"run `python scripts/train_features.py --net {name}` from the repository root"
        )
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
    info = {k: json.loads(v) for k, v in meta.items()}
    info["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return info


_CACHE: dict[tuple[str, str], SmallConvClassifier] = {}


def load_feature_net(name: str, device: torch.device | str = "auto") -> SmallConvClassifier:
    """A built-in feature network, in eval mode with frozen weights, on ``device``."""
    from safetensors.torch import load_file

    dev = resolve_device(device) if isinstance(device, str) else torch.device(device)
    key = (name, str(dev))
    if key in _CACHE:
        return _CACHE[key]
    info = feature_net_info(name)
    spec = BUILTIN_FEATURE_NETS[name]
    net = SmallConvClassifier(spec)
    net.load_state_dict(load_file(str(weights_path(name))))
    net = net.to(dev).eval().requires_grad_(False)
    net.info = info  # type: ignore[attr-defined]
    _CACHE[key] = net
    return net


def digits_classifier(device: torch.device | str = "auto") -> SmallConvClassifier:
    """The built-in classifier of the 8x8 digits (any image size; resized to 8x8 inside)."""
    return load_feature_net("digits", device)


@torch.no_grad()
def recognizability(
    images01: Tensor,
    *,
    net: str | SmallConvClassifier = "digits",
    labels: Tensor | None = None,
    batch: int = 512,
) -> dict:
    """How confidently a built-in classifier recognizes a set of images.

    Args:
        images01: (B, C, H, W) in [0, 1] (note: not the [-1, 1] data convention).
        net: a built-in net's name or a loaded one.
        labels: optional intended classes (B,); adds ``accuracy``.

    Returns ``mean_top_prob`` (mean over images of the largest class probability),
    ``class_entropy`` (entropy in nats of the histogram of predicted classes; log(10) = 2.303
    for ten classes used equally), ``class_entropy_max``, ``counts`` (images per predicted
    class) and ``predictions``.
    """
    clf = load_feature_net(net, "cpu") if isinstance(net, str) else net
    dev = next(clf.parameters()).device
    if images01.ndim != 4 or len(images01) == 0:
        raise ValueError(f"recognizability needs a non-empty (B, C, H, W) batch, got shape {tuple(images01.shape)}")
    probs = torch.cat([
        torch.softmax(clf(images01[i : i + batch].to(dev, torch.float32) * 2 - 1), -1).cpu()
        for i in range(0, len(images01), batch)
    ])
    top, pred = probs.max(-1)
    counts = torch.bincount(pred, minlength=clf.spec.num_classes)
    freq = counts.double() / counts.sum()
    entropy = float(-(freq[freq > 0] * freq[freq > 0].log()).sum())
    out = {
        "mean_top_prob": float(top.mean()),
        "class_entropy": entropy,
        "class_entropy_max": math.log(clf.spec.num_classes),
        "counts": counts.tolist(),
        "predictions": pred.tolist(),
    }
    if labels is not None:
        out["accuracy"] = float((pred == labels.cpu().long()).double().mean())
    return out


def spec_metadata(spec: FeatureNetSpec, **extra) -> dict[str, str]:
    """safetensors metadata (string values, JSON-encoded) for a trained net."""
    meta = {"spec": asdict(spec), **extra}
    return {k: json.dumps(v) for k, v in meta.items()}
