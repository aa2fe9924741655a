"""How big a network is: its parameters and its forward FLOPs per sample."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(net: nn.Module, *, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad or not trainable_only)


@torch.no_grad()
def forward_flops(net: nn.Module, x: torch.Tensor, c_noise: torch.Tensor, cond=None) -> float:
    """Forward FLOPs per sample, as counted by ``FlopCounterMode`` (a multiply-add = 2 FLOPs).

    Counts matrix products, convolutions and attention; element-wise ops count zero.
    """
    was_training = net.training
    net.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            net(x, c_noise, cond)
    finally:
        net.train(was_training)
    return counter.get_total_flops() / x.shape[0]
