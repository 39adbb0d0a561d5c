"""Generate tests/golden/: reference outputs from Hugging Face transformers (needs torch; the tests
do not). Run from the repository root with mlx_tandem installed (pip install .):

    pip install torch transformers   # only for this script
    python scripts/make_goldens.py

For each tiny random model (Llama-3 with llama3 rope scaling, Qwen2 with bias and tied embeddings,
Mistral) it saves the float checkpoint, converts it with our converter to FP8, loads the
*dequantized* FP8 weights into transformers and records its logits, so the tests compare our code
with transformers rather than measuring quantization error. For the demo model (SmolLM2 GGUF) it
records transformers' greedy tokens on the dequantized weights and its GGUF tokenizer's ids.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import ml_dtypes
import numpy as np
import torch
import transformers

from mlx_tandem.convert import convert
from mlx_tandem.safetensors_io import SafetensorsFile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

GOLDEN = os.path.join(ROOT, "tests", "golden")
SEQ = 12

TINY = {
    "llama3": dict(model_type="llama", hidden_size=128, intermediate_size=320, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, vocab_size=300, rms_norm_eps=1e-5,
                   max_position_embeddings=256, tie_word_embeddings=False,
                   rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                    "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                    "original_max_position_embeddings": 64}),
    "qwen2": dict(model_type="qwen2", hidden_size=128, intermediate_size=200, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=1, vocab_size=300, rms_norm_eps=1e-6,
                  max_position_embeddings=256, tie_word_embeddings=True, use_sliding_window=False,
                  rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}),
    "mistral": dict(model_type="mistral", hidden_size=160, intermediate_size=256, num_hidden_layers=2,
                    num_attention_heads=5, num_key_value_heads=1, head_dim=32, vocab_size=300,
                    rms_norm_eps=1e-5, max_position_embeddings=256, tie_word_embeddings=False,
                    sliding_window=None, rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
}


def dequant(codes, scales, block=(128, 128)):
    w = codes.view(ml_dtypes.float8_e4m3fn).astype(np.float32)
    full = np.repeat(np.repeat(scales, block[0], 0), block[1], 1)[:w.shape[0], :w.shape[1]]
    return w * full


def read_fp8_state(path, tied_head):
    """Our FP8 checkpoint as the float32 state dict our model computes with."""
    f = SafetensorsFile(os.path.join(path, "model.safetensors"))
    state = {}
    for name in f.keys():
        if name.endswith("_scale_inv"):
            continue
        a = np.array(f.numpy(name))
        if name + "_scale_inv" in f.tensors:
            a = dequant(a, np.array(f.numpy(name + "_scale_inv")))
        elif f.tensors[name]["dtype"] == "BF16":
            a = a.view(ml_dtypes.bfloat16).astype(np.float32)
        state[name] = a
    if tied_head:  # our loader quantizes the (bf16) embedding for the head
        import mlx.core as mx
        import mlx_tandem as tdm
        c, s = tdm.quantize_fp8(mx.array(state["model.embed_tokens.weight"]), block_size=(128, 128))
        state["lm_head.weight"] = dequant(np.array(c), np.array(s))
    return state


def hf_model_on(config_dict, state):
    cfg = transformers.AutoConfig.for_model(**{**config_dict, "tie_word_embeddings": False})
    model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").float().eval()
    missing, unexpected = model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()},
                                                strict=False)
    missing = [m for m in missing if "rotary" not in m]
    assert not missing and not unexpected, (missing, unexpected)
    return model


def tiny_goldens():
    for name, cfg in TINY.items():
        torch.manual_seed(sum(name.encode()))
        hf_cfg = transformers.AutoConfig.for_model(**cfg, initializer_range=0.08)
        model = transformers.AutoModelForCausalLM.from_config(hf_cfg).to(torch.bfloat16)
        if name == "qwen2":  # random biases (initialised to zero otherwise)
            with torch.no_grad():
                for n, p in model.named_parameters():
                    if n.endswith("bias"):
                        p.normal_(0, 0.5)
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(tmp)
            out = os.path.join(GOLDEN, name)
            shutil.rmtree(out, ignore_errors=True)
            convert(tmp, out, progress=False)
        with open(os.path.join(out, "config.json")) as f:
            config = json.load(f)
        state = read_fp8_state(out, cfg["tie_word_embeddings"])
        hf = hf_model_on({k: v for k, v in config.items() if k != "quantization_config"}, state)
        rng = np.random.default_rng(len(name))
        tokens = rng.integers(0, cfg["vocab_size"], size=(2, SEQ))
        with torch.no_grad():
            logits = hf(torch.from_numpy(tokens)).logits.numpy()
        np.savez_compressed(os.path.join(out, "logits.npz"), tokens=tokens.astype(np.int32),
                            logits=logits.astype(np.float32))
        print(name, "logits", logits.shape, float(np.abs(logits).max()))


def rope_goldens():
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    base = dict(hidden_size=256, num_attention_heads=4, max_position_embeddings=512, rope_theta=10000.0)
    cases = {
        "default": ({}, None),
        "linear": ({"rope_type": "linear", "factor": 4.0}, None),
        "dynamic_short": ({"rope_type": "dynamic", "factor": 2.0}, 100),
        "dynamic_long": ({"rope_type": "dynamic", "factor": 2.0}, 1500),
        "llama3": ({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                    "original_max_position_embeddings": 128}, None),
    }
    out = {}
    for name, (params, seq_len) in cases.items():
        cfg = transformers.LlamaConfig(**base, rope_parameters={"rope_theta": 10000.0,
                                                                "rope_type": "default", **params})
        kind = params.get("rope_type", "default")
        if kind == "default":
            inv = 1.0 / (10000.0 ** (torch.arange(0, 64, 2, dtype=torch.float) / 64))
        else:
            inv, _ = ROPE_INIT_FUNCTIONS[kind](cfg, "cpu", seq_len=seq_len) if seq_len else \
                ROPE_INIT_FUNCTIONS[kind](cfg, "cpu")
        out[name] = inv.numpy().astype(np.float64)
        out[name + "_params"] = np.array(json.dumps({**params, "seq_len": seq_len}))
    np.savez(os.path.join(GOLDEN, "rope_inv_freq.npz"), **out)


PROMPTS = ["What is the capital of France?", "Write a haiku about the sea.",
           "List three primary colors.", "What is 12 times 7?"]
TOKENIZER_TEXTS = ["Hello world!", "  leading spaces and 12345 digits", "naïve café — ünïcödé ✓ 日本語",
                   "<|im_start|>user\nhi<|im_end|>", "tabs\tand\nnewlines\n\n", "don't we'll they're"]


def demo_goldens(new_tokens=20):
    import mlx_tandem.demo_model as dm
    from mlx_tandem.tokenizer import TokenizerWrapper

    path = dm.demo_model_path()
    with open(os.path.join(path, "config.json")) as f:
        config = json.load(f)
    tok = TokenizerWrapper.from_dir(path)
    hf = hf_model_on({k: v for k, v in config.items() if k != "quantization_config"},
                     read_fp8_state(path, True))
    cases = []
    for p in PROMPTS:
        ids = tok.apply_chat_template([{"role": "user", "content": p}], tokenize=True)
        with torch.no_grad():
            out = hf.generate(torch.tensor([ids]), max_new_tokens=new_tokens, do_sample=False,
                              eos_token_id=None, pad_token_id=0)
        gen = out[0, len(ids):].tolist()
        cases.append({"prompt": p, "prompt_ids": ids, "greedy": gen})
        print(repr(p), "->", repr(tok.decode(gen)))
    hf_tok = transformers.AutoTokenizer.from_pretrained(os.path.dirname(dm.demo_gguf_path()),
                                                        gguf_file=dm.GGUF_NAME)
    tok_cases = [{"text": t, "ids": hf_tok(t, add_special_tokens=False)["input_ids"]} for t in TOKENIZER_TEXTS]
    chat = hf_tok.apply_chat_template([{"role": "user", "content": PROMPTS[0]}], tokenize=False,
                                      add_generation_prompt=True)
    with open(os.path.join(GOLDEN, "smollm2.json"), "w") as f:
        json.dump({"greedy": cases, "tokenizer": tok_cases, "chat_text": chat}, f, indent=1)


if __name__ == "__main__":
    os.makedirs(GOLDEN, exist_ok=True)
    rope_goldens()
    tiny_goldens()
    demo_goldens()
