"""The plan: the model and recipe that give the best model a corpus and a budget (minutes or tokens) allow here.

The size dial's depth is chosen so that the tokens the run can see, at this machine's measured speed, come to
TOKENS_PER_PARAM per parameter (`compute_params`): the best runs of bench/planner_sweep.py. Speeds come from
probes (core/plan/probe.py) at PROBE_DEPTHS, a straight line of seconds per token against FLOPs per token
between them, and a probe of the chosen depth itself, so that the expected speed is measured, not guessed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from core.config import ModelConfig, TrainConfig, count_params
from core.data.corpus import Corpus
from core.errors import SLMError
from core.plan.probe import Machine, Probe, ProbeOutOfMemory, machine_device
from core.plan.rules import (
    COMPILE_FROM_MINUTES,
    DROPOUT,
    DROPOUT_FROM_EPOCHS,
    PROBE_DEPTHS,
    TOKENS_PER_PARAM,
    TRAIN_SHARE,
    recipe,
    vocab_for,
)
from core.plan.shape import DEPTHS, compute_params, flops_per_token, model_shape
from core.workspace import Workspace

MIN_STEPS = 20  # a plan with fewer steps than this is no plan: the budget is too small


@dataclass
class Plan:
    """A run's model and training settings, what it should see and take, and why each choice was made."""

    model: ModelConfig
    train: dict[str, Any]  # TrainConfig fields
    tokens: int  # training tokens the run is expected to see
    tokens_per_s: float  # measured at this shape
    seconds: float  # of training, expected
    corpus_tokens: int  # of the training split, estimated
    probed: list[int] = field(default_factory=list)  # depths whose speed the plan knows (probed or cached)
    reasons: list[tuple[str, str, str]] = field(default_factory=list)  # (setting, value, why)

    @property
    def epochs(self) -> float:
        return self.tokens / max(1, self.corpus_tokens)


class _Speeds:
    """Tokens a second at any depth: measured where probed, else on the line between the nearest two measured
    (seconds per token against FLOPs per token)."""

    def __init__(self, probe: Probe, vocab: int, rows: int) -> None:
        self.probe, self.vocab, self.rows = probe, vocab, rows
        self.known: dict[int, float] = {}
        self.too_big = max(DEPTHS) + 1  # the smallest depth that ran out of memory

    def measure(self, depth: int) -> None:
        if depth in self.known or depth >= self.too_big:
            return
        model = model_shape(depth, self.vocab)
        try:
            self.known[depth] = self.probe.speed(model, TrainConfig(**recipe(model, self.rows)))
        except ProbeOutOfMemory as e:
            if depth == min(DEPTHS):
                raise SLMError(f"the smallest model does not fit: {e}; free memory there or use --device cpu") from None
            self.too_big = min(self.too_big, depth)

    def __call__(self, depth: int) -> float:
        if depth in self.known:
            return self.known[depth]
        points = sorted((flops_per_token(model_shape(d, self.vocab)), 1 / s) for d, s in self.known.items())
        x = flops_per_token(model_shape(depth, self.vocab))
        if len(points) == 1:
            return points[0][0] / (points[0][1] * x)
        i = min(max(1, sum(p[0] < x for p in points)), len(points) - 1)  # the segment holding x, or the nearest
        (x0, y0), (x1, y1) = points[i - 1], points[i]
        slope = max(0.0, (y1 - y0) / (x1 - x0))
        return 1 / max(y0 * 1e-3, y0 + slope * (x - x0))


def make_plan(
    corpus_bytes: int,
    probe: Probe,
    *,
    minutes: float | None = None,
    max_tokens: int | None = None,
    vocab_size: int | None = None,
    val_fraction: float = 0.1,
) -> Plan:
    """The plan for `corpus_bytes` of text (duplicates left out) within `minutes` of training, else `max_tokens`."""
    if minutes is None and max_tokens is None:
        raise SLMError("a plan needs a budget: give --max-minutes M or --max-tokens N")
    vocab, vocab_why = (vocab_size, "as --vocab-size asks") if vocab_size else vocab_for(corpus_bytes)
    corpus_tokens = int(corpus_bytes * (1 - val_fraction) / 4)  # ~4 bytes a token, as `slm data` estimates
    rows = 16 if probe.machine.kind == "cpu" else 64
    speeds = _Speeds(probe, vocab, rows)
    for depth in PROBE_DEPTHS:
        speeds.measure(depth)
    if not speeds.known:  # none of them fits: the smallest model must, or nothing does
        speeds.measure(min(DEPTHS))
    seconds = minutes * 60 * TRAIN_SHARE if minutes else None  # a time budget plans by time; tokens then only bound

    def tokens_at(depth: int) -> float:
        return seconds * speeds(depth) if seconds else float(max_tokens)

    def fit(depth: int) -> float:  # distance from the fitted tokens per parameter, in log
        return abs(math.log(tokens_at(depth) / compute_params(model_shape(depth, vocab)) / TOKENS_PER_PARAM))

    depth = 0
    for _ in range(4):  # probe the chosen depth, then choose again with that measurement
        depth = min((d for d in DEPTHS if d < speeds.too_big), key=lambda d: (fit(d), -d))
        if depth in speeds.known:
            break
        speeds.measure(depth)
    model = model_shape(depth, vocab)
    train = recipe(model, rows)
    step_tokens = rows * model.context
    tokens = int(tokens_at(depth))
    steps = tokens // step_tokens
    if steps < MIN_STEPS:
        need = f"{MIN_STEPS * step_tokens / speeds(depth) / 60 / TRAIN_SHARE:.1f} minutes" if seconds else None
        raise SLMError(
            f"a budget of {tokens:,} tokens is {steps} steps of the smallest fitting model: give at least "
            + (need or f"--max-tokens {MIN_STEPS * step_tokens}")
        )
    plan = Plan(model, train, tokens, speeds(depth), tokens / speeds(depth), corpus_tokens, [])
    _finish(plan, steps, minutes, vocab_why, speeds)
    return plan


def _finish(plan: Plan, steps: int, minutes: float | None, vocab_why: str, speeds: _Speeds) -> None:
    """Set the limits, evaluations, regularisation and compile of `plan.train`, and say why for each choice."""
    m, t = plan.model, plan.train
    t["warmup_steps"] = min(t["warmup_steps"], steps // 4)
    t["eval_interval"] = max(10, steps // 4)
    if minutes:
        t |= {"max_minutes": minutes, "max_steps": 4 * steps}  # the clock ends the run; steps only bound it
    else:
        t |= {"max_steps": steps}
    budget_minutes = minutes or plan.seconds / 60
    t["compile"] = budget_minutes >= COMPILE_FROM_MINUTES.get(speeds.probe.machine.kind, math.inf)
    if plan.epochs >= DROPOUT_FROM_EPOCHS:
        plan.model = m = replace(m, dropout=DROPOUT)
    ratio = plan.tokens / compute_params(m)
    why = plan.reasons
    why.append(
        (
            "shape",
            f"depth {m.n_layer}: {m.n_layer} layers x {m.n_embd} wide, {m.n_head} heads, MLP {m.mlp_hidden}, "
            f"context {m.context}",
            f"{ratio:.1f} tokens per parameter in this budget, nearest the sweep's best {TOKENS_PER_PARAM:g}",
        )
    )
    why.append(("parameters", f"{count_params(m):,}", f"{compute_params(m):,} without the input embedding"))
    why.append(("vocabulary", f"{m.vocab_size}", vocab_why))
    why.append((
        "batch",
        f"{t['batch_size']} x {m.context} tokens, accumulation {t.get('grad_accum', 1)}",
        "more steps beat bigger batches in minutes on a CPU" if speeds.probe.machine.kind == "cpu"
        else "larger batches keep a GPU busy (not fitted yet: no GPU sweep)",
    ))  # fmt: skip
    why.append(
        (
            "tokens",
            f"{plan.tokens:,} ({plan.epochs:.1f} epochs)",
            f"{plan.tokens_per_s:,.0f} tokens/s x {plan.seconds:.0f} s; the training split holds ~{plan.corpus_tokens:,}",
        )
    )
    why.append(("peak lr", f"{t['lr']:.2g}", "toy's tuned 3e-3 at 128 wide, scaled by sqrt(128 / width) and batch"))
    why.append(
        (
            "schedule",
            f"warmup {t['warmup_steps']} steps, {t.get('schedule', 'wsd')} decay over the last 40%",
            "the decay follows the clock" if minutes else f"over {steps} steps",
        )
    )
    why.append((
        "regularisation",
        f"weight decay {t['weight_decay']}, " + (f"dropout {m.dropout:g}" if m.dropout else "no dropout"),
        f"dropout {DROPOUT:g} from {DROPOUT_FROM_EPOCHS} epochs on: it won 0.08-0.21 bits/byte at 20-23 epochs and "
        "lost 0.03-0.05 at 10 and 16 (bench/PLANNER.md)",
    ))  # fmt: skip
    why.append(
        (
            "evaluations",
            f"every {t['eval_interval']} steps" + (", and 8 on the clock" if minutes else ""),
            "the last at the very end; best is kept",
        )
    )
    kind = speeds.probe.machine.kind
    compile_from = COMPILE_FROM_MINUTES.get(kind)
    why.append((
        "compile",
        "on" if t["compile"] else "off",
        f"pays off from {compile_from:g} minutes on {kind}" if compile_from else f"not used on {kind}",
    ))  # fmt: skip
    probes = ", ".join(f"depth {d}" for d in sorted(speeds.known))
    plan.probed = sorted(speeds.known)
    busy = "; other work held the cores, so it is not kept: plan again when quiet" if speeds.probe.busy else ""
    why.append(
        ("speed", f"{plan.tokens_per_s:,.0f} tokens/s", f"measured on {speeds.probe.machine.name} ({probes}){busy}")
    )


def plan_for(workspace: Workspace, settings: dict[str, Any], fresh: bool = False) -> Plan:
    """The plan for a run of `settings` (TrainConfig fields, and `vocab_size`) on the workspace's corpus: its
    selection, duplicates left out unless kept, measured on its device (`fresh`: probe again)."""
    cfg = TrainConfig(**{k: v for k, v in settings.items() if k != "vocab_size"})
    corpus = Corpus.scan(workspace.data_dir, cfg.data, cfg.decode_errors, keep_duplicates=cfg.keep_duplicates)
    text_bytes = corpus.total_bytes - (0 if cfg.keep_duplicates else corpus.duplicates.bytes)
    machine = Machine(machine_device(cfg.device), cfg.precision, cfg.threads or None)
    return make_plan(
        text_bytes,
        Probe(machine, fresh=fresh),
        minutes=cfg.max_minutes,
        max_tokens=cfg.max_tokens,
        vocab_size=settings.get("vocab_size"),
        val_fraction=cfg.val_fraction,
    )


def _many(n: int, what: str) -> str:
    return f"{n} {what}{'s' * (n != 1)}"
