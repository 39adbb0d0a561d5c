"""Tokenizer wrapper: `tokenizers` for the vocabulary, jinja2 for chat templates, EOS handling and
a streaming detokenizer that never emits half a UTF-8 character."""

from __future__ import annotations

import json
import os
from datetime import datetime

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer


def _read_json(path):
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def _token_text(tok):
    return tok.get("content") if isinstance(tok, dict) else tok


class TokenizerWrapper:
    def __init__(self, tokenizer: Tokenizer, config: dict | None = None,
                 eos_token_ids: list[int] | None = None, chat_template: str | None = None):
        self.tokenizer = tokenizer
        config = config or {}
        self.bos_token = _token_text(config.get("bos_token"))
        self.eos_token = _token_text(config.get("eos_token"))
        self.add_bos_token = bool(config.get("add_bos_token", False))
        self.chat_template = chat_template or config.get("chat_template")
        if isinstance(self.chat_template, list):  # [{"name": "default", "template": ...}, ...]
            named = {t["name"]: t["template"] for t in self.chat_template}
            self.chat_template = named.get("default") or next(iter(named.values()))
        ids = set(eos_token_ids or [])
        if self.eos_token is not None and tokenizer.token_to_id(self.eos_token) is not None:
            ids.add(tokenizer.token_to_id(self.eos_token))
        self.eos_token_ids = ids
        self.bos_token_id = tokenizer.token_to_id(self.bos_token) if self.bos_token else None

    @classmethod
    def from_dir(cls, path: str) -> "TokenizerWrapper":
        tj = os.path.join(path, "tokenizer.json")
        if not os.path.isfile(tj):
            raise FileNotFoundError(f"tokenizer: {path} has no tokenizer.json")
        tok = Tokenizer.from_file(tj)
        config = _read_json(os.path.join(path, "tokenizer_config.json"))
        eos = _read_json(os.path.join(path, "generation_config.json")).get("eos_token_id")
        if eos is None:
            eos = _read_json(os.path.join(path, "config.json")).get("eos_token_id")
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        template = None
        jinja_file = os.path.join(path, "chat_template.jinja")
        if os.path.isfile(jinja_file):
            with open(jinja_file) as f:
                template = f.read()
        elif os.path.isfile(os.path.join(path, "chat_template.json")):
            template = _read_json(os.path.join(path, "chat_template.json")).get("chat_template")
        return cls(tok, config, eos, template)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids
        # tokenizer.json's post-processor usually adds BOS itself; add_bos_token covers those that don't
        if (add_special_tokens and self.add_bos_token and self.bos_token_id is not None
                and (not ids or ids[0] != self.bos_token_id)):
            ids = [self.bos_token_id] + ids
        return ids

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True,
                            tokenize: bool = False, **kwargs):
        if not self.chat_template:
            raise ValueError("tokenizer: this model has no chat template")
        text = _compile(self.chat_template).render(
            messages=messages, add_generation_prompt=add_generation_prompt,
            bos_token=self.bos_token or "", eos_token=self.eos_token or "", **kwargs)
        # The rendered text carries BOS itself when the template wants it.
        return self.encode(text, add_special_tokens=False) if tokenize else text

    def detokenizer(self) -> "StreamingDetokenizer":
        return StreamingDetokenizer(self)


def _raise(msg):
    raise jinja2.exceptions.TemplateError(msg)


_templates: dict[str, jinja2.Template] = {}


def _compile(source: str) -> jinja2.Template:
    if source not in _templates:
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                            extensions=["jinja2.ext.loopcontrols"])
        env.filters["tojson"] = lambda x, indent=None, **_: json.dumps(x, indent=indent,
                                                                         ensure_ascii=False)
        env.globals["raise_exception"] = _raise
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        _templates[source] = env.from_string(source)
    return _templates[source]


class StreamingDetokenizer:
    """Feed token ids one at a time; `add_token` returns the newly finished text (possibly "").

    Decodes the tokens since the last clean break and emits only the part beyond what was already
    emitted, holding back a trailing U+FFFD (an incomplete multi-byte character)."""

    def __init__(self, tokenizer: TokenizerWrapper):
        self.tok = tokenizer
        self.tokens: list[int] = []
        self._start = 0  # tokens before this index are fully emitted
        self._emitted = ""  # text emitted from tokens[_start:]
        self.text = ""

    def add_token(self, token: int) -> str:
        self.tokens.append(int(token))
        seg = self.tok.decode(self.tokens[self._start:])
        if seg.endswith("\ufffd"):
            return ""
        new = seg[len(self._emitted):]
        self._emitted = seg
        if seg.endswith("\n"):  # a safe point to restart, keeping decode cost per token bounded
            self._start, self._emitted = len(self.tokens), ""
        self.text += new
        return new

    def finalize(self) -> str:
        seg = self.tok.decode(self.tokens[self._start:])
        new = seg[len(self._emitted):]
        self._start, self._emitted = len(self.tokens), ""
        self.text += new
        return new
