"""Text generation: sampling settings, a KV-cached token loop, and a streaming text iterator.

`Generator` owns a model and its tokenizer. `Generator.stream(prompt, settings)` returns a
`Generation`: iterate it for text pieces as they are produced (never a split UTF-8 character); its
`finish_reason`, `truncated` and `new_tokens` tell what happened. The chat pane, `slm generate` and
sample text during training all use it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from core.chat.quantize import quantize
from core.chat.sampling import SamplingSettings
from core.checkpoint import Checkpoint, load_checkpoint, load_weights
from core.device import pick_device
from core.model import GPT, Decoder, KVCache
from core.tokenizer.bpe import Tokenizer


def column_major(model: GPT) -> None:
    """Store the matrices column by column (same values, transposed memory): on x86 CPUs MKL's
    matrix-vector product reads that layout up to twice as fast, and batched products gain too."""
    for name, p in model.named_parameters():
        if p.dim() == 2 and (name != "embed.weight" or model.config.tie_embeddings):
            p.data = p.data.t().contiguous().t()


def fit_prompt(ids: list[int], context: int) -> tuple[list[int], int]:
    """The prompt's newest `context - 1` tokens (room for one new one) and how many were dropped."""
    keep = context - 1
    return ids[-keep:], max(0, len(ids) - keep)


def sample_next(
    logits: torch.Tensor, settings: SamplingSettings, history: torch.Tensor | None, generator: torch.Generator
) -> int:
    """Pick one token id from the last position's logits (a 1-D tensor over the vocabulary)."""
    logits = logits.float()
    if not bool(torch.isfinite(logits).all()):  # a diverged model: its likeliest token, rather than a crash
        return int(torch.argmax(torch.nan_to_num(logits, nan=-math.inf)))
    if settings.repetition_penalty != 1.0 and history is not None and history.numel():
        logits = logits.clone()
        seen = torch.unique(history)
        scores = logits[seen]
        logits[seen] = torch.where(
            scores > 0, scores / settings.repetition_penalty, scores * settings.repetition_penalty
        )
    if settings.temperature == 0:
        return int(torch.argmax(logits))
    logits = logits / settings.temperature
    if settings.top_k and settings.top_k < logits.numel():
        kth = torch.topk(logits, settings.top_k).values[-1]
        logits[logits < kth] = float("-inf")
    probs = torch.softmax(logits, dim=-1)
    if settings.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        outside = torch.cumsum(sorted_probs, dim=-1) - sorted_probs > settings.top_p
        sorted_probs[outside] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator))


def sample_rows(
    logits: torch.Tensor,
    settings: list[SamplingSettings],
    histories: list[torch.Tensor | None],
    rngs: list[torch.Generator],
) -> list[int]:
    """`sample_next` for each row of logits (rows, vocab), with the same picks, in fewer calls.

    Rows that are plain (no top-k, top-p or repetition penalty) share one softmax, and greedy rows one
    argmax; the others, and a batch with a non-finite logit, go row by row.
    """
    plain = [not s.top_k and s.top_p >= 1.0 and s.repetition_penalty == 1.0 for s in settings]
    if not all(plain) or not bool(torch.isfinite(logits).all()):
        return [sample_next(row, s, h, g) for row, s, h, g in zip(logits, settings, histories, rngs, strict=True)]
    greedy = logits.argmax(dim=-1).tolist() if any(s.temperature == 0 for s in settings) else []
    temperatures = torch.tensor([s.temperature or 1.0 for s in settings], dtype=logits.dtype)
    probs = torch.softmax(logits / temperatures[:, None], dim=-1)
    return [
        greedy[r] if s.temperature == 0 else int(torch.multinomial(probs[r], 1, generator=g))
        for r, (s, g) in enumerate(zip(settings, rngs, strict=True))
    ]


class TextStream:
    """Token ids in, text out: never a split UTF-8 character, cut before a stop string, and why it ended.

    `push` each new token and print what it returns; once `finish_reason` is set, the text is over.
    """

    def __init__(self, tokenizer: Tokenizer, stop_ids: set[int], stops: list[str]) -> None:
        self.decoder = tokenizer.stream_decoder()
        self.stop_ids, self.stops = stop_ids, stops
        self.hold = max((len(s) for s in stops), default=1) - 1  # characters that may start a stop string
        self.pending = ""
        self.finish_reason = ""  # length | stop | eot | cancelled | error (a batch whose step failed)
        self.new_tokens = 0

    def push(self, token: int) -> str:
        """The text that `token` completes, held back while it may be the start of a stop string."""
        if token in self.stop_ids:
            return self.finish("eot")
        self.new_tokens += 1
        self.pending += self.decoder.push(token)
        cut = _find_stop(self.pending, self.stops)
        if cut is not None:
            self.finish_reason = "stop"
            return self.pending[:cut]
        if len(self.pending) <= self.hold:
            return ""
        ready, self.pending = (
            self.pending[: len(self.pending) - self.hold],
            self.pending[len(self.pending) - self.hold :],
        )
        return ready

    def finish(self, reason: str) -> str:
        """End the text for `reason`; what is still held back (up to a stop string in it)."""
        self.finish_reason = reason
        rest = self.pending + self.decoder.flush()
        self.pending = ""
        cut = _find_stop(rest, self.stops)
        if cut is not None:
            self.finish_reason = "stop"
            rest = rest[:cut]
        return rest


class Generation:
    """An iterator of text pieces, with what happened once it is exhausted."""

    def __init__(self, pieces: Callable[[Generation], Iterator[str]]) -> None:
        self.finish_reason = ""  # length | stop | eot | cancelled | context
        self.truncated = 0  # prompt tokens dropped from the left to fit the context
        self.prompt_tokens = 0
        self.new_tokens = 0
        self._pieces = pieces(self)

    def __iter__(self) -> Iterator[str]:
        return self._pieces

    def text(self) -> str:
        return "".join(self)


class Generator:
    """A model ready to generate: owns the weights, tokenizer and device."""

    def __init__(self, model: GPT, tokenizer: Tokenizer, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.config = model.config
        self.stop_ids = set(tokenizer.stop_ids)
        self.checkpoint: Checkpoint | None = None
        self.dtype = "f32"  # of the weights: f32, or int8 once quantized (core/chat/quantize.py)

    @classmethod
    def from_checkpoint(cls, path: Path, device: str = "auto", dtype: str = "f32") -> Generator:
        """The checkpoint at `path`, ready on `device` with its weights at `dtype` (core/chat/quantize.py)."""
        ckpt = load_checkpoint(path)
        model = GPT(ckpt.config)
        load_weights(model, ckpt.state, path)
        device = pick_device(device)
        if device.type == "cpu":
            column_major(model)
        generator = cls(quantize(model.to(device), dtype), ckpt.tokenizer, device)
        generator.checkpoint, generator.dtype = ckpt, dtype
        return generator

    # -- token loop ----------------------------------------------------------------------------

    @torch.inference_mode()
    def token_ids(
        self,
        prompt: list[int],
        settings: SamplingSettings,
        cancelled: Callable[[], bool] | None = None,
        use_cache: bool = True,
    ) -> Iterator[int]:
        """Yield new token ids. Past the context, the cache keeps the newest half and goes on."""
        ctx = self.config.context
        ids = list(prompt) or [self.tokenizer.eot_id or 0]
        generator = torch.Generator(device="cpu")
        generator.manual_seed(settings.seed if settings.seed is not None else torch.seed() % 2**63)
        dtype = next(self.model.parameters()).dtype
        cache = KVCache(self.config, 1, ctx, self.device, dtype) if use_cache else None
        # FSDP-sharded weights are gathered by module hooks, which the Decoder does not run
        sharded = hasattr(self.model.embed.weight, "full_tensor")
        decoder = Decoder(self.model, cache) if cache is not None and not sharded else None
        logits = self._forward(ids[-ctx:], cache)
        for _ in range(settings.max_tokens):
            if cancelled is not None and cancelled():
                return
            history = torch.tensor(ids[-ctx:]) if settings.repetition_penalty != 1.0 else None
            token = sample_next(logits.cpu(), settings, history, generator)
            yield token
            if token in self.stop_ids:
                return
            ids.append(token)
            if cache is None:
                logits = self._forward(ids[-ctx:], None)
            elif cache.pos >= ctx:  # full: restart from the newest half of the context
                cache.reset()
                logits = self._forward(ids[-(ctx // 2) :], cache)
            elif decoder is not None:
                logits = decoder.step(token)
            else:
                logits = self._forward([token], cache)

    def _forward(self, ids: list[int], cache: KVCache | None) -> torch.Tensor:
        idx = torch.tensor([ids], dtype=torch.long, device=self.device)
        logits, _ = self.model(idx, cache=cache)
        return logits[0, -1]

    # -- text ----------------------------------------------------------------------------------

    def stream(
        self,
        prompt: str | list[int],
        settings: SamplingSettings | None = None,
        cancelled: Callable[[], bool] | None = None,
        use_cache: bool = True,
    ) -> Generation:
        """Stream the continuation of `prompt` as text pieces (see `Generation`)."""
        settings = settings or SamplingSettings()
        ids = self.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)

        def pieces(gen: Generation) -> Iterator[str]:
            prompt_ids, gen.truncated = fit_prompt(ids, self.config.context)
            gen.prompt_tokens = len(prompt_ids)
            text = TextStream(self.tokenizer, self.stop_ids, settings.stop)
            for token in self.token_ids(prompt_ids, settings, cancelled, use_cache):
                piece = text.push(token)
                gen.new_tokens = text.new_tokens
                if piece:
                    yield piece
                if text.finish_reason:
                    break
            else:
                piece = text.finish("cancelled" if cancelled is not None and cancelled() else "length")
                if piece:
                    yield piece
            gen.finish_reason = text.finish_reason

        return Generation(pieces)

    def generate(self, prompt: str | list[int], settings: SamplingSettings | None = None) -> str:
        return self.stream(prompt, settings).text()


def sample_from_start(model: GPT, tokenizer: Tokenizer, device: torch.device, tokens: int, seed: int) -> str:
    """What a model in training writes from the start of a document (temperature 0.8, top-k 50), as training
    shows it now and then; the model is back in training mode after."""
    settings = SamplingSettings(temperature=0.8, top_k=50, max_tokens=tokens, seed=seed)
    text = Generator(model, tokenizer, device).generate([tokenizer.eot_id or 0], settings)
    model.train()
    return text


def _find_stop(text: str, stops: list[str]) -> int | None:
    hits = [i for s in stops if s and (i := text.find(s)) >= 0]
    return min(hits) if hits else None
