"""One training step of a stage, measured outside a run: what benchmarks/gpu_scale.py times
on a GPU and what the tests hold `ablate plan`'s memory estimate against on a CPU. Nothing
here is a second training loop: the step is the loop's own (the strategy's preparation, the
stage's optimizer, optimizer_step under the run's autocast); only the batch is made up, of
random tokens after one <image> placeholder and random pixels, and the LLM may be a random
one of a real model's shape."""
from __future__ import annotations

import contextlib

import torch

from harness.config.run_config import ParallelConfig, StageConfig
from harness.training.distributed import World
from harness.training.loop import (
    optimizer_step,
    param_groups,
    stage_lrs,
    stage_optimizer,
    stage_strategy,
)
from models.llm import LLMConfig, LoadedLLM, train_tokenizer
from models.multimodal import MultimodalLM
from models.templates import IGNORE_INDEX, IMAGE_TOKEN_INDEX


def random_llama(cfg: LLMConfig, layers: int, device: torch.device) -> LoadedLLM:
    """A random-init Llama of `cfg`'s shape with `layers` decoder layers, built in bf16
    directly on `device` (a 7B model never exists in fp32 or on the host)."""
    from transformers import LlamaConfig, LlamaForCausalLM
    tokenizer = train_tokenizer(["a picture of a cat on a mat"] * 4, 300)
    config = LlamaConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
                         intermediate_size=cfg.intermediate_size, num_hidden_layers=layers,
                         num_attention_heads=cfg.heads, num_key_value_heads=cfg.heads,
                         max_position_embeddings=cfg.max_positions, tie_word_embeddings=False,
                         pad_token_id=tokenizer.pad_token_id)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with device:
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(default)
    return LoadedLLM(model, tokenizer, "random-init")


def placeholder_batch(model: MultimodalLM, micro: int, text: int, vocab: int,
                      device: torch.device, generator: torch.Generator | None = None) -> dict:
    """A micro-batch: the <image> placeholder, then `text` - 1 random tokens whose second half
    is the answer (the placeholder is what the visual tokens replace: without it they would be
    dropped, and the LLM would see `text` tokens)."""
    ids = torch.randint(10, vocab, (micro, text), generator=generator).to(device)
    ids[:, 0] = IMAGE_TOKEN_INDEX
    labels = ids.clone()
    labels[:, : text // 2] = IGNORE_INDEX
    pixels = {name: torch.randn(micro, 3, *e.input_size, generator=generator).to(device)
              for name, e in model.experts.items()}
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels,
            "pixels": pixels, "has_image": torch.ones(micro, dtype=torch.bool, device=device)}


class LLMInputLength:
    """The sequence length the LLM is called with, on every call (a forward pre-hook)."""

    def __init__(self, llm: torch.nn.Module):
        self.lengths: list[int] = []
        self.handle = llm.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, module, args, kwargs):
        embeds = kwargs.get("inputs_embeds")
        self.lengths.append(embeds.shape[1] if embeds is not None else args[0].shape[1])

    def check(self, expected: int) -> None:
        """Raise unless every call saw `expected` tokens (visual + text)."""
        self.handle.remove()
        wrong = sorted({n for n in self.lengths if n != expected})
        if not self.lengths or wrong:
            raise AssertionError(f"the LLM saw sequences of {wrong or 'no'} tokens, expected "
                                 f"{expected} (visual + text): visual tokens were dropped")


class TrainingStep:
    """One optimizer step of `stage` as harness.training.loop runs it on one rank, on `batch`
    again and again: the stage's trainable groups, the strategy's preparation, the stage's
    optimizer, optimizer_step under the `precision`'s autocast. A context: leaving it gives
    the stage back (the model's loaded weights restored)."""

    def __init__(self, model: MultimodalLM, stage: StageConfig, parallel: ParallelConfig,
                 world: World, batch: dict, precision: str = "bf16"):
        self.world, self.precision = world, precision
        self.scope = contextlib.ExitStack()
        lrs = stage_lrs(model, stage)   # worked out once, as a stage run does
        param_groups(model, stage, lrs)
        self.strategy = stage_strategy(parallel.strategy, world, model, stage, precision, lrs)
        self.model, self.wrapped, _ = self.strategy.prepare(model, precision, parallel,
                                                            self.scope)
        self.groups = param_groups(self.model, stage, lrs)
        self.optimizer = stage_optimizer(self.groups, stage, world, self.strategy)
        self.scaler = torch.amp.GradScaler(world.device.type, enabled=precision == "fp16")
        self.batch, self.grad_clip = batch, stage.grad_clip
        self.tokens = float(model.answer_tokens(batch["input_ids"], batch["attention_mask"],
                                                batch["labels"], batch["has_image"]))
        if not self.tokens:
            raise AssertionError("the batch has no answer token within the model's max_length")
        self.wrapped.train()

    def __call__(self) -> None:
        optimizer_step(self.wrapped, self.strategy, [self.batch], self.tokens, self.world,
                       self.precision, self.scaler, self.optimizer, self.groups,
                       self.grad_clip)

    def __enter__(self) -> TrainingStep:
        return self

    def __exit__(self, *exc) -> None:
        self.scope.close()
