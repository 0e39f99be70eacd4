"""Generation at reduced precision: `int8`, the blocks' and the head's matrices as int8 rows.

Weight-only quantization, as gpt-fast's int8 and llama.cpp's q8_0 do it: each row of a matrix keeps its
largest magnitude as a bf16 scale and its values as int8 multiples of scale / 127, a quarter of f32's bytes.
The products run in PyTorch's int8 CPU kernel with bf16 activations, so decoding (which reads every weight
once a token) goes up to four times faster than exact fp32. The embedding and the norms stay fp32. Exact fp32
stays the default; `slm eval --dtype int8` prints what int8 costs in bits per byte.
"""

from __future__ import annotations

import torch
from torch import nn

from core.chat.sampling import DTYPES
from core.errors import SLMError
from core.model import GPT

INT8_BLOCK = 32  # the kernel wants input widths in multiples of this; a narrower matrix stays fp32


class Int8Linear(nn.Module):
    """A bias-free Linear for inference whose weight is int8 rows with one bf16 scale each."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        w = weight.detach().float()
        scale = (w.abs().amax(dim=1).clamp_min(1e-12) / 127).to(torch.bfloat16)
        rows = torch.round(w / scale.float()[:, None]).clamp_(-127, 127).to(torch.int8)
        self.register_buffer("int8", rows.contiguous())
        self.register_buffer("scale", scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1]).to(torch.bfloat16).contiguous()
        y = torch._weight_int8pack_mm(rows, self.int8, self.scale)
        return y.view(*x.shape[:-1], -1).to(x.dtype)

    def mv(self, v: torch.Tensor) -> torch.Tensor:
        """The product with one vector (fp32 in, fp32 out): what the decoders call in place of `torch.mv`."""
        return torch._weight_int8pack_mm(v.to(torch.bfloat16)[None], self.int8, self.scale)[0].float()


def quantize(model: GPT, dtype: str) -> GPT:
    """`model` for generation at `dtype`: unchanged for f32; for int8 its blocks' Linears and head swapped, in
    place, for Int8Linear (those whose input width the kernel takes). Raises SLMError where int8 cannot run."""
    if dtype not in DTYPES:
        raise SLMError(f"unknown generation dtype {dtype!r}: choose {', '.join(DTYPES)}")
    if dtype == "f32":
        return model
    if model.embed.weight.device.type != "cpu":
        raise SLMError(f"int8 weights are for generation on a CPU: use f32 on {model.embed.weight.device.type}")
    if not hasattr(torch, "_weight_int8pack_mm"):
        raise SLMError(f"int8 generation needs PyTorch's int8 kernel, which torch {torch.__version__} lacks")
    owners = [(b.attn, "qkv") for b in model.blocks] + [(b.attn, "proj") for b in model.blocks]
    owners += [(b.mlp, "gate_up") for b in model.blocks] + [(b.mlp, "down") for b in model.blocks]
    owners.append((model, "lm_head"))
    for owner, name in owners:
        linear = getattr(owner, name)
        if linear.weight.shape[1] % INT8_BLOCK == 0:
            setattr(owner, name, Int8Linear(linear.weight))
    return model
