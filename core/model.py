"""The GPT: a decoder-only transformer, read top to bottom.

Modern parts, each kept plain: RMSNorm, rotary position embeddings (RoPE, rotate-half layout as in
Llama), grouped-query attention through `F.scaled_dot_product_attention` (flash kernels where the
device has them), a SwiGLU MLP, no biases, optionally tied input/output embeddings, a KV cache for
generation and optional gradient checkpointing. The layout maps one to one onto Hugging Face's
`LlamaForCausalLM`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from core.config import ModelConfig, TrainConfig
from core.optim import Muon

# --- rotary position embeddings -----------------------------------------------------------------


def rope_tables(head_dim: int, length: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and signed sin tables of shape (length, head_dim): [cos, cos] and [-sin, sin] per half."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(length, dtype=torch.float32), inv_freq)
    cos, sin = angles.cos(), angles.sin()
    return torch.cat((cos, cos), dim=-1), torch.cat((-sin, sin), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (i, i + d/2) of x (..., head_dim) by the angles of tables that broadcast to x.

    With the tables of `rope_tables`, x * cos + swap_halves(x) * sin: three kernels, no concatenation.
    """
    return torch.addcmul(x * cos, x.roll(x.shape[-1] // 2, -1), sin)


# --- RMSNorm ------------------------------------------------------------------------------------


class _RMSNormFunction(torch.autograd.Function):
    """x / rms(x) * weight with a hand-written backward: half the kernels of autograd's on CPU."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        rstd = torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True).add_(eps))
        normed = (x * rstd).type_as(x)
        ctx.save_for_backward(normed, rstd, weight)
        return normed * weight

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        normed, rstd, weight = ctx.saved_tensors
        g = grad * weight
        dx = (g - normed * (g * normed).mean(-1, keepdim=True)) * rstd
        dweight = (grad * normed).reshape(-1, grad.shape[-1]).sum(0)
        return dx.type_as(grad), dweight.type_as(weight), None


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled():  # inference: one fused call, no autograd bookkeeping
            return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)
        return _RMSNormFunction.apply(x, self.weight, self.eps)


# --- KV cache -----------------------------------------------------------------------------------


class KVCache:
    """Keys and values of the tokens seen so far, per layer, so each new token costs one step."""

    def __init__(self, config: ModelConfig, batch: int, length: int, device, dtype) -> None:
        shape = (config.n_layer, batch, config.n_kv_head, length, config.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.pos = 0  # number of positions filled
        self._first_k, self._first_v = self.k[:, 0].unbind(0), self.v[:, 0].unbind(0)  # batch 0, per layer

    @property
    def length(self) -> int:
        return self.k.shape[3]

    def reset(self) -> None:
        self.pos = 0

    def copy_row(self, source: KVCache, row: int, source_row: int, length: int) -> None:
        """Copy the first `length` positions of `source_row` in `source` into `row` of this cache."""
        self.k[:, row, :, :length] = source.k[:, source_row, :, :length]
        self.v[:, row, :, :length] = source.v[:, source_row, :, :length]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (batch, kv_heads, time, head_dim) after the filled part; return all so far."""
        end = self.pos + k.shape[2]
        self.k[layer, :, :, self.pos : end] = k
        self.v[layer, :, :, self.pos : end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def put(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`update` for one position of batch 1, with k, v (kv_heads, head_dim): the Decoder's step."""
        keys, values = self._first_k[layer], self._first_v[layer]
        keys[:, self.pos] = k
        values[:, self.pos] = v
        end = self.pos + 1
        return keys[None, :, :end], values[None, :, :end]


# --- the transformer ----------------------------------------------------------------------------


class Attention(nn.Module):
    def __init__(self, config: ModelConfig, layer: int) -> None:
        super().__init__()
        self.layer = layer
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.n_kv_head, config.head_dim
        self.qkv = nn.Linear(config.n_embd, (config.n_head + 2 * config.n_kv_head) * config.head_dim, bias=False)
        self.proj = nn.Linear(config.n_head * config.head_dim, config.n_embd, bias=False)
        self.dropout = config.dropout

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache | None) -> torch.Tensor:
        B, T, _ = x.shape
        h, kv = self.n_head, self.n_kv_head
        qk, v = self.qkv(x).view(B, T, h + 2 * kv, self.head_dim).split([h + kv, kv], dim=2)
        q, k = apply_rope(qk, cos, sin).split([h, kv], dim=2)  # q and k in one rotation
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        mask, causal = None, True
        if cache is not None:
            past = cache.pos
            k, v = cache.update(self.layer, k, v)
            if past > 0:  # queries sit at the end of the keys: causal alignment is bottom-right
                causal = False
                if T > 1:
                    mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(diagonal=past)
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            is_causal=causal,
            dropout_p=self.dropout if self.training else 0.0,
            enable_gqa=self.n_kv_head != self.n_head,
        )
        return self.proj(y.transpose(1, 2).reshape(B, T, -1))


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x)), with gate and up computed by one matrix."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.gate_up = nn.Linear(config.n_embd, 2 * config.mlp_hidden, bias=False)
        self.down = nn.Linear(config.mlp_hidden, config.n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, config: ModelConfig, layer: int) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(config.n_embd, eps=config.norm_eps)
        self.attn = Attention(config, layer)
        self.mlp_norm = RMSNorm(config.n_embd, eps=config.norm_eps)
        self.mlp = MLP(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache | None) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.attn_norm(x), cos, sin, cache))
        return x + self.dropout(self.mlp(self.mlp_norm(x)))


class GPT(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.norm = RMSNorm(config.n_embd, eps=config.norm_eps)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        cos, sin = rope_tables(config.head_dim, config.context, config.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.grad_checkpoint = False
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-2 style init: N(0, 0.02), residual output projections scaled by 1/sqrt(2 * n_layer)."""
        std = 0.02
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                nn.init.ones_(p)
            elif name.endswith(("attn.proj.weight", "mlp.down.weight")):
                nn.init.normal_(p, mean=0.0, std=std / math.sqrt(2 * self.config.n_layer))
            else:
                nn.init.normal_(p, mean=0.0, std=std)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        cache: KVCache | None = None,
        reduction: str = "mean",
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Logits for `idx` (batch, time); with `targets`, also the cross-entropy loss.

        Targets of -1 are ignored. Without targets only the last position's logits are computed.
        """
        T = idx.shape[1]
        start = cache.pos if cache is not None else 0
        if start + T > self.config.context:
            raise ValueError(f"sequence of {start + T} tokens exceeds the context of {self.config.context}")
        cos, sin = self.rope_cos[start : start + T, None], self.rope_sin[start : start + T, None]  # over heads
        x = self.drop(self.embed(idx))
        for block in self.blocks:
            if self.grad_checkpoint and self.training:
                x = checkpoint(block, x, cos, sin, None, use_reentrant=False)
            else:
                x = block(x, cos, sin, cache)
        if cache is not None:
            cache.pos += T
        x = self.norm(x)
        if targets is None:
            return self.lm_head(x[:, -1:, :]).float(), None
        logits = self.lm_head(x).float()
        loss = F.cross_entropy(
            logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1, reduction=reduction
        )
        return logits, loss

    def optimizers(self, train: TrainConfig, device_type: str) -> list[torch.optim.Optimizer]:
        """AdamW with weight decay on matrices only; with `muon`, Muon takes the hidden matrices."""
        hidden = [p for n, p in self.named_parameters() if p.dim() == 2 and n.startswith("blocks.")]
        embeddings = [p for n, p in self.named_parameters() if p.dim() == 2 and not n.startswith("blocks.")]
        vectors = [p for p in self.parameters() if p.dim() < 2]
        fused = device_type in ("cuda", "cpu")
        adam_kw = dict(lr=train.lr, betas=(train.beta1, train.beta2), eps=1e-8, fused=fused)
        if train.optimizer == "muon":
            muon = Muon(hidden, lr=train.muon_lr, weight_decay=train.weight_decay)
            adamw = torch.optim.AdamW(
                [{"params": embeddings, "weight_decay": 0.0}, {"params": vectors, "weight_decay": 0.0}], **adam_kw
            )
            return [adamw, muon]
        groups = [
            {"params": hidden, "weight_decay": train.weight_decay},
            {"params": embeddings + vectors, "weight_decay": 0.0},
        ]
        return [torch.optim.AdamW(groups, **adam_kw)]


def layer_weights(model: GPT) -> list[tuple[Any, ...]]:
    """Per block: attention norm, qkv, projection, MLP norm, gate-up and down weights (the decoders' lookups)."""
    return [
        (
            b.attn_norm.weight,
            matrix(b.attn.qkv),
            matrix(b.attn.proj),
            b.mlp_norm.weight,
            matrix(b.mlp.gate_up),
            matrix(b.mlp.down),
        )
        for b in model.blocks
    ]


def matrix(linear: nn.Module) -> Any:
    """What the decoders multiply by: a Linear's weight, or a quantized Linear itself (core/chat/quantize.py),
    which multiplies on its own (`m(x)`, `m.mv(v)`)."""
    return linear.weight if isinstance(linear, nn.Linear) else linear


def _mv(w: Any, v: torch.Tensor) -> torch.Tensor:
    return torch.mv(w, v) if isinstance(w, torch.Tensor) else w.mv(v)


def _addmv(x: torch.Tensor, w: Any, v: torch.Tensor) -> torch.Tensor:
    """x + w v."""
    return torch.addmv(x, w, v) if isinstance(w, torch.Tensor) else x + w.mv(v)


def _linear(x: torch.Tensor, w: Any) -> torch.Tensor:
    return F.linear(x, w) if isinstance(w, torch.Tensor) else w(x)


def _addmm(x: torch.Tensor, y: torch.Tensor, w: Any) -> torch.Tensor:
    """x + y wᵀ, rows at a time."""
    return torch.addmm(x, y, w.t()) if isinstance(w, torch.Tensor) else x + w(y)


class Decoder:
    """One sequence, one token at a time: `GPT.forward` at batch 1 and length 1, in half the calls.

    Generation spends its time here, and at small widths that time goes to kernel calls and Python,
    not arithmetic. Same math as `forward`: vectors instead of (batch, time) tensors, the RMS scale
    applied after each matrix (one number per row), residual additions folded into the matrix
    products as biases, weights looked up once per generation instead of through modules each step.
    """

    def __init__(self, model: GPT, cache: KVCache) -> None:
        config = model.config
        self.cache, self.config, self.model = cache, config, model
        self.blocks, self.head = layer_weights(model), matrix(model.lm_head)
        self.on_cpu = model.embed.weight.device.type == "cpu"

    def _inv_rms(self, x: torch.Tensor) -> float | torch.Tensor:
        """1 / rms(x): a Python number on the CPU (fewer calls), a 0-d tensor elsewhere (no sync)."""
        squares = x.dot(x) if x.dtype == torch.float32 else x.float().pow(2).sum()
        if self.on_cpu:
            return (squares.item() / self.config.n_embd + self.config.norm_eps) ** -0.5
        return torch.rsqrt(squares / self.config.n_embd + self.config.norm_eps)

    def step(self, token: int) -> torch.Tensor:
        """Feed `token` at the next position; the logits over the vocabulary for the one after."""
        cache, config, model = self.cache, self.config, self.model
        pos = cache.pos
        if pos >= config.context:
            raise ValueError(f"sequence of {pos + 1} tokens exceeds the context of {config.context}")
        h, kv, hd, hidden = config.n_head, config.n_kv_head, config.head_dim, config.mlp_hidden
        cos, sin = model.rope_cos[pos], model.rope_sin[pos]
        x = model.embed.weight[token]
        for i, (attn_norm, qkv_w, proj_w, mlp_norm, gate_up_w, down_w) in enumerate(self.blocks):
            qkv = _mv(qkv_w, x * attn_norm).mul_(self._inv_rms(x))
            qk, v = qkv.view(h + 2 * kv, hd).split((h + kv, kv))
            q, k = apply_rope(qk, cos, sin).split((h, kv))
            keys, values = cache.put(i, k, v)
            y = F.scaled_dot_product_attention(q.view(1, h, 1, hd), keys, values, enable_gqa=kv != h)
            x = _addmv(x, proj_w, y.view(-1))
            gate, up = _mv(gate_up_w, x * mlp_norm).mul_(self._inv_rms(x)).split(hidden)
            x = _addmv(x, down_w, F.silu(gate).mul_(up))
        cache.pos += 1
        return _mv(self.head, x * model.norm.weight).mul_(self._inv_rms(x))


class BatchDecoder:
    """Many sequences, one token each per step, each at its own position: the server's forward.

    Sequence r lives in row r of a KVCache with `positions[r]` tokens already in it (rows 0..R-1 are
    the active ones, so the cache is read through views, not copies). One matrix product per layer
    serves every row, which is what makes decoding many sequences cost little more than one. Same math
    as `forward`, with the weights looked up once instead of through modules each step.
    """

    def __init__(self, model: GPT, cache: KVCache) -> None:
        self.model, self.cache, self.config = model, cache, model.config
        self.blocks, self.head = layer_weights(model), matrix(model.lm_head)

    def step(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Feed tokens (R,) at positions (R,) of rows 0..R-1; the logits (R, vocab) for each next token."""
        model, cache, config = self.model, self.cache, self.config
        rows, width, eps = len(tokens), (config.n_embd,), config.norm_eps
        h, kv, hd, hidden = config.n_head, config.n_kv_head, config.head_dim, config.mlp_hidden
        end = int(positions.max()) + 1
        if end > config.context:
            raise ValueError(f"sequence of {end} tokens exceeds the context of {config.context}")
        cos, sin = model.rope_cos[positions, None], model.rope_sin[positions, None]  # (rows, 1, head_dim)
        index = torch.arange(rows, device=tokens.device)
        mask = None  # rows at one position attend to every key so far; others see only their own past
        if int(positions.min()) + 1 != end:
            mask = (torch.arange(end, device=tokens.device) <= positions[:, None])[:, None, None]
        x = F.embedding(tokens, model.embed.weight)
        for i, (attn_norm, qkv_w, proj_w, mlp_norm, gate_up_w, down_w) in enumerate(self.blocks):
            qkv = _linear(F.rms_norm(x, width, attn_norm, eps), qkv_w).view(rows, h + 2 * kv, hd)
            qk, v = qkv.split((h + kv, kv), dim=1)
            q, k = apply_rope(qk, cos, sin).split((h, kv), dim=1)
            cache.k[i, index, :, positions] = k
            cache.v[i, index, :, positions] = v
            keys, values = cache.k[i, :rows, :, :end], cache.v[i, :rows, :, :end]
            y = F.scaled_dot_product_attention(q[:, :, None], keys, values, attn_mask=mask, enable_gqa=kv != h)
            x = _addmm(x, y.view(rows, -1), proj_w)
            gate, up = _linear(F.rms_norm(x, width, mlp_norm, eps), gate_up_w).split(hidden, dim=-1)
            x = _addmm(x, F.silu(gate).mul_(up), down_w)
        return _linear(F.rms_norm(x, width, model.norm.weight, eps), self.head).float()
