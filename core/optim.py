"""Muon for every device: `torch.optim.Muon`, with its Newton-Schulz step in fp32 on CPUs.

`torch.optim.Muon` orthogonalises each update in bfloat16. CPUs without native bf16 run those
matrix products about 100x slower than fp32, which made Muon steps 10x slower than AdamW steps here.
On such CPUs this subclass runs the same update with the iteration in fp32; elsewhere it is
`torch.optim.Muon` unchanged.
"""

from __future__ import annotations

import torch
from torch.optim._muon import _adjust_lr

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def cpu_has_fast_bf16() -> bool:
    return bool(getattr(torch.backends.cpu, "get_cpu_capability", lambda: "")() in ("AVX512_BF16", "AMX"))


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
