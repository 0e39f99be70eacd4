"""Direct Preference Optimisation (DPO) from rated answers: make good answers likelier than bad ones.

Preference pairs come from the ratings database (`core.chat.feedback`): for each conversation, every answer rated
good against every answer rated bad. The loss (Rafailov et al., 2023) is

    -log sigmoid(beta * ((log p(chosen) - log ref(chosen)) - (log p(rejected) - log ref(rejected))))

where log p sums the policy's log-probabilities of the answer's tokens given the conversation, and the
reference is the starting checkpoint, frozen: its log-probabilities are computed once before training.
Pairs are split by conversation: held-out conversations measure the chosen-minus-rejected log-probability
margin and the win rate (how often the chosen answer is the likelier one) before and after.

`DPOTrainer` is the Trainer with this objective: the same loop, events, checkpoints, pause, stop and resume.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from core import atomic
from core.chat.feedback import FeedbackDB, preference_pairs
from core.checkpoint import load_checkpoint, load_weights
from core.data.conversations import Message
from core.device import autocast
from core.errors import SLMError
from core.evaluate import EvalResult
from core.listing import resolve_checkpoint
from core.model import GPT
from core.tokenizer.bpe import Tokenizer
from core.tokenizer.chat_template import is_chat_model, prompt_ids, render_chat_masked
from core.train.events import Notice, PreferenceMetrics
from core.train.sft import Example, pad_rows, row_width, sample_reply, split_items
from core.train.trainer import Trainer


def answer_example(conversation: list[Message], mode: str, answer: str, tokenizer: Tokenizer) -> Example:
    """Ids of the conversation followed by the answer, masked to the answer (and, in chat mode, its <|end|>)."""
    if mode == "chat":
        return render_chat_masked([*conversation, {"role": "assistant", "content": answer}], tokenizer)
    prompt, reply = prompt_ids(conversation, tokenizer, mode), tokenizer.encode(answer)
    return prompt + reply, [0] * len(prompt) + [1] * len(reply)


def fit_context(example: Example, context: int) -> Example:
    """Keep the newest `context + 1` tokens (the answer's end must stay: it is what is compared)."""
    ids, mask = example
    return ids[-(context + 1) :], mask[-(context + 1) :]


def sequence_logps(model: GPT, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per row, the summed log-probability of the scored targets (those not -1)."""
    _, losses = model(x, y, reduction="none")
    return -losses.view(x.shape[0], -1).sum(dim=1)


def dpo_loss(policy: torch.Tensor, reference: torch.Tensor, beta: float) -> torch.Tensor:
    """`policy` and `reference` are (2, pairs) log-probabilities: row 0 the chosen answers, row 1 the rejected."""
    margin = (policy[0] - reference[0]) - (policy[1] - reference[1])
    return -F.logsigmoid(beta * margin).mean()


def margin_and_win_rate(logps: torch.Tensor) -> tuple[float, float]:
    """Mean chosen-minus-rejected log-probability and the share of pairs whose chosen answer is likelier."""
    diff = logps[0] - logps[1]
    return float(diff.mean()), float((diff > 0).float().mean())


@dataclass
class PairSplit:
    chosen: list[Example]
    rejected: list[Example]
    reference: torch.Tensor  # (2, pairs): the frozen reference's log-probabilities

    @property
    def tokens(self) -> int:
        return sum(len(ids) for ids, _ in self.chosen + self.rejected)


@dataclass
class PairData:
    """Encoded preference pairs, split by conversation; shaped like `core.train.tokens.TokenData` for the Trainer."""

    train: PairSplit
    val: PairSplit
    corpus: str  # fingerprint of the pairs
    val_prompts: list[tuple[list[Message], str]]  # held-out (conversation, mode), for samples

    def describe(self) -> dict[str, Any]:
        return {
            "train_tokens": self.train.tokens,
            "val_tokens": self.val.tokens,
            "corpus": self.corpus,
            "train_pairs": len(self.train.chosen),
            "val_pairs": len(self.val.chosen),
        }


class PairBatches:
    """Random training pairs, reproducible: the generator's state is the data position."""

    def __init__(self, split: PairSplit, batch_size: int, width: int, pad_id: int, seed: int, device) -> None:
        self.split, self.batch_size, self.width, self.pad_id = split, batch_size, width, pad_id
        self.device = device
        self.generator = torch.Generator().manual_seed(seed)

    def next(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Inputs and targets of the chosen rows then the rejected rows, and the pairs' reference log-probs."""
        picked = torch.randint(len(self.split.chosen), (self.batch_size,), generator=self.generator)
        rows = [self.split.chosen[i] for i in picked.tolist()] + [self.split.rejected[i] for i in picked.tolist()]
        x, y = pad_rows(rows, self.width, self.pad_id)
        return x.to(self.device), y.to(self.device), self.split.reference[:, picked].to(self.device)


class DPOTrainer(Trainer):
    """Preference-tune a checkpoint (`init_from`, also the frozen reference) on the workspace's rated pairs."""

    objective = "dpo"
    distributed = False  # preference pairs are few: one process trains them
    chat = False  # set from the starting checkpoint: preference tuning keeps a chat model a chat model

    def __init__(self, *args: Any, beta: float = 0.1, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if beta <= 0:
            raise SLMError("--beta must be positive")
        self.beta = beta

    def _prepare_data(self) -> None:
        cfg = self.cfg
        if self.parent_ckpt is None:
            raise SLMError("DPO starts from a checkpoint, which is also its reference: give --from CKPT")
        if self.resume:
            self.beta = float(self.run_info["dpo"]["beta"])
            reference = load_checkpoint(resolve_checkpoint(self.workspace, cfg.init_from))
        else:
            reference = self.parent_ckpt
            self.tokenizer = reference.tokenizer
        self.chat = is_chat_model(self.tokenizer, self.parent_ckpt.meta)
        problems: list[str] = []
        pairs = preference_pairs(FeedbackDB.for_workspace(self.workspace).ratings(problems))
        for problem in problems:
            self.emit(Notice(f"{problem}: left out", "warning"))
        if len({p.key for p in pairs}) < 2:
            raise SLMError(
                f"DPO needs good and bad answers to at least 2 different prompts ({len(pairs)} pairs found): in the "
                "chat pane rate answers with /rate + and /rate -, or /retry then /pick 1|2"
            )
        context = self.model_config.context
        chosen = [fit_context(answer_example(p.conversation, p.mode, p.chosen, self.tokenizer), context) for p in pairs]
        rejected = [
            fit_context(answer_example(p.conversation, p.mode, p.rejected, self.tokenizer), context) for p in pairs
        ]
        width = row_width(chosen + rejected, context)
        pad = self.tokenizer.eot_id or 0
        ref_model = GPT(reference.config).to(self.device)
        load_weights(ref_model, reference.state, reference.path)
        logps = self._logps(ref_model, chosen, rejected, width, pad)
        del ref_model
        keys = sorted({p.key for p in pairs})
        _, val_keys = split_items(keys, cfg.val_fraction, cfg.split_seed, "prompts")
        held = {keys[i] for i in val_keys}
        train = [i for i, p in enumerate(pairs) if p.key not in held]
        val = [i for i, p in enumerate(pairs) if p.key in held]
        fingerprint = hashlib.blake2b(
            "\0".join(f"{p.key}{p.chosen}{p.rejected}" for p in pairs).encode(), digest_size=16
        )
        self.data = PairData(
            self._split(train, chosen, rejected, logps),
            self._split(val, chosen, rejected, logps),
            fingerprint.hexdigest(),
            [(pairs[i].conversation, pairs[i].mode) for i in val],
        )
        self.before = margin_and_win_rate(self.data.val.reference)
        self.emit(Notice(f"{len(pairs)} preference pairs: {len(train)} for training, {len(val)} held out"))
        self.batches = PairBatches(self.data.train, cfg.batch_size, width, pad, cfg.seed + 1, self.device)

    @staticmethod
    def _split(indices: list[int], chosen: list[Example], rejected: list[Example], logps: torch.Tensor) -> PairSplit:
        return PairSplit([chosen[i] for i in indices], [rejected[i] for i in indices], logps[:, indices])

    def _logps(self, model: GPT, chosen: list[Example], rejected: list[Example], width: int, pad: int) -> torch.Tensor:
        """(2, pairs) summed answer log-probabilities under `model`, in evaluation mode."""
        was_training = model.training
        model.eval()
        out = []
        with torch.no_grad():
            for examples in (chosen, rejected):
                parts = []
                for i in range(0, len(examples), self.cfg.batch_size):
                    x, y = pad_rows(examples[i : i + self.cfg.batch_size], width, pad)
                    with autocast(self.device, self.amp):
                        parts.append(sequence_logps(model, x.to(self.device), y.to(self.device)).float().cpu())
                out.append(torch.cat(parts))
        model.train(was_training)
        return torch.stack(out)

    @property
    def tokens_per_step(self) -> int:
        return 2 * self.cfg.batch_size * self.cfg.grad_accum * self.batches.width

    def _start_run_folder(self) -> None:
        super()._start_run_folder()
        margin, win_rate = self.before
        self.run_info["dpo"] = {"beta": self.beta, "before": {"margin": margin, "win_rate": win_rate}}
        atomic.write_json(self.run_dir / "run.json", self.run_info)

    def _meta(self, kind: str) -> dict[str, Any]:
        return {**super()._meta(kind), "chat": self.chat}

    def _loop(self):
        if self.step == 0:  # the policy is still the reference: its held-out figures are the "before"
            self.emit(PreferenceMetrics(0, *self.before, len(self.data.val.chosen)))
        return super()._loop()

    def _batch_loss(self) -> torch.Tensor:
        x, y, reference = self.batches.next()
        logps = sequence_logps(self.train_model, x, y).float().view(2, -1)
        return dpo_loss(logps, reference, self.beta)

    def _evaluate(self, tokens: int | None = None) -> EvalResult:
        """Held-out DPO loss; its perplexity; bits per byte of the chosen answers; and margin and win rate (on
        every held-out pair: `tokens` is not used)."""
        val = self.data.val
        logps = self._logps(self.model, val.chosen, val.rejected, self.batches.width, self.batches.pad_id)
        loss = float(dpo_loss(logps, val.reference, self.beta))
        margin, win_rate = margin_and_win_rate(logps)
        self.last_metrics.update(dpo_margin=margin, dpo_win_rate=win_rate)
        self.emit(PreferenceMetrics(self.step, margin, win_rate, len(val.chosen)))
        byte_lengths = self.byte_lengths.tolist()
        answer_bytes = sum(byte_lengths[t] for ids, mask in val.chosen for t, m in zip(ids, mask, strict=True) if m)
        tokens = sum(sum(mask[1:]) for _, mask in val.chosen)
        bpb = float(-logps[0].sum()) / math.log(2) / max(answer_bytes, 1)
        return EvalResult(loss=loss, ppl=math.exp(min(loss, 50.0)), bpb=bpb, tokens=tokens)

    def _sample(self) -> None:
        sample_reply(self, *self.data.val_prompts[0])
