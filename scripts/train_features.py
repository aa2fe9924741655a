"""Train a built-in feature network and write it into the package as safetensors.

    python scripts/train_features.py --net digits            # writes src/unblur/eval/weights/digits.safetensors
    python scripts/train_features.py --net digits --check    # train again, compare with the shipped file
    python scripts/train_features.py --net shapes            # builtin:shapes, 32x32 RGB, one class per shape kind

Deterministic: fixed seed, CPU, one thread. A fixed, stratified-by-permutation fifth of the
data is held out; its accuracy is printed and stored in the file's metadata.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from unblur.eval.features import (  # noqa: E402
    BUILTIN_FEATURE_NETS,
    SmallConvClassifier,
    feature_net_info,
    spec_metadata,
    weights_path,
)

# training settings per net where they differ from the command line's defaults (kept small: about a minute
# of CPU at most)
NET_DEFAULTS: dict[str, dict] = {
    "digits": {"epochs": 40},
    "shapes": {"epochs": 4},
}


def load_labelled(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(images in [-1, 1] at the net's input size, labels) of the net's data set."""
    from unblur.data import load_data

    spec = BUILTIN_FEATURE_NETS[name]
    data = load_data(spec.data, size=spec.input_size)
    if data.labels is None:
        raise ValueError(f"{spec.data} has no labels to train a classifier on")
    return data.x, data.labels


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Shifts of up to a pixel, an up/down-sampling round trip and a little noise."""
    B, C, H, W = x.shape
    pad = F.pad(x, (1, 1, 1, 1), value=-1.0)
    dy = torch.randint(0, 3, (B,), generator=g)
    dx = torch.randint(0, 3, (B,), generator=g)
    x = torch.stack([pad[i, :, dy[i] : dy[i] + H, dx[i] : dx[i] + W] for i in range(B)])
    up = int(torch.randint(0, 3, (), generator=g))  # 0: none, 1: x2, 2: x4
    if up:
        big = F.interpolate(x, scale_factor=2**up, mode="bilinear", align_corners=False)
        x = F.interpolate(big, size=(H, W), mode="area")
    x = x + 0.08 * torch.rand((B, 1, 1, 1), generator=g) * torch.randn(x.shape, generator=g)
    return x.clamp(-1, 1)


def train(name: str, *, seed: int, epochs: int, batch: int, lr: float) -> tuple[SmallConvClassifier, dict]:
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    x, y = load_labelled(name)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_hold = len(x) // 5
    hold, tr = perm[:n_hold], perm[n_hold:]
    spec = BUILTIN_FEATURE_NETS[name]
    net = SmallConvClassifier(spec)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    steps_per_epoch = -(-len(tr) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch)
    g = torch.Generator().manual_seed(seed + 1)
    t0 = time.time()
    for _ in range(epochs):
        net.train()
        order = tr[torch.randperm(len(tr), generator=g)]
        for i in range(0, len(order), batch):
            idx = order[i : i + batch]
            loss = F.cross_entropy(net(augment(x[idx], g)), y[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    net.eval()
    with torch.no_grad():
        acc = float((net(x[hold]).argmax(-1) == y[hold]).double().mean())
        train_acc = float((net(x[tr]).argmax(-1) == y[tr]).double().mean())
    stats = {
        "held_out_accuracy": acc,
        "train_accuracy": train_acc,
        "held_out": int(n_hold),
        "trained_on": int(len(tr)),
        "seed": seed,
        "epochs": epochs,
        "seconds": round(time.time() - t0, 1),
    }
    return net, stats


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--net", default="digits", choices=sorted(BUILTIN_FEATURE_NETS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=None, help="default: per net (digits 40, shapes 4)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--check", action="store_true", help="train, then compare with the shipped weights; write nothing")
    args = p.parse_args()
    if args.epochs is None:
        args.epochs = NET_DEFAULTS.get(args.net, {}).get("epochs", 40)
    net, stats = train(args.net, seed=args.seed, epochs=args.epochs, batch=args.batch, lr=args.lr)
    print(json.dumps(stats))
    if args.check:
        shipped = feature_net_info(args.net)
        diff = abs(shipped["stats"]["held_out_accuracy"] - stats["held_out_accuracy"])
        print(f"shipped held-out accuracy {shipped['stats']['held_out_accuracy']:.4f}, "
              f"retrained {stats['held_out_accuracy']:.4f}, difference {diff:.4f}")
        return 0 if diff <= 0.01 else 1
    from safetensors.torch import save_file

    path = weights_path(args.net)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    meta = spec_metadata(net.spec, stats=stats, script="scripts/train_features.py",
                         args={"seed": args.seed, "epochs": args.epochs, "batch": args.batch, "lr": args.lr})
    save_file(state, str(path), metadata=meta)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
