"""GGUF (llama.cpp) files as a Hugging Face-layout source: config, tensors, tokenizer files.

Tensors are dequantized one at a time on request (the `gguf` package memory-maps the file), renamed
to Hugging Face names, and Q/K are un-permuted from llama.cpp's interleaved rotary layout. The
tokenizer is rebuilt from the GGUF vocabulary and merges with the `tokenizers` package.
"""

from __future__ import annotations

import json
import re

import numpy as np

_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
}
_GLOBAL_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}

# llama.cpp pre-tokenizer names -> split regexes (from llama.cpp's llama-vocab.cpp)
_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
           r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
          r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_PRE = {"smollm": ("digits", _GPT2), "gpt2": (None, _GPT2), "default": (None, _GPT2),
        "llama-bpe": (None, _LLAMA3), "llama3": (None, _LLAMA3), "qwen2": (None, _QWEN2)}


def unpermute_qk(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's convert permute: per head, rows (pairs interleaved) -> (halves), i.e. the
    inverse of w.reshape(h, 2, d/2, K).swapaxes(1, 2)."""
    rows = w.shape[0]
    if rows % (2 * n_heads):
        raise ValueError(f"gguf: cannot un-permute a ({w.shape}) weight over {n_heads} heads")
    return w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


class GGUFSource:
    """The interface convert.py reads: .config, .specs() -> [(name, shape)], .get(name) -> float32
    numpy array, .files -> {filename: text} (tokenizer files)."""

    def __init__(self, path: str):
        try:
            from gguf import GGUFReader
            self._reader = GGUFReader(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"gguf: missing file {path}") from None
        except (ValueError, OSError, KeyError, IndexError) as e:
            raise ValueError(f"gguf: {path} is not a readable GGUF file: {e}") from None
        self.path = path
        self._f = {k: f for k, f in self._reader.fields.items()}
        arch = self._field("general.architecture")
        if arch != "llama":
            raise ValueError(f"gguf: unknown architecture {arch!r} (only 'llama' GGUF files are supported)")
        self.config = self._config()
        self._tensors = {}
        for t in self._reader.tensors:
            name = self._hf_name(t.name)
            if name is not None:
                self._tensors[name] = t
        self.files = self._tokenizer_files()

    def _field(self, key, default=None):
        f = self._f.get(key)
        return f.contents() if f is not None else default

    def _config(self) -> dict:
        g = lambda k, d=None: self._field(f"llama.{k}", d)
        if any(k.startswith("rope_freqs") for k in (t.name for t in self._reader.tensors)):
            raise ValueError("gguf: rope_freqs tensors (Llama 3.1 rope scaling) are not supported; "
                             "convert from the Hugging Face checkpoint instead")
        heads = int(g("attention.head_count"))
        hidden = int(g("embedding_length"))
        names = {t.name for t in self._reader.tensors}
        emb = next(t for t in self._reader.tensors if t.name == "token_embd.weight")
        cfg = {
            "architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "hidden_size": hidden, "num_hidden_layers": int(g("block_count")),
            "intermediate_size": int(g("feed_forward_length")), "num_attention_heads": heads,
            "num_key_value_heads": int(g("attention.head_count_kv", heads)),
            "head_dim": int(g("attention.key_length", hidden // heads)),
            "rms_norm_eps": float(g("attention.layer_norm_rms_epsilon", 1e-5)),
            "max_position_embeddings": int(g("context_length", 4096)),
            "rope_theta": float(g("rope.freq_base", 10000.0)),
            "vocab_size": int(g("vocab_size", int(emb.shape[1]))),
            "tie_word_embeddings": "output.weight" not in names,
            "bos_token_id": self._field("tokenizer.ggml.bos_token_id"),
            "eos_token_id": self._field("tokenizer.ggml.eos_token_id"),
            "torch_dtype": "bfloat16",
        }
        kind = g("rope.scaling.type")
        if kind and kind != "none":
            if kind not in ("linear",):
                raise ValueError(f"gguf: unsupported rope scaling type {kind!r}")
            cfg["rope_scaling"] = {"rope_type": kind, "factor": float(g("rope.scaling.factor"))}
        return cfg

    @staticmethod
    def _hf_name(name: str) -> str | None:
        m = re.fullmatch(r"blk\.(\d+)\.(\w+)\.(weight|bias)", name)
        if m and m[2] in _LAYER_NAMES:
            return f"model.layers.{m[1]}.{_LAYER_NAMES[m[2]]}.{m[3]}"
        m = re.fullmatch(r"(\w+)\.(weight|bias)", name)
        if m and m[1] in _GLOBAL_NAMES:
            return f"{_GLOBAL_NAMES[m[1]]}.{m[2]}"
        raise ValueError(f"gguf: unexpected tensor {name!r}")

    def specs(self) -> list[tuple[str, tuple[int, ...]]]:
        # GGUF lists dims innermost first
        return [(n, tuple(int(d) for d in reversed(t.shape))) for n, t in self._tensors.items()]

    def get(self, name: str) -> np.ndarray:
        from gguf.quants import dequantize
        t = self._tensors[name]
        shape = tuple(int(d) for d in reversed(t.shape))
        w = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(shape)
        if name.endswith("self_attn.q_proj.weight"):
            w = unpermute_qk(w, self.config["num_attention_heads"])
        elif name.endswith("self_attn.k_proj.weight"):
            w = unpermute_qk(w, self.config["num_key_value_heads"])
        return w

    def _tokenizer_files(self) -> dict[str, str]:
        tok = build_tokenizer(self._field)
        tokens = self._field("tokenizer.ggml.tokens")
        name = lambda key: tokens[self._field(key)] if self._field(key) is not None else None
        tcfg = {
            "bos_token": name("tokenizer.ggml.bos_token_id"),
            "eos_token": name("tokenizer.ggml.eos_token_id"),
            "unk_token": name("tokenizer.ggml.unknown_token_id"),
            "pad_token": name("tokenizer.ggml.padding_token_id"),
            "add_bos_token": bool(self._field("tokenizer.ggml.add_bos_token", False)),
            "chat_template": self._field("tokenizer.chat_template"),
            "tokenizer_class": "PreTrainedTokenizerFast",
        }
        gen = {"bos_token_id": self._field("tokenizer.ggml.bos_token_id"),
               "eos_token_id": self._field("tokenizer.ggml.eos_token_id")}
        return {"tokenizer.json": tok.to_str(), "tokenizer_config.json": json.dumps(tcfg, indent=2),
                "generation_config.json": json.dumps(gen, indent=2)}


def build_tokenizer(field):
    """A byte-level BPE `tokenizers.Tokenizer` from GGUF metadata (`field(key)` -> value)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

    kind = field("tokenizer.ggml.model")
    if kind != "gpt2":
        raise ValueError(f"gguf: tokenizer model {kind!r} is not supported (only byte-level BPE 'gpt2')")
    pre = field("tokenizer.ggml.pre", "default")
    if pre not in _PRE:
        raise ValueError(f"gguf: unknown pre-tokenizer {pre!r} (known: {', '.join(sorted(_PRE))})")
    tokens = list(field("tokenizer.ggml.tokens"))
    types = list(field("tokenizer.ggml.token_type") or [1] * len(tokens))
    merges = [tuple(m.split(" ", 1)) for m in field("tokenizer.ggml.merges")]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges,
                               fuse_unk=False, byte_fallback=False))
    digits, regex = _PRE[pre]
    seq = [pre_tokenizers.Digits(individual_digits=True)] if digits else []
    seq += [pre_tokenizers.Split(Regex(regex), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    tok.pre_tokenizer = pre_tokenizers.Sequence(seq)
    tok.decoder = decoders.ByteLevel()
    # token types: 3 = control (special), 4 = user defined
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, ty in zip(tokens, types) if ty == 3])
    tok.add_tokens([AddedToken(t, normalized=False) for t, ty in zip(tokens, types) if ty == 4])
    bos = field("tokenizer.ggml.bos_token_id")
    if field("tokenizer.ggml.add_bos_token", False) and bos is not None:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{tokens[bos]} $A", pair=f"{tokens[bos]} $A {tokens[bos]} $B",
            special_tokens=[(tokens[bos], bos)])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok
