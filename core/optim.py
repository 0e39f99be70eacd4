"""Optimisation: the learning-rate schedule, and Muon for every device.

`lr_factor` is the schedule: linear warmup, then cosine or warmup-stable-decay.

`torch.optim.Muon` orthogonalises each update in bfloat16. CPUs without native bf16 run those matrix
products about 100x slower than fp32, which made Muon steps 10x slower than AdamW steps here. On such
CPUs `Muon` runs the same update with the iteration in fp32; elsewhere it is `torch.optim.Muon` unchanged.
"""

from __future__ import annotations

import math

import torch
from torch.optim._muon import _adjust_lr

from core.config import TrainConfig
from core.device import cpu_has_fast_bf16

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def lr_factor(step: int, progress: float, cfg: TrainConfig) -> float:
    """Learning-rate multiplier: linear warmup, then cosine or warmup-stable-decay to min_lr_ratio."""
    warmup = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
    progress = min(max(progress, 0.0), 1.0)
    if cfg.schedule == "cosine":
        decay = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        start = 1.0 - cfg.decay_fraction
        decay = 1.0 if progress < start else (1.0 - progress) / max(cfg.decay_fraction, 1e-9)
    return warmup * (cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * decay)


def orthogonalize(update: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """Quintic Newton-Schulz iteration towards the nearest semi-orthogonal matrix (fp32)."""
    a, b, c = NS_COEFFICIENTS
    x = update.float()
    tall = x.size(0) > x.size(1)
    if tall:
        x = x.T
    x = x / x.norm().clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


class Muon(torch.optim.Muon):
    @torch.no_grad()
    def step(self, closure=None):
        params = [p for g in self.param_groups for p in g["params"]]
        if not params or params[0].device.type != "cpu" or cpu_has_fast_bf16():
            return super().step(closure)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p.grad))
                buf.lerp_(p.grad, 1 - group["momentum"])
                update = p.grad.lerp(buf, group["momentum"]) if group["nesterov"] else buf
                update = orthogonalize(update, group["ns_steps"], group["eps"])
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(update.to(p.dtype), alpha=-_adjust_lr(group["lr"], group["adjust_lr_fn"], p.shape))
        return None
