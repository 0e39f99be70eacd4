"""Export to Hugging Face and GGUF, import from Hugging Face: each proven by the real consumer."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from core.chat.generate import Generator
from core.chat.sampling import SamplingSettings
from core.checkpoint import load_checkpoint, load_weights, save_checkpoint, weights_for_saving
from core.config import ModelConfig, to_dict
from core.errors import SLMError
from core.export.formats import export_checkpoint
from core.export.gguf import ggml_type, gguf_tensors, interleave_rope, weights_as_exported
from core.export.hf import import_hf
from core.model import GPT, apply_rope, rope_tables
from core.tokenizer.bpe import Tokenizer
from core.tokenizer.chat_template import render_chat
from tests.conftest import TINY_MODEL

PROMPT = "The cat sees the moon. A dog"


def make_checkpoint(path: Path, tokenizer_file: Path, **overrides) -> Path:
    """A tiny random model with spread-out weights (so greedy choices are clear-cut), saved as a checkpoint."""
    torch.manual_seed(0)
    config = ModelConfig(**{**TINY_MODEL, **overrides})
    model = GPT(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(1 + 0.1 * torch.randn_like(p) if name.endswith("norm.weight") else 0.3 * torch.randn_like(p))
    meta = {"run": path.parent.name, "step": 12, "model": to_dict(config), "metrics": {"val_loss": 2.5}, "chat": True}
    save_checkpoint(path, weights_for_saving(model), meta, Tokenizer.load(tokenizer_file))
    return path


def our_logits(gen: Generator, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        logits, _ = gen.model(torch.tensor([ids]), targets=torch.tensor([ids]))
    return logits[0]


@pytest.fixture
def checkpoint(tmp_path, tokenizer_file) -> Path:
    return make_checkpoint(tmp_path / "run" / "final", tokenizer_file)


def test_gguf_permutation_matches_llama_cpp_rope():
    """Interleaved-pair RoPE (GGML's) on permuted q/k rows gives the same attention scores as ours."""
    torch.manual_seed(0)
    heads, head_dim, width, T = 2, 8, 16, 5
    wq, wk = torch.randn(heads * head_dim, width), torch.randn(heads * head_dim, width)
    x = torch.randn(1, T, width)
    cos, sin = rope_tables(head_dim, T, 10000.0)

    def ours(w):
        return apply_rope((x @ w.T).view(1, T, heads, head_dim), cos[:, None], sin[:, None])

    def ggml(w):  # rotate adjacent pairs (2i, 2i + 1) by angle i
        y = (x @ interleave_rope(w, heads).T).view(1, T, heads, head_dim // 2, 2)
        half = head_dim // 2  # the tables hold [cos, cos] and [-sin, sin]
        c, s = cos[None, :, None, :half], sin[None, :, None, half:]
        a, b = y[..., 0], y[..., 1]
        return torch.stack((a * c - b * s, b * c + a * s), dim=-1).flatten(-2)

    scores = torch.einsum("bthd,bshd->bhts", ours(wq), ours(wk))
    assert torch.allclose(torch.einsum("bthd,bshd->bhts", ggml(wq), ggml(wk)), scores, atol=1e-4)


@pytest.mark.parametrize("tie", [True, False])
def test_hf_export_matches_in_transformers(tmp_path, tokenizer_file, tie):
    transformers = pytest.importorskip("transformers")
    path = make_checkpoint(tmp_path / "run" / "final", tokenizer_file, tie_embeddings=tie)
    out = export_checkpoint(path, "hf", tmp_path / "hf")
    assert {p.name for p in out.iterdir()} >= {"config.json", "tokenizer_config.json", "generation_config.json"}
    assert "| validation loss | 2.5000 |" in (out / "README.md").read_text()
    model = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    tok = transformers.AutoTokenizer.from_pretrained(out)
    ours = Generator.from_checkpoint(path, "cpu")
    ids = ours.tokenizer.encode(PROMPT)
    assert tok(PROMPT)["input_ids"] == ids
    with torch.no_grad():
        theirs = model(torch.tensor([ids])).logits[0]
    assert torch.allclose(theirs, our_logits(ours, ids), atol=1e-4)

    new = 12
    with torch.no_grad():
        generated = model.generate(torch.tensor([ids]), max_new_tokens=new, do_sample=False, eos_token_id=None)
    greedy = list(ours.token_ids(ids, SamplingSettings(temperature=0, max_tokens=new)))
    assert generated[0, len(ids) :].tolist()[: len(greedy)] == greedy

    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi <there>"}]
    templated = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    assert list(templated) == render_chat(messages, ours.tokenizer)


def test_hf_export_refuses_a_folder_with_other_files(tmp_path, checkpoint):
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "notes.txt").write_text("keep me")
    with pytest.raises(SLMError, match="holds other files"):
        export_checkpoint(checkpoint, "hf", tmp_path / "home")
    with pytest.raises(SLMError, match="GGUF type"):
        export_checkpoint(checkpoint, "hf", tmp_path / "x", "q8_0")
    assert (tmp_path / "home" / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize("dtype", ["f32", "f16", "q8_0", "q4_0"])
def test_gguf_export_reads_back(tmp_path, checkpoint, dtype):
    gguf = pytest.importorskip("gguf")
    out = export_checkpoint(checkpoint, "gguf", tmp_path / "model.gguf", dtype)
    reader = gguf.GGUFReader(out)

    def field(name):
        f = reader.fields[name]
        return f.contents() if hasattr(f, "contents") else f.parts[f.data[0]].tolist()

    config = ModelConfig(**TINY_MODEL)
    assert field("general.architecture") == "llama"
    assert field("llama.block_count") == config.n_layer
    assert field("llama.attention.head_count_kv") == config.n_kv_head
    assert field("llama.rope.dimension_count") == config.head_dim
    assert field("tokenizer.ggml.model") == "gpt2"
    tokenizer = Tokenizer.load(checkpoint / "tokenizer.json")
    tokens = field("tokenizer.ggml.tokens")
    assert len(tokens) == config.vocab_size and tokens[tokenizer.eot_id] == "<|endoftext|>"
    assert field("tokenizer.ggml.eos_token_id") == tokenizer.eot_id

    expected = gguf_tensors(load_checkpoint(checkpoint))
    tensors = {t.name: t for t in reader.tensors}
    assert set(tensors) == set(expected) and "output.weight" not in tensors  # tied: llama.cpp reuses token_embd
    tolerance = {"f32": 0.0, "f16": 1e-3, "q8_0": 2e-2, "q4_0": 0.13}[dtype]  # q4_0: 16 steps, one side of them clipped
    ckpt = load_checkpoint(checkpoint)
    scored = gguf_tensors(dataclasses.replace(ckpt, state=weights_as_exported(ckpt, dtype)))  # what `slm eval` scores
    for name, want in expected.items():
        t = tensors[name]
        assert tuple(reversed(t.shape.tolist())) == tuple(want.shape), name
        got = torch.from_numpy(gguf.quants.dequantize(t.data, t.tensor_type).copy()).reshape(want.shape)
        assert torch.allclose(got.float(), want, atol=tolerance * want.abs().max().item() + 1e-7), name
        assert torch.equal(got.float(), scored[name]), name
    kinds = {t.name: t.tensor_type.name for t in reader.tensors if len(t.shape) == 2}
    assert kinds == {
        n: ggml_type(dtype, tuple(w.shape), n == "token_embd.weight").name for n, w in expected.items() if w.dim() == 2
    }
    # the tied embedding is the output matrix: 8 bits at q4_0, as llama.cpp keeps more for it
    assert set(kinds.values()) == ({"Q4_0", "Q8_0"} if dtype == "q4_0" else {dtype.upper()})


def test_import_round_trip(tmp_path, tokenizer_file, workspace):
    """A random LlamaForCausalLM saved by transformers imports with identical logits and generates."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(1)
    tokenizer = Tokenizer.load(tokenizer_file)
    config = transformers.LlamaConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        rms_norm_eps=1e-5,
        rope_theta=5000.0,
        tie_word_embeddings=False,
    )
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    hf_dir = tmp_path / "hf-llama"
    model.save_pretrained(hf_dir)
    (hf_dir / "tokenizer.json").write_text(tokenizer.to_json())

    path = import_hf(hf_dir, workspace, "imported")
    gen = Generator.from_checkpoint(path, "cpu")
    assert gen.config.n_kv_head == 2 and gen.config.rope_theta == 5000.0 and not gen.config.tie_embeddings
    ids = tokenizer.encode(PROMPT)
    with torch.no_grad():
        theirs = model(torch.tensor([ids])).logits[0]
    assert torch.allclose(our_logits(gen, ids), theirs, atol=1e-4)
    assert gen.generate(PROMPT, SamplingSettings(temperature=0, max_tokens=5)) is not None
    assert json.loads((path.parent / "run.json").read_text())["imported"]["format"] == "hf-llama"
    with pytest.raises(SLMError, match="already exists"):
        import_hf(hf_dir, workspace, "imported")


def test_import_refuses_what_it_cannot_represent(tmp_path, workspace, tokenizer_file):
    hf_dir = tmp_path / "odd"
    hf_dir.mkdir()
    (hf_dir / "tokenizer.json").write_text(Tokenizer.load(tokenizer_file).to_json())
    base = {"model_type": "llama", "vocab_size": 320, "hidden_size": 32, "intermediate_size": 64}
    base |= {"num_hidden_layers": 1, "num_attention_heads": 2}
    for extra, message in [
        ({"model_type": "gpt2"}, "only Llama"),
        ({"attention_bias": True}, "biases"),
        ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "RoPE scaling"),
        ({"num_hidden_layers": None}, "num_hidden_layers"),
        ({"rms_norm_eps": "tiny"}, "cannot be read"),
        ({"hidden_size": "big"}, r"cannot be read|hidden_size|n_embd"),
    ]:
        (hf_dir / "config.json").write_text(json.dumps({k: v for k, v in {**base, **extra}.items() if v is not None}))
        with pytest.raises(SLMError, match=message):
            import_hf(hf_dir, workspace, "odd")


def test_weights_reload_after_export_import(tmp_path, checkpoint, workspace):
    """Our export, imported back, is the same model: the two formats are inverses."""
    out = export_checkpoint(checkpoint, "hf", tmp_path / "hf")
    back = load_checkpoint(import_hf(out, workspace, "back"))
    original = load_checkpoint(checkpoint)
    assert back.config == original.config
    model = GPT(back.config)
    load_weights(model, back.state, back.path)
    assert all(torch.equal(back.state[k], v) for k, v in original.state.items())


def test_cli_export_import_serve(tmp_path, workspace, checkpoint, capsys):
    from tui.cli import main

    def slm(*args: str) -> tuple[int, str]:
        code = main(["--workspace", str(workspace.root), *args])
        out, err = capsys.readouterr()
        return code, out + err

    code, out = slm("export", str(checkpoint), "--format", "gguf", "--out", str(tmp_path / "m.gguf"), "--dtype", "q8_0")
    assert code == 0 and (tmp_path / "m.gguf").stat().st_size > 0, out
    code, out = slm("export", str(checkpoint), "--format", "hf", "--out", str(tmp_path / "hf"))
    assert code == 0 and "exported" in out
    code, out = slm("import", str(tmp_path / "hf"), "--name", "again")
    assert code == 0 and "slm generate again" in out
    code, out = slm("generate", "again", "--prompt", "The", "--max-tokens", "3", "--seed", "1")
    assert code == 0
    code, out = slm("serve", str(checkpoint), "--port", "70000")
    assert code == 1 and out.strip().splitlines()[-1].startswith("error: cannot serve on 127.0.0.1:70000")


def test_export_declares_the_end_tokens_generation_stops_at() -> None:
    """An imported model's </s> stays its eos when exported again; ours are <|endoftext|> and the chat <|end|>."""
    from core.export.hf import llama_config
    from core.tokenizer.bpe import train_tokenizer
    from tests.conftest import make_text

    imported = train_tokenizer([make_text(200)], vocab_size=320, special_tokens=["</s>", "<unk>"])
    ours = train_tokenizer([make_text(200)], vocab_size=320)
    config = ModelConfig(**TINY_MODEL)
    assert llama_config(config, imported, "float32")["eos_token_id"] == imported.hf.token_to_id("</s>")
    assert llama_config(config, ours, "float32")["eos_token_id"] == [ours.eot_id, ours.special_ids["<|end|>"]]


@pytest.mark.parametrize("dtype", ["f16", "q8_0"])
def test_weights_beyond_f16_are_refused_not_turned_into_inf(tmp_path, tokenizer_file, dtype):
    path = make_checkpoint(tmp_path / "run" / "final", tokenizer_file)
    state = load_checkpoint(path)
    state.state["blocks.0.mlp.down.weight"][0, 0] = 1e6
    meta = {**state.meta, "model": to_dict(state.config)}
    save_checkpoint(path, state.state, meta, state.tokenizer)
    fmt, out = ("hf", tmp_path / "hf") if dtype == "f16" else ("gguf", tmp_path / "m.gguf")
    with pytest.raises(SLMError, match=r"beyond what .* can hold: export as f32"):
        export_checkpoint(path, fmt, out, dtype)
    assert not out.exists()
    assert export_checkpoint(path, fmt, out, "f32") == out
