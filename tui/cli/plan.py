"""`slm plan`, and the `auto` preset of `slm train`: the planner's model and recipe for a budget, as text."""

from __future__ import annotations

import argparse
import os
from typing import Any

from tui.cli.flags import collect
from tui.cli.parser import ALL_TRAIN_FLAGS, MODEL_FLAGS


def plan_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The flags a plan depends on: budget, data, machine, and a vocabulary the user set."""
    settings = collect(args, ALL_TRAIN_FLAGS)
    if getattr(args, "vocab_size", None):
        settings["vocab_size"] = args.vocab_size
    return settings


def make_plan(args: argparse.Namespace, ws) -> Any:
    """The plan for these flags (under torchrun: rank 0's, handed to every rank)."""
    from core.plan.planner import plan_for

    if "WORLD_SIZE" not in os.environ:
        return plan_for(ws, plan_settings(args), getattr(args, "reprobe", False))
    from core.train.distributed import Dist

    dist = Dist.from_env(args.device or "auto")
    return dist.share(plan_for(ws, plan_settings(args)) if dist.main else None)


def plan_lines(plan) -> list[str]:
    """The plan as lines: each setting and its value, and why under it."""
    return [f"  {setting:<15} {value}\n  {'':<15} {why}" for setting, value, why in plan.reasons]


def cmd_plan(args: argparse.Namespace, ws) -> None:
    from tui.format import clock

    plan = make_plan(args, ws)
    budget = f"{args.max_minutes:g} minute{'s' * (args.max_minutes != 1)}" if args.max_minutes else None
    budget = budget or f"{args.max_tokens:,} tokens"
    print(f"plan for {budget} of training (expected {clock(plan.seconds)}):")
    print("\n".join(plan_lines(plan)))
    flags = f"--max-minutes {args.max_minutes:g}" if args.max_minutes else f"--max-tokens {args.max_tokens}"
    print(f"train it: slm train --preset auto {flags}")


def auto_configs(args: argparse.Namespace, ws) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model and training fields of the `auto` preset, printing the plan; flags given win over it."""
    import dataclasses

    plan = make_plan(args, ws)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one rank says it
        chose = "" if args.preset else " (a time budget and no --preset)"
        print(f"preset auto{chose}: the planner's model for this budget, corpus and machine")
        print("\n".join(plan_lines(plan)))
    model = {**dataclasses.asdict(plan.model), **collect(args, MODEL_FLAGS)}
    return model, {**plan.train, **collect(args, ALL_TRAIN_FLAGS)}
