"""Activation checkpointing through transformers' own switch recomputes the decoder layers in
backward and gives the same gradients as without it, without the deprecation warning of the
old name."""
import warnings

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from models.llm import set_activation_checkpointing


def _on(model) -> bool:
    name = ("is_activation_checkpointing" if hasattr(type(model), "is_activation_checkpointing")
            else "is_gradient_checkpointing")
    return getattr(model, name)


def _grads(model, ids):
    model.zero_grad()
    model(input_ids=ids, labels=ids).loss.backward()
    return [p.grad.clone() for p in model.parameters()]


def test_checkpointed_layers_give_the_same_gradients():
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=2,
                                         num_key_value_heads=2)).train()
    ids = torch.randint(0, 64, (2, 12))
    plain = _grads(model, ids)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        set_activation_checkpointing(model, True)
        assert _on(model)
        checkpointed = _grads(model, ids)
        set_activation_checkpointing(model, False)
    assert not _on(model)
    for a, b in zip(plain, checkpointed):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
