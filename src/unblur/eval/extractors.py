"""Feature extractors for sample-quality metrics, chosen by a spec string, and the cache of
reference features.

Specs (``--features``):

* ``builtin:digits``, ``builtin:shapes``: the small classifiers shipped with unblur (``features.py``).
* ``inception:PATH``: Inception-v3 for FID. PATH is either NVIDIA's TorchScript detector
  ``inception-2015-12-05.pt`` (the standard FID network, a port of the TensorFlow graph; it
  resizes to 299 itself) or torchvision's ``inception_v3_google-0cc3c7bd.pth`` state dict
  (needs torchvision; its 2048-d pool features are *not* the TF network's, so its FIDs are
  not comparable with published ones).
* ``torchvision:ARCH:PATH``: any torchvision classifier (e.g. ``resnet18``) with weights from
  a state-dict file; features are the input of its last linear layer.
* ``hf:PATH``: a Hugging Face image model saved in a local folder (``AutoModel``); features
  are its pooled output (or the mean of its last hidden state).
* ``pixels``: raw pixels (downsampled by area to at most 16x16). A last resort with no
  semantic meaning; reports label it as such.
* ``auto``: the built-in net of a built-in data set, otherwise ``pixels``.

Every extractor takes images in the data convention ((B, C, H, W) in [-1, 1]) and has an
``id`` that names the network, its weights' hash and its preprocessing: reference features are
cached under a key made of that id and the data's identity.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from ..utils import atomic_write_bytes
from .features import MissingDependencyError, MissingWeightsError

PIXELS_MAX_SIDE = 16  # pixel features: images larger than this are area-downsampled to it
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class FeatureExtractor:
    """``fn(x) -> (features (B, D), class probabilities (B, K) or None)`` with a cache id."""

    id: str  # network + weights hash + preprocessing, part of every cache key
    label: str  # human-readable, shown in reports
    fn: Callable[[Tensor], tuple[Tensor, Tensor | None]]
    device: torch.device
    has_probs: bool = False
    semantic: bool = True  # False for raw pixels

    @torch.no_grad()
    def __call__(self, x: Tensor, *, batch: int = 256, progress: Callable[[int], None] | None = None):
        """Features (N, D) float64 and probabilities (N, K) or None, on the CPU."""
        feats, probs = [], []
        for i in range(0, len(x), batch):
            f, p = self.fn(x[i : i + batch].to(self.device, torch.float32))
            feats.append(f.double().cpu())
            if p is not None:
                probs.append(p.double().cpu())
            if progress is not None:
                progress(min(batch, len(x) - i))
        return torch.cat(feats), (torch.cat(probs) if probs else None)


def _file_hash(path: Path, limit: int = 1 << 20) -> str:
    """sha256 of the first MiB and the size: cheap and enough to tell weights files apart."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(limit))
    h.update(str(path.stat().st_size).encode())
    return h.hexdigest()[:12]


def _need_file(path: str, what: str, get: str) -> Path:
    p = Path(path).expanduser()
    if not path or not p.exists():
        raise MissingWeightsError(f"{what} weights file {str(p)!r} not found: {get}")
    return p


def load_extractor(spec: str, *, device: torch.device, data_source: str | None = None) -> FeatureExtractor:
    """The feature extractor named by ``spec`` (see the module docstring)."""
    if spec == "auto":
        src = str(data_source or "")
        if src.startswith("builtin:"):
            from .features import BUILTIN_FEATURE_NETS

            name = src[len("builtin:") :].split(":")[0]
            if name in BUILTIN_FEATURE_NETS:
                return load_extractor(f"builtin:{name}", device=device)
        return load_extractor("pixels", device=device)
    if spec.startswith("builtin:"):
        return _builtin(spec[len("builtin:") :], device)
    if spec == "pixels":
        return _pixels(device)
    if spec.startswith("inception:"):
        return _inception(spec[len("inception:") :], device)
    if spec.startswith("torchvision:"):
        arch, _, path = spec[len("torchvision:") :].partition(":")
        return _torchvision(arch, path, device)
    if spec.startswith("hf:"):
        return _hf(spec[len("hf:") :], device)
    raise ValueError(
        f"unknown feature network {spec!r}: use auto, builtin:digits, builtin:shapes, inception:PATH, "
        "torchvision:ARCH:PATH, hf:PATH or pixels"
    )


def _builtin(name: str, device: torch.device) -> FeatureExtractor:
    from .features import load_feature_net

    net = load_feature_net(name, device)
    size = "x".join(map(str, net.spec.input_size))
    return FeatureExtractor(
        id=f"builtin:{name}@{net.info['sha256'][:12]}/resize{size}",
        label=f"built-in {name} classifier ({net.spec.feature_dim}-d features)",
        fn=net.embed, device=device, has_probs=True,
    )


def _pixels(device: torch.device) -> FeatureExtractor:
    def fn(x: Tensor):
        if x.ndim == 4 and max(x.shape[-2:]) > PIXELS_MAX_SIDE:
            H, W = x.shape[-2:]
            s = PIXELS_MAX_SIDE / max(H, W)
            x = F.interpolate(x, size=(max(1, round(H * s)), max(1, round(W * s))), mode="area")
        return x.reshape(len(x), -1), None

    return FeatureExtractor(id=f"pixels/max{PIXELS_MAX_SIDE}", fn=fn, device=device, semantic=False,
                            label=f"PIXELS (no feature network; area-downsampled to <= {PIXELS_MAX_SIDE}px; "
                                  "a last resort, not comparable to FID)")


def _to_rgb01(x: Tensor) -> Tensor:
    x = (x.clamp(-1, 1) + 1) / 2
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def _inception(path: str, device: torch.device) -> FeatureExtractor:
    get = ("download the FID Inception network once (on a machine with network access): NVIDIA's TorchScript "
           "detector https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt "
           "(the standard FID configuration) or torchvision's "
           "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth, then pass --features inception:PATH")
    p = _need_file(path, "Inception-v3", get)
    h = _file_hash(p)
    try:
        with warnings.catch_warnings():  # NVIDIA's detector is TorchScript, which torch now marks deprecated
            warnings.simplefilter("ignore", DeprecationWarning)
            model = torch.jit.load(str(p), map_location=device).eval()
    except Exception:
        model = None
    if model is not None:  # NVIDIA's detector: uint8 NCHW in, 2048-d pool3 out (resizes to 299 inside)
        def fn(x: Tensor):
            u8 = (_to_rgb01(x) * 255).round().to(torch.uint8)
            return model(u8, return_features=True), None

        return FeatureExtractor(id=f"inception-tf@{h}/uint8", label="Inception-v3 (FID, TF weights)",
                                fn=fn, device=device)
    try:
        import torchvision
    except ImportError as e:
        raise MissingDependencyError(f"{p} is not a TorchScript file, and reading a state dict needs torchvision "
                          "(pip install torchvision)") from e
    net = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    net.load_state_dict(torch.load(p, map_location="cpu", weights_only=True))
    head = net.fc
    net.fc = torch.nn.Identity()
    net = net.to(device).eval()
    head = head.to(device)

    def fn(x: Tensor):
        x = F.interpolate(_to_rgb01(x), size=(299, 299), mode="bilinear", align_corners=False)
        x = (x - x.new_tensor(IMAGENET_MEAN)[:, None, None]) / x.new_tensor(IMAGENET_STD)[:, None, None]
        f = net(x)
        return f, torch.softmax(head(f), -1)

    return FeatureExtractor(id=f"inception-torchvision@{h}/bilinear299", fn=fn, device=device, has_probs=True,
                            label="Inception-v3 (torchvision weights; not comparable to published FIDs)")


def _torchvision(arch: str, path: str, device: torch.device) -> FeatureExtractor:
    if not arch:
        raise ValueError("torchvision features need an architecture: torchvision:ARCH:PATH, "
                         "e.g. torchvision:resnet18:r18.pth")
    p = _need_file(path, f"torchvision {arch}", "give the state-dict file of the model as torchvision:ARCH:PATH")
    try:
        import torchvision
    except ImportError as e:
        raise MissingDependencyError("torchvision features need torchvision: pip install torchvision") from e
    state = torch.load(p, map_location="cpu", weights_only=True)
    net = torchvision.models.get_model(arch, weights=None)
    net.load_state_dict(state)
    head_name = next((n for n in ("fc", "classifier", "heads", "head") if hasattr(net, n)), None)
    if head_name is None:
        raise ValueError(f"torchvision model {arch!r} has no fc/classifier/heads layer to take features before")
    head = getattr(net, head_name)
    setattr(net, head_name, torch.nn.Identity())
    net, head = net.to(device).eval(), head.to(device).eval()

    def fn(x: Tensor):
        x = F.interpolate(_to_rgb01(x), size=(224, 224), mode="bilinear", align_corners=False)
        x = (x - x.new_tensor(IMAGENET_MEAN)[:, None, None]) / x.new_tensor(IMAGENET_STD)[:, None, None]
        f = net(x)
        return f, torch.softmax(head(f), -1)

    return FeatureExtractor(id=f"torchvision:{arch}@{_file_hash(p)}/bilinear224", label=f"torchvision {arch}",
                            fn=fn, device=device, has_probs=True)


def _hf(path: str, device: torch.device) -> FeatureExtractor:
    p = Path(path).expanduser()
    if not (p / "config.json").exists():
        raise MissingWeightsError(f"Hugging Face model folder {str(p)!r} has no config.json: give a folder saved with "
                                "save_pretrained (no downloads at run time)")
    try:
        from transformers import AutoConfig, AutoModel
    except ImportError as e:
        raise MissingDependencyError("hf: features need transformers: pip install unblur[text]") from e
    model = AutoModel.from_pretrained(str(p), local_files_only=True).to(device).eval()
    pre = {}
    if (p / "preprocessor_config.json").exists():
        pre = json.loads((p / "preprocessor_config.json").read_text())
    mean = pre.get("image_mean", [0.5, 0.5, 0.5])
    std = pre.get("image_std", [0.5, 0.5, 0.5])
    size = pre.get("size", getattr(AutoConfig.from_pretrained(str(p)), "image_size", 224))
    if isinstance(size, dict):
        size = size.get("height", size.get("shortest_edge", 224))
    size = int(size)

    def fn(x: Tensor):
        x = F.interpolate(_to_rgb01(x), size=(size, size), mode="bilinear", align_corners=False)
        x = (x - x.new_tensor(mean)[:, None, None]) / x.new_tensor(std)[:, None, None]
        out = model(pixel_values=x)
        f = getattr(out, "pooler_output", None)
        if f is None:
            f = out.last_hidden_state.mean(1)
        return f.reshape(len(x), -1), None

    h = _file_hash(next(iter(sorted(p.glob("*.safetensors")) or sorted(p.glob("*.bin")) or [p / "config.json"])))
    return FeatureExtractor(id=f"hf:{p.name}@{h}/bilinear{size}", label=f"Hugging Face {p.name}", fn=fn,
                            device=device)


# -- reference features, cached ------------------------------------------------------------


def cache_dir() -> Path:
    """Where reference features are kept: $UNBLUR_CACHE or ~/.cache/unblur, under refstats/."""
    root = os.environ.get("UNBLUR_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "unblur")
    return Path(root) / "refstats"


def data_identity(x: Tensor, source: str) -> str:
    """The source and a hash of the exact tensor (so a changed folder gets new statistics)."""
    h = hashlib.sha256(x.detach().cpu().contiguous().float().numpy().tobytes()).hexdigest()[:16]
    return f"{source}|{tuple(x.shape)}|{h}"


def reference_features(
    extractor: FeatureExtractor, x: Tensor, *, source: str, use_cache: bool = True, **kwargs
) -> tuple[Tensor, Tensor | None, bool]:
    """Features (and probabilities) of real data, from the cache when the same network,
    preprocessing and data were seen before. Returns (features, probs, was_cached)."""
    from safetensors.torch import load_file, save_file

    key_src = json.dumps({"features": extractor.id, "data": data_identity(x, source)}, sort_keys=True)
    key = hashlib.sha256(key_src.encode()).hexdigest()[:24]
    path = cache_dir() / f"{key}.safetensors"
    if use_cache and path.exists():
        try:
            t = load_file(str(path))
            if t["features"].ndim != 2 or len(t["features"]) != len(x):
                raise ValueError(f"features of shape {tuple(t['features'].shape)} for {len(x)} images")
            return t["features"], t.get("probs"), True
        except Exception as e:  # noqa: BLE001 - a corrupt, truncated or foreign file: rebuild it
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            warnings.warn(f"reference-feature cache file {str(path)!r} is unreadable ({reason}); deleting it "
                          "and computing the features again", stacklevel=2)  # fmt: skip
            path.unlink(missing_ok=True)
    feats, probs = extractor(x, **kwargs)
    if use_cache:
        tensors = {"features": feats.contiguous()}
        if probs is not None:
            tensors["probs"] = probs.contiguous()
        tmp = path.with_suffix(".tmp")
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(tmp), metadata={"key": key_src})
        atomic_write_bytes(path, tmp.read_bytes())
        tmp.unlink()
    return feats, probs, False
