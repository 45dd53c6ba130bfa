"""Causal LMs by id. Every LM is loaded through `AutoModelForCausalLM.from_pretrained` and
`AutoTokenizer.from_pretrained`, the path a real LLM (Vicuna-7B, Llama-3-8B) takes; the tiny
stand-in is first written to disk in Hugging Face format (random-init Llama + a byte-level BPE
tokenizer trained locally on the caller's corpus) and then loaded back by that same path."""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from core.fields import ranged
from core.files import build_folder_once
from core.registry import Registry
from models.checkpointing import set_hf_checkpointing

LLAMA3_SPECIAL = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]


@dataclass(frozen=True)
class LLMConfig:
    """id: registry entry; path: hub id or local directory (for `hf`); the tiny_* fields size
    the random-init stand-in; init_seed fixes its weights independently of the run seed, as a
    pretrained LM's weights are."""
    id: str = "tiny-llama"
    path: str | None = None
    hidden_size: int = ranged(128, ge=1)
    layers: int = ranged(2, ge=1)
    heads: int = ranged(4, ge=1)
    intermediate_size: int = ranged(256, ge=1)
    vocab_size: int = ranged(1024, ge=64)
    max_positions: int = ranged(1024, ge=2)
    init_seed: int = 0
    dtype: str = "float32"
    extra: dict[str, str] = field(default_factory=dict)
    # the stand-in's tokenizer: `byte-level` BPE, or `llama`: sentencepiece-style like
    # Llama-2/Vicuna's (word-initial U+2581 marks, byte fallback, BOS added)
    tokenizer: str = field(default="byte-level", metadata={"omit_if_default": True})
    # the hub commit `path` is pinned to (written by `ablate fetch`'s lock; models.hub)
    revision: str | None = field(default=None, metadata={"omit_if_default": True})


@dataclass
class LoadedLLM:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    source: str


LLMS: Registry[Callable[..., LoadedLLM]] = Registry("llm")


# The published architectures of the LMs the papers' ablations use (their config.json), so a
# plan can size a 7B run on a machine without the hub or the weights.
KNOWN_ARCHITECTURES = {
    "lmsys/vicuna-7b-v1.5": dict(hidden_size=4096, intermediate_size=11008,
                                 num_hidden_layers=32, num_attention_heads=32, vocab_size=32000,
                                 max_position_embeddings=4096),
    "lmsys/vicuna-13b-v1.5": dict(hidden_size=5120, intermediate_size=13824,
                                  num_hidden_layers=40, num_attention_heads=40,
                                  vocab_size=32000, max_position_embeddings=4096),
}


def llm_config(cfg: LLMConfig):
    """The LM's transformers config without its weights: the tiny stand-in's, a local or hub
    config when reachable, else a known architecture's; None when none of these is."""
    if cfg.id == "tiny-llama":
        return LlamaConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
                           intermediate_size=cfg.intermediate_size, num_hidden_layers=cfg.layers,
                           num_attention_heads=cfg.heads, num_key_value_heads=cfg.heads,
                           tie_word_embeddings=False)
    known = KNOWN_ARCHITECTURES.get(cfg.path or "")
    if known and not Path(cfg.path).is_dir():  # no hub round trip (and its retries) for these
        return LlamaConfig(**known, tie_word_embeddings=False)
    try:
        from transformers import AutoConfig
        return AutoConfig.from_pretrained(cfg.path)
    except Exception:  # no local config and no hub
        return None


def llm_hidden_size(cfg: LLMConfig) -> int | None:
    """The LM's hidden size without loading it (None when its config is not reachable)."""
    hf = llm_config(cfg)
    return hf.hidden_size if hf is not None else None


def _load(path: str, dtype: str) -> LoadedLLM:
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    return LoadedLLM(model, tokenizer, path)


@LLMS.register("hf", "any Hugging Face causal LM by hub id or local path (e.g. Vicuna-7B)")
def load_hf(config: LLMConfig, cache_dir: Path, corpus: list[str]) -> LoadedLLM:
    if not config.path:
        raise ValueError("llm 'hf' needs `path`: a hub id or a local directory")
    return _load(config.path, config.dtype)


TOKENIZER_STYLES = ("byte-level", "llama")


def train_llama_style_tokenizer(corpus: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A tokenizer that behaves as Llama-2's (Vicuna's) does, trained on `corpus`: the text's
    spaces become U+2581 and one is prepended (the legacy sentencepiece normalizer LLaVA-1.5
    was trained with, hence its "extra" token after an image placeholder), BPE pieces never
    span a word boundary, unknown characters fall back to <0xNN> bytes, BOS is added."""
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    mark = "\u2581"
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend(mark),
                                           normalizers.Replace(" ", mark)])
    # for training only: split before each word mark so no merge crosses a word boundary
    tok.pre_tokenizer = pre_tokenizers.Split(mark, "merged_with_next")
    specials = ["<unk>", "<s>", "</s>", "<pad>", *LLAMA3_SPECIAL]
    byte_pieces = [f"<0x{i:02X}>" for i in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size + len(byte_pieces),
                                  special_tokens=specials + byte_pieces, show_progress=False)
    tok.train_from_iterator(corpus, trainer=trainer)
    tok.pre_tokenizer = None   # as Llama's tokenizer.json: merges alone keep words apart
    tok.decoder = decoders.Sequence([decoders.Replace(mark, " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", bos)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="<pad>",
                                   additional_special_tokens=LLAMA3_SPECIAL)


def train_tokenizer(corpus: list[str], vocab_size: int, style: str = "byte-level"
                    ) -> PreTrainedTokenizerFast:
    if style not in TOKENIZER_STYLES:
        raise ValueError(f"unknown tokenizer style '{style}'; allowed: "
                         + ", ".join(TOKENIZER_STYLES))
    if style == "llama":
        return train_llama_style_tokenizer(corpus, vocab_size)
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<unk>", "<s>", "</s>", "<pad>", *LLAMA3_SPECIAL]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="<pad>",
                                   additional_special_tokens=LLAMA3_SPECIAL)


def write_tiny_llama(config: LLMConfig, corpus: list[str], directory: Path) -> None:
    tokenizer = train_tokenizer(corpus, config.vocab_size, config.tokenizer)
    torch.manual_seed(config.init_seed)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size, num_hidden_layers=config.layers,
        num_attention_heads=config.heads, num_key_value_heads=config.heads,
        max_position_embeddings=config.max_positions, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False))
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)


@LLMS.register("tiny-llama", "random-init Llama + locally trained BPE tokenizer (CPU tests)")
def load_tiny_llama(config: LLMConfig, cache_dir: Path, corpus: list[str]) -> LoadedLLM:
    digest = hashlib.sha256(json.dumps([asdict(config), sorted(set(corpus))]).encode())
    directory = Path(cache_dir) / f"tiny-llama-{digest.hexdigest()[:12]}"
    build_folder_once(directory, lambda staging: write_tiny_llama(config, corpus, staging),
                      done=lambda folder: (folder / "config.json").exists())
    return _load(str(directory), config.dtype)


def load_llm(config: LLMConfig, cache_dir: Path, corpus: list[str]) -> LoadedLLM:
    return LLMS.get(config.id)(config, cache_dir, corpus)


def set_activation_checkpointing(model, enabled: bool) -> None:
    """Non-reentrant activation checkpointing on a transformers LM's decoder layers, through
    the library's own switch (models.checkpointing)."""
    set_hf_checkpointing(model, enabled)
