"""The Trainer: prepares a run (tokenizer, token files, model) and trains it.

It runs in any thread, reports through a callback of events (`core.train.events`) that it also appends to
`metrics.jsonl`, and obeys a `Control` (pause, resume, stop) from other threads. Resuming from
`latest` restores weights, optimizer, RNG and data position, so on the CPU a resumed run is bit for
bit the run that was never stopped (for runs limited by steps or tokens, not by minutes); a run that saved no
`latest` starts over with its recorded settings. No step with nan or inf is applied, no such weights saved.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch

from core import atomic
from core.chat.generate import sample_from_start
from core.checkpoint import Checkpoint, all_finite, load_checkpoint, load_weights, save_checkpoint, weights_for_saving
from core.config import ModelConfig, TrainConfig, count_params, load_json, to_dict
from core.data.corpus import Corpus
from core.data.mixture import Source, resolve_mixture, shares_line, weights_line
from core.device import amp_dtype, autocast, out_of_memory_as, pick_device
from core.errors import SLMError
from core.evaluate import EvalResult, evaluate_sources
from core.listing import resolve_checkpoint
from core.model import GPT
from core.optim import lr_factor
from core.tokenizer.bpe import Tokenizer
from core.tokenizer.named import train_on_corpus
from core.train import failures, state
from core.train.budget import SPEED_KNOWN_AT, Budget
from core.train.distributed import Dist, gather_weights, gradient_sync, shard_model
from core.train.events import (
    CheckpointSaved,
    Control,
    EvalMetrics,
    Notice,
    Progress,
    RunEnded,
    RunStarted,
    SampleText,
    StateChanged,
    StepMetrics,
)
from core.train.live import Heartbeat
from core.train.metrics_log import MetricsLog
from core.train.token_cache import encode_corpus
from core.train.tokens import RankSlice, TokenData, training_batches
from core.workspace import Workspace

EventFn = Callable[[Any], None]


class Trainer:
    """One training run, new or resumed. Call `run()`; it returns the final `RunEnded` event.

    Subclasses train other objectives on other data (`core.train.sft`, `core.train.dpo`) by overriding the data hooks
    (`_prepare_data`, `_batch_loss`, `_evaluate`, `_sample`, `_meta`); the loop, events, checkpoints, pause,
    stop and resume stay these.
    """

    objective = "lm"  # recorded in run.json: `core.train.objectives` maps it back to the class
    distributed = True  # whether it can train under torchrun

    def __init__(
        self,
        workspace: Workspace,
        run: str,
        model: ModelConfig,
        train: TrainConfig,
        on_event: EventFn | None = None,
        control: Control | None = None,
        resume: bool = False,
    ) -> None:
        self.workspace = workspace
        self.run_name = run
        self.run_dir = workspace.run_dir(run)
        self.model_config = model
        self.cfg = train
        self.on_event = on_event or (lambda event: None)
        self.control = control or Control()
        self.resume = resume
        self._metrics: MetricsLog | None = None
        self._shared_tokenizer: Tokenizer | None = None  # under torchrun: the tokenizer rank 0 chose
        self.dist = Dist()
        self.step = 0
        self.tokens_seen = 0
        self.elapsed = 0.0
        self.budget = Budget(self.cfg.max_minutes, self.cfg.eval_tokens)
        self.best_val = math.inf
        self.evals_since_best = 0
        self.last_metrics: dict[str, float] = {}
        self._oom_advice = failures.out_of_memory_advice(train, self.objective)  # worked out once, not per step

    # -- events --------------------------------------------------------------------------------

    def emit(self, event: Any) -> None:
        if not self.dist.main:
            return  # under torchrun rank 0 reports for all
        if self._metrics is not None:
            self._metrics.write(event)
        self.on_event(event)

    # -- preparation ---------------------------------------------------------------------------

    def _progress(self, stage: str, done: int, total: int) -> None:
        self.emit(Progress(stage, done, total))

    def _cancelled(self) -> bool:
        return self.control.stopped

    def prepare(self) -> None:
        """Tokenizer, token files, model and optimizers: everything before the first step."""
        cfg = self.cfg
        if not self.resume and (self.run_dir / "run.json").exists():
            raise SLMError(failures.name_taken(self.run_dir, self.run_name))
        self.restart = self.resume and not state.has_checkpoint(self.run_dir)  # it died before its first `latest`
        self.run_info = load_json(self.run_dir / "run.json") if self.resume else {}
        self.parent_ckpt = None
        if self.resume and not self.restart:
            self.parent_ckpt = load_checkpoint(self.run_dir / "latest", with_trainer=True)
            self.tokenizer = self.parent_ckpt.tokenizer
        elif cfg.init_from:
            self.parent_ckpt = load_checkpoint(resolve_checkpoint(self.workspace, cfg.init_from))
            self.model_config = self.parent_ckpt.config
        if self.restart:  # the data hooks read the run's recorded tokenizer and settings, as on a resume
            self.tokenizer = Tokenizer.load(self.run_dir / "tokenizer.json")
        self.dist = Dist.from_env(cfg.device)
        self.device = self.dist.device(pick_device(cfg.device))
        self.amp = amp_dtype(self.device, cfg.precision)
        if cfg.threads or self.dist.active:
            torch.set_num_threads(cfg.threads or self.dist.cpu_threads())
        self._prepare_data_once()
        with out_of_memory_as(failures.out_of_memory_advice(cfg, self.objective, building=True)):
            self._build_model()
        if self.resume and not self.restart:
            self._restore(self.parent_ckpt)
        elif self.dist.main:
            self._start_run_folder()

    def _build_model(self) -> None:
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        self.model = GPT(self.model_config).to(self.device)
        self.model.grad_checkpoint = cfg.grad_checkpoint
        if self.parent_ckpt is not None:
            load_weights(self.model, self.parent_ckpt.state, self.parent_ckpt.path)
        if cfg.shard:
            self._shard()
        self.optimizers = self.model.optimizers(cfg, self.device.type)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp == torch.float16 else None
        self.byte_lengths = torch.tensor(self.tokenizer.byte_lengths())
        self.train_model = torch.compile(self.model) if cfg.compile else self.model
        if self.dist.active and not cfg.shard:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = DistributedDataParallel(self.train_model, device_ids=ids)

    def _prepare_data_once(self) -> None:
        """Prepare the data; under torchrun rank 0 first (tokenizer, token files), then the others from its cache."""
        if self.dist.main:
            self._prepare_data()
        self.dist.barrier()
        if self.dist.active and not self.distributed:
            raise SLMError(f"{self.objective} training runs in a single process: start it without torchrun")
        tokenizer = self.dist.share(self.tokenizer.to_json() if self.dist.main else None)
        if not self.dist.main:
            self._shared_tokenizer = Tokenizer.from_json(tokenizer)
            self._prepare_data()
        if self.dist.active:
            self.batches = RankSlice(self.batches, self.dist)

    def _shard(self) -> None:
        """Shard every block, then the rest, across the ranks (FSDP2); the optimizers then hold shards too."""
        if not self.dist.active:
            self.emit(Notice("one process: nothing to shard (--shard needs torchrun, --nproc 2 or more)", "warning"))
            self.cfg = replace(self.cfg, shard=False)
            return
        if self.cfg.optimizer != "adamw":
            raise SLMError("--shard trains with --optimizer adamw")
        shard_model(self.model)

    def _prepare_data(self) -> None:
        """Set `self.data` (its `train.tokens`, `val.tokens`, `corpus` fingerprint, `describe()`) and
        `self.batches` (`next()` gives inputs and targets, -1 where no loss is taken; `generator` is the position)."""
        cfg = self.cfg
        corpus = Corpus.scan(self.workspace.data_dir, cfg.data, cfg.decode_errors, self._progress, cfg.keep_duplicates)
        for problem in corpus.problems:
            self.emit(Notice(f"skipped {problem.path}: {problem.error}", "warning"))
        if corpus.duplicates.copies:
            self.emit(Notice(corpus.duplicates.summary(cfg.keep_duplicates)))
        sources, mix, origin = resolve_mixture(corpus, cfg.mix, saved=not self.resume)
        if origin and not self.resume:
            self.emit(Notice(f"mixture weights from {origin}: {weights_line(mix)}"))
        self.cfg = cfg = replace(cfg, mix=mix)  # recorded in the run's settings
        if not self.resume:
            self.tokenizer = self._choose_tokenizer(corpus, sources)
            self._fit_vocab()
        self.data: TokenData = encode_corpus(
            corpus, self.tokenizer, self.workspace.cache_dir, cfg.val_fraction, cfg.split_seed,
            self._progress, self._cancelled,
        )  # fmt: skip
        self.val_spans, train_spans = self.data.spans("val", sources), self.data.spans("train", sources)
        self.batches = training_batches(
            self.data.train, train_spans, sources, cfg, self.model_config.context, self.device
        )
        if len(sources) > 1:
            run = min(cfg.max_steps * self.tokens_per_step * self.dist.world, cfg.max_tokens or math.inf)
            self.emit(Notice("sources: " + shares_line(sources, train_spans, None if cfg.max_minutes else run)))

    def _choose_tokenizer(self, corpus: Corpus, sources: list[Source]) -> Tokenizer:
        cfg = self.cfg
        if self._shared_tokenizer is not None:
            return self._shared_tokenizer
        named = Tokenizer.load(self.workspace.tokenizer_path(cfg.tokenizer)) if cfg.tokenizer else None
        if self.parent_ckpt is not None:
            if named is not None and named.hash != self.parent_ckpt.tokenizer.hash:
                raise SLMError(
                    f"tokenizer {cfg.tokenizer} does not match the tokenizer of {self.parent_ckpt.path}: "
                    "fine-tuning must keep the checkpoint's tokenizer (leave --tokenizer out)"
                )
            return self.parent_ckpt.tokenizer
        if named is not None:
            return named
        self.emit(Notice(f"training a {self.model_config.vocab_size}-token BPE tokenizer on the training split"))
        return train_on_corpus(
            corpus, self.model_config.vocab_size, cfg.min_frequency, cfg.val_fraction, cfg.split_seed,
            lambda stage, done, total: self._progress("tokenizer", done, total), self._cancelled, sources,
        )  # fmt: skip

    def _fit_vocab(self) -> None:
        """A fresh model takes the tokenizer's vocabulary size; a loaded one must already match it."""
        size = self.tokenizer.vocab_size
        if self.parent_ckpt is None and size != self.model_config.vocab_size:
            if not self.cfg.tokenizer:
                self.emit(Notice(f"the text supports only {size} tokens: the vocabulary is {size}", "warning"))
            self.model_config = replace(self.model_config, vocab_size=size)

    def _start_run_folder(self) -> None:
        if self.restart:
            self.emit(Notice(failures.start_over(self.run_dir, self.run_name), "warning"))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.run_id = uuid.uuid4().hex
        lineage = []
        if self.parent_ckpt is not None:
            lineage = [self.parent_ckpt.lineage_ref(), *self.parent_ckpt.meta.get("lineage", [])]
        self.lineage = lineage
        self.tokenizer.save(self.run_dir / "tokenizer.json")
        self.run_info = {
            "id": self.run_id,
            "name": self.run_name,
            "objective": self.objective,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "model": to_dict(self.model_config),
            "train": to_dict(self.cfg),
            "params": count_params(self.model_config),
            "tokenizer_hash": self.tokenizer.hash,
            "data": self.data.describe(),
            "lineage": lineage,
        }
        atomic.write_json(self.run_dir / "run.json", self.run_info)
        atomic.write_text(self.run_dir / "metrics.jsonl", "")

    # -- checkpoints ---------------------------------------------------------------------------

    def _meta(self, kind: str) -> dict[str, Any]:
        return {
            "kind": kind,
            "run": self.run_name,
            "run_id": self.run_id,
            "step": self.step,
            "tokens_seen": self.tokens_seen,
            "model": to_dict(self.model_config),
            "metrics": dict(self.last_metrics),
            "lineage": self.lineage,
        }

    def save(self, kind: str) -> None:
        """Write checkpoint `kind`. Under torchrun every rank calls this (a sharded model and its optimizer
        state are gathered from all) and rank 0 writes."""
        trainer_json = trainer_tensors = None
        if kind == "latest" and (self.dist.main or self.cfg.shard):
            trainer_json, trainer_tensors = self._trainer_state()
        gathered = gather_weights(self.model) if self.cfg.shard else None
        weights = weights_for_saving(self.model, gathered) if self.dist.main else {}
        if not self.dist.share(all_finite([*weights.values(), *(trainer_tensors or {}).values()])):
            raise self._not_finite(f"the weights hold nan or inf at step {self.step} ({kind} not saved)")
        if not self.dist.main:
            return
        meta = self._meta(kind)
        if trainer_json is not None:
            meta["trainer"] = trainer_json
        path = self.run_dir / kind
        save_checkpoint(path, weights, meta, self.tokenizer, trainer_tensors)
        self.emit(CheckpointSaved(self.step, kind, str(path)))

    def _trainer_state(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        tensors = state.rng_tensors(self.batches.generator, self.device)
        optimizers = state.optimizer_records(self.optimizers, tensors, self.model if self.cfg.shard else None)
        return {
            "step": self.step,
            "tokens_seen": self.tokens_seen,
            "elapsed_s": self.elapsed,
            "best_val_loss": None if math.isinf(self.best_val) else self.best_val,
            "evals_since_best": self.evals_since_best,
            "optimizers": optimizers,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "corpus": self.data.corpus,
        }, tensors

    def _restore(self, ckpt: Checkpoint) -> None:
        meta, tensors = ckpt.meta, ckpt.trainer_tensors
        saved = meta.get("trainer") or {}
        self.run_id = meta.get("run_id") or self.run_info.get("id")
        self.lineage = meta.get("lineage", [])
        self.step = int(saved["step"])
        self.tokens_seen = int(saved["tokens_seen"])
        self.elapsed = float(saved["elapsed_s"])
        self.best_val = saved["best_val_loss"] if saved.get("best_val_loss") is not None else math.inf
        self.evals_since_best = int(saved.get("evals_since_best", 0))
        self.last_metrics = dict(meta.get("metrics", {}))
        state.restore_optimizers(self.optimizers, saved["optimizers"], tensors, self.model if self.cfg.shard else None)
        if self.scaler is not None and saved.get("scaler"):
            self.scaler.load_state_dict(saved["scaler"])
        state.restore_rng(tensors, self.batches.generator, self.device)
        if saved.get("corpus") and saved["corpus"] != self.data.corpus:
            self.emit(Notice("the data changed since this run was saved: resuming on the new data", "warning"))
        if self.dist.main:
            state.trim_metrics(self.run_dir / "metrics.jsonl", self.step)

    # -- the loop ------------------------------------------------------------------------------

    def progress(self) -> float:
        cfg = self.cfg
        parts = [self.step / cfg.max_steps]
        if cfg.max_tokens:
            parts.append(self.tokens_seen / cfg.max_tokens)
        return max(*parts, self.budget.fraction(self.elapsed))

    @property
    def tokens_per_step(self) -> int:
        return self.cfg.batch_size * self.cfg.grad_accum * self.model_config.context

    def run(self) -> RunEnded:
        """Prepare and train until a limit, early stopping, a stop request or an error."""
        with out_of_memory_as(self._oom_advice):  # e.g. DPO's reference pass
            self.prepare()
        try:
            if not self.dist.main:
                end = self._run_loop()
            else:
                with Heartbeat(self.run_dir), MetricsLog(self.run_dir, self.step) as metrics:
                    self._metrics = metrics
                    try:
                        end = self._run_loop()
                    finally:
                        self._metrics = None
            self.dist.barrier()  # all ranks done before the group goes: a broadcast's sender can finish first
            return end
        finally:
            self.dist.close()

    def _run_loop(self) -> RunEnded:
        self.emit(
            RunStarted(
                run=self.run_name,
                run_dir=str(self.run_dir),
                params=count_params(self.model_config),
                device=str(self.device),
                precision=str(self.amp).replace("torch.", "") if self.amp else "fp32",
                max_steps=self.cfg.max_steps,
                train_tokens=self.data.train.tokens,
                val_tokens=self.data.val.tokens,
                tokens_per_step=self.tokens_per_step,
                start_step=self.step,
                config={"model": to_dict(self.model_config), "train": to_dict(self.cfg)},
            )
        )
        try:
            with out_of_memory_as(self._oom_advice):  # evals and samples too
                end = self._loop()
        except BaseException as e:
            reason = "nan" if isinstance(e, failures.NotFinite) else "error"
            self.emit(RunEnded(self.step, reason, self._best(), str(e) or type(e).__name__))
            raise
        self.emit(end)
        return end

    def _loop(self) -> RunEnded:
        cfg = self.cfg
        self.budget = Budget(cfg.max_minutes, cfg.eval_tokens, self.elapsed, not self.dist.active)  # goes on if resumed
        step_time = None
        step_tokens = self.tokens_per_step * self.dist.world
        done, first_step = False, self.step
        while True:
            stopped = self._agree()
            if self.progress() >= 1.0:
                if not done:  # the clock ran out during an evaluation or a save: the end still gets its own
                    self._eval()
                break
            if self.control.paused:
                self._pause()
                stopped = self._agree()
            if stopped:
                self.save("latest")
                return RunEnded(self.step, "stopped", self._best(), "stopped on request; resume with --resume")
            t0 = time.perf_counter()
            loss, grad_norm, lr = self._step()
            self.step += 1
            self.tokens_seen += step_tokens
            dt = time.perf_counter() - t0
            self.elapsed += dt
            self._agree()
            step_time = dt if step_time is None else 0.9 * step_time + 0.1 * dt
            progress = self.progress()
            self.last_metrics["train_loss"] = loss
            eta = self.elapsed * (1 - progress) / progress if 0 < progress < 1 else 0.0
            rate, shown = step_tokens / step_time, min(progress, 1.0)
            self.emit(StepMetrics(self.step, loss, lr, self.tokens_seen, rate, self.elapsed, shown, eta, grad_norm))
            known = self.step == first_step + SPEED_KNOWN_AT  # the first steps pay for warming up and compiling
            if known and (warning := self.budget.short_of_warmup(self.step, self.elapsed, dt, cfg.warmup_steps)):
                self.emit(Notice(warning, "warning"))
            done = progress >= 1.0
            own = self.step % cfg.eval_interval == 0 or done
            if own or self.budget.eval_due(self.elapsed):
                t1, tokens = time.perf_counter(), None if own else self.budget.eval_tokens()
                stop_early = self._eval(tokens)
                self.budget.measured(tokens or cfg.eval_tokens, time.perf_counter() - t1)
                if self.step % cfg.sample_interval == 0 or done:
                    self._sample()
                self.elapsed += time.perf_counter() - t1
                if stop_early:
                    self._finish()
                    return RunEnded(
                        self.step, "early_stop", self._best(), f"no better val loss in {cfg.patience} evals"
                    )
            if self.step % cfg.checkpoint_interval == 0 and not done:
                t2 = time.perf_counter()
                self.save("latest")
                self.budget.save_s = time.perf_counter() - t2
                self.elapsed += self.budget.save_s
        self._finish()
        return RunEnded(self.step, "finished", self._best())

    def _agree(self) -> bool:
        """Whether a stop was asked. Under torchrun every rank then also takes the slowest rank's clock and
        any rank's stop request, so that limits by time and Ctrl-C end all ranks at the same step."""
        if not self.dist.active:
            return self.control.stopped
        stopped, self.elapsed = self.dist.agree(self.control.stopped, self.elapsed, self.device)
        return stopped

    def _best(self) -> float | None:
        return None if math.isinf(self.best_val) else self.best_val

    def _finish(self) -> None:
        self.save("latest")
        self.save("final")

    def _pause(self) -> None:
        self.emit(StateChanged(self.step, "paused"))
        while self.control.paused and not self.control.stopped:
            self.control.wait_while_paused(0.2)
        if not self.control.stopped:
            self.emit(StateChanged(self.step, "running"))

    def _step(self) -> tuple[float, float, float]:
        cfg = self.cfg
        lr = cfg.lr * lr_factor(self.step, self.progress(), cfg)
        for opt in self.optimizers:
            for group in opt.param_groups:
                base = cfg.muon_lr if isinstance(opt, torch.optim.Muon) else cfg.lr
                group["lr"] = base * lr / cfg.lr
        with out_of_memory_as(self._oom_advice):
            total = torch.zeros((), device=self.device)
            syncing = self.model if cfg.shard else self.train_model  # FSDP's own module, or the DDP wrapper
            for micro in range(cfg.grad_accum):
                with (
                    gradient_sync(syncing, self.dist.active, cfg.shard, micro == cfg.grad_accum - 1),
                    autocast(self.device, self.amp),
                ):
                    loss = self._batch_loss() / cfg.grad_accum
                    total += loss.detach()
                    (self.scaler.scale(loss) if self.scaler else loss).backward()
            loss_value = float(self.dist.mean(total))  # the same on every rank, like the global norm below
            if self.scaler:
                for opt in self.optimizers:
                    self.scaler.unscale_(opt)
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip or math.inf)
            grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)  # a DTensor when sharded
            problem = failures.not_finite(loss_value, grad_norm, scaled=self.scaler is not None)  # before the step
            if problem:
                raise self._not_finite(f"{problem} at step {self.step + 1} (not applied)")
            for opt in self.optimizers:
                if self.scaler:
                    self.scaler.step(opt)
                else:
                    opt.step()
            if self.scaler:
                self.scaler.update()
            for opt in self.optimizers:
                opt.zero_grad(set_to_none=True)
        return loss_value, grad_norm, lr

    def _not_finite(self, what: str) -> failures.NotFinite:
        fp32 = " or use --precision fp32" if self.amp else ""
        return failures.NotFinite(f"{what}: lower --lr{fp32}; {failures.last_good(self.run_dir, self.run_name)}")

    def _batch_loss(self) -> torch.Tensor:
        """The loss of the next micro-batch."""
        x, y = self.batches.next()
        _, loss = self.train_model(x, y)
        return loss

    def _evaluate(self, tokens: int | None = None) -> EvalResult:
        val, spans, tokens = self.data.val.array(), self.val_spans, tokens or self.cfg.eval_tokens
        return evaluate_sources(self.model, val, spans, self.byte_lengths, self.cfg.batch_size, tokens, self.amp)

    def _eval(self, tokens: int | None = None) -> bool:
        """Evaluate on the validation split; save `best` on improvement; True: stop early. One the clock added
        (`tokens` set: fewer of them) is a point of the curve only, and leaves `best` and patience alone."""
        result = self._evaluate(tokens)
        improved = tokens is None and result.loss < self.best_val
        if improved:
            self.best_val = result.loss
            self.evals_since_best = 0
        elif tokens is None:
            self.evals_since_best += 1
        self.last_metrics.update(val_loss=result.loss, val_ppl=result.ppl, val_bpb=result.bpb)
        best = min(self.best_val, result.loss)
        self.emit(EvalMetrics(self.step, result.loss, result.ppl, result.bpb, best, self.elapsed, result.sources))
        if improved:
            t = time.perf_counter()
            self.save("best")
            self.budget.save_s = time.perf_counter() - t
        return self.cfg.patience is not None and self.evals_since_best >= self.cfg.patience

    def _sample(self) -> None:
        t = time.perf_counter()
        text = sample_from_start(self.model, self.tokenizer, self.device, self.cfg.sample_tokens, self.step)
        self.emit(SampleText(self.step, text))
        self.budget.sample_s = time.perf_counter() - t
