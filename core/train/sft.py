"""Supervised fine-tuning (SFT) on conversations: the loss is taken only on what the assistant says.

Each conversation is rendered with the chat template (`core.tokenizer.chat_template.render_chat_masked`) into token ids and a mask
that is 1 on the assistant's replies and their closing `<|end|>`. Batches are padded, not packed: every row
holds one conversation from position 0, exactly as the chat pane presents it, so no conversation attends to
another; rows are padded to one width for the whole run (the longest conversation, at most the context) and
targets are -1 (no loss) wherever the next token is not the assistant's. A conversation longer than the
context is cut at the context: its end is not learned.

`SFTTrainer` is the Trainer with this data: the same loop, events, `metrics.jsonl`, checkpoints, pause, stop
and resume. Its checkpoints record `"chat": true`, so the chat pane talks to them in chat mode.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

import torch

from core import atomic
from core.chat.generate import Generator
from core.chat.sampling import SamplingSettings
from core.data.conversations import DialogFormat, Message, last_user_message, read_conversations, resolve_files
from core.errors import SLMError
from core.evaluate import EvalResult, score_batches
from core.tokenizer.bpe import Tokenizer
from core.tokenizer.chat_template import END, has_chat_tokens, prompt_ids, render_chat_masked
from core.train.events import Notice, SampleText
from core.train.trainer import Trainer

Example = tuple[list[int], list[int]]  # token ids and their loss mask (1: learn to write this token)


def held_out(key: str, fraction: float, seed: int) -> bool:
    """A stable, seeded choice of the validation side for an item named by `key`."""
    digest = hashlib.blake2b(f"{seed}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < fraction


def split_items(keys: list[str], fraction: float, seed: int, what: str) -> tuple[list[int], list[int]]:
    """Indices of the training and validation items; each side gets at least one, so two are needed."""
    if len(keys) < 2:
        raise SLMError(f"{len(keys)} {what} cannot be split into training and validation: add more")
    val = [i for i, key in enumerate(keys) if held_out(key, fraction, seed)]
    if not val:
        val = [len(keys) - 1]
    if len(val) == len(keys):
        val = val[1:]
    chosen = set(val)
    return [i for i in range(len(keys)) if i not in chosen], val


def conversation_example(messages: list[Message], tokenizer: Tokenizer, context: int) -> tuple[Example, bool]:
    """The conversation's ids and mask, cut to `context + 1` tokens; True when it was cut."""
    ids, mask = render_chat_masked(messages, tokenizer)
    return (ids[: context + 1], mask[: context + 1]), len(ids) > context + 1


def pad_rows(examples: list[Example], width: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets of shape (rows, width): targets are the next tokens where the mask is 1, else -1."""
    x = torch.full((len(examples), width), pad_id, dtype=torch.long)
    y = torch.full((len(examples), width), -1, dtype=torch.long)
    for row, (ids, mask) in enumerate(examples):
        n = min(len(ids) - 1, width)
        x[row, :n] = torch.tensor(ids[:n])
        y[row, :n] = torch.tensor([t if m else -1 for t, m in zip(ids[1 : n + 1], mask[1 : n + 1], strict=True)])
    return x, y


def row_width(examples: list[Example], context: int) -> int:
    return min(context, max(len(ids) for ids, _ in examples) - 1)


@dataclass
class ExampleSplit:
    examples: list[Example]

    @property
    def tokens(self) -> int:
        return sum(len(ids) for ids, _ in self.examples)


@dataclass
class ChatData:
    """Encoded conversations, split; shaped like `core.train.tokens.TokenData` for the Trainer."""

    train: ExampleSplit
    val: ExampleSplit
    corpus: str  # fingerprint of the conversation files
    val_prompts: list[list[Message]]  # a held-out conversation up to its first reply, for samples

    def describe(self) -> dict[str, Any]:
        return {
            "train_tokens": self.train.tokens,
            "val_tokens": self.val.tokens,
            "corpus": self.corpus,
            "train_conversations": len(self.train.examples),
            "val_conversations": len(self.val.examples),
        }


class ExampleBatches:
    """Random rows of padded examples, reproducible: the generator's state is the data position."""

    def __init__(self, examples: list[Example], batch_size: int, width: int, pad_id: int, seed: int, device) -> None:
        self.examples, self.batch_size, self.width, self.pad_id = examples, batch_size, width, pad_id
        self.device = device
        self.generator = torch.Generator().manual_seed(seed)

    def pick(self) -> list[Example]:
        rows = torch.randint(len(self.examples), (self.batch_size,), generator=self.generator).tolist()
        return [self.examples[i] for i in rows]

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = pad_rows(self.pick(), self.width, self.pad_id)
        return x.to(self.device), y.to(self.device)


def sample_reply(trainer: Trainer, conversation: list[Message], mode: str = "chat") -> None:
    """Emit the trainer's model's greedy reply to a held-out conversation as a SampleText."""
    generator = Generator(trainer.model, trainer.tokenizer, trainer.device)
    stop = [END] if mode == "chat" else []
    settings = SamplingSettings(temperature=0.0, max_tokens=trainer.cfg.sample_tokens, stop=stop)
    answer = generator.generate(prompt_ids(conversation, trainer.tokenizer, mode), settings)
    trainer.model.train()
    trainer.emit(SampleText(trainer.step, f"{last_user_message(conversation)}\n→ {answer}"))


def first_prompt(messages: list[Message]) -> list[Message]:
    """The conversation up to (not including) its first assistant reply."""
    end = next(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return messages[:end]


class SFTTrainer(Trainer):
    """Fine-tune a checkpoint (`init_from`) on the conversation files in `train.data`."""

    objective = "sft"
    chat = True  # its checkpoints are chat models

    def __init__(self, *args: Any, dialog: DialogFormat | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.dialog = dialog or DialogFormat()

    def _prepare_data(self) -> None:
        cfg = self.cfg
        if self.parent_ckpt is None:
            raise SLMError("supervised fine-tuning starts from a checkpoint: give --from CKPT")
        if self.resume:
            self.dialog = DialogFormat(**self.run_info.get("dialog", {}))
        else:
            self.tokenizer = self.parent_ckpt.tokenizer
        if not has_chat_tokens(self.tokenizer):
            raise SLMError(f"the tokenizer of {self.parent_ckpt.path} has no chat tokens (<|user|>, <|end|>…)")
        found = read_conversations(resolve_files(self.workspace.data_dir, cfg.data), self.dialog)
        if found.without_reply:
            self.emit(Notice(f"skipped {found.without_reply} conversations without an assistant reply", "warning"))
        if found.text_records:
            self.emit(Notice(f"skipped {found.text_records} plain text records (no messages)", "warning"))
        context = self.model_config.context
        conversations, examples, cut = [], [], 0
        for conversation in found.conversations:
            example, was_cut = conversation_example(conversation, self.tokenizer, context)
            cut += was_cut
            if any(example[1][1:]):  # a reply starts within the context
                conversations.append(conversation)
                examples.append(example)
        total = len(found.conversations)
        if cut:
            self.emit(Notice(f"{cut} of {total} conversations are longer than the context ({context}): cut"))
        if len(examples) < total:
            left_out = total - len(examples)
            self.emit(Notice(f"left out {left_out} conversations whose reply starts after the context", "warning"))
        keys = [json.dumps(c, sort_keys=True) for c in conversations]
        train, val = split_items(keys, cfg.val_fraction, cfg.split_seed, "conversations")
        self.data = ChatData(
            ExampleSplit([examples[i] for i in train]),
            ExampleSplit([examples[i] for i in val]),
            found.fingerprint,
            [first_prompt(conversations[i]) for i in val],
        )
        width = row_width(examples, context)
        pad = self.tokenizer.eot_id or 0
        self.batches = ExampleBatches(self.data.train.examples, cfg.batch_size, width, pad, cfg.seed + 1, self.device)

    @property
    def tokens_per_step(self) -> int:
        return self.cfg.batch_size * self.cfg.grad_accum * self.batches.width

    def _start_run_folder(self) -> None:
        super()._start_run_folder()
        self.run_info["dialog"] = asdict(self.dialog)
        atomic.write_json(self.run_dir / "run.json", self.run_info)

    def _meta(self, kind: str) -> dict[str, Any]:
        return {**super()._meta(kind), "chat": self.chat}

    def _evaluate(self, limit: int | None = None) -> EvalResult:
        """Loss and bits per byte of the assistant's tokens in held-out conversations (up to `limit`, by default
        `eval_tokens`)."""
        examples, tokens, limit = [], 0, limit or self.cfg.eval_tokens
        for example in self.data.val.examples:
            if tokens >= limit:
                break
            examples.append(example)
            tokens += sum(example[1])
        width, size = self.batches.width, self.cfg.batch_size
        batches = (pad_rows(examples[i : i + size], width, self.batches.pad_id) for i in range(0, len(examples), size))
        return score_batches(self.model, batches, self.byte_lengths, self.amp)

    def _sample(self) -> None:
        prompts = self.data.val_prompts
        sample_reply(self, prompts[(self.step // self.cfg.sample_interval) % len(prompts)])
