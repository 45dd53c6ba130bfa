"""A trained expert's blocks are checkpointed through its library's own switch when the stage
asks for activation checkpointing: every block the expert declares (`checkpoint_units`) runs
twice in a forward and backward (recomputed), the gradients are those without checkpointing,
and what is kept for backward shrinks. Before this, only the LLM's decoder layers were
checkpointed and Eagle's trained ConvNeXt-XXL at 1024 px kept about 7.5 GiB per image."""
import pytest
import torch

from harness.training.preparation import checkpointed
from models.experts import EXPERTS, ExpertConfig, build_expert

FAMILIES = EXPERTS.names()


def _saved_bytes_and_grads(expert, pixels):
    """(bytes autograd keeps for backward, each counted once per storage; the gradients)."""
    storages: dict[int, int] = {}

    def pack(t):
        storages[t.untyped_storage()._cdata] = t.untyped_storage().nbytes()
        return t
    expert.zero_grad(set_to_none=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = expert(pixels)
    sum(m.float().pow(2).mean() for m in out.maps.values()).backward()
    return sum(storages.values()), [p.grad.clone() for p in expert.parameters()
                                    if p.grad is not None]


class _LayerCalls:
    """How often each block's layers run: a pre-hook on every module inside each block (a
    recomputation stops early, at the last activation backward needs, and transformers
    recomputes a layer's forward without calling the layer itself). `take()` returns the
    counts since the last take."""
    def __init__(self, units):
        self.units, self.counts = units, [{} for _ in units]
        self.handles = [m.register_forward_pre_hook(self._hook(i, name))
                        for i, u in enumerate(units) for name, m in u.named_modules() if name]

    def _hook(self, i, name):
        return lambda *a: self.counts[i].__setitem__(name, self.counts[i].get(name, 0) + 1)

    def take(self) -> list[dict]:
        out, self.counts = self.counts, [{} for _ in self.units]
        return out

    def remove(self):
        for h in self.handles:
            h.remove()


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_recomputes_its_blocks_with_the_same_gradients(family):
    torch.manual_seed(0)
    expert = build_expert(ExpertConfig(id=family, resolution=64, freeze=False)).train()
    pixels = torch.randn(2, 3, 64, 64)
    units = expert.checkpoint_units()
    assert units, f"{family} declares no checkpointed blocks"
    calls = _LayerCalls(units)
    plain_bytes, plain = _saved_bytes_and_grads(expert, pixels)
    plain_counts = calls.take()
    expert.set_activation_checkpointing(True)
    kept_bytes, checkpointed = _saved_bytes_and_grads(expert, pixels)
    counts = calls.take()
    expert.set_activation_checkpointing(False)
    _saved_bytes_and_grads(expert, pixels)     # switched off again: as without
    again_counts = calls.take()
    calls.remove()
    # every block that ran had its layers run again in backward
    ran = [i for i, c in enumerate(plain_counts) if c]
    assert ran
    for i in ran:
        assert any(counts[i].get(m, 0) == 2 * n for m, n in plain_counts[i].items()), (
            f"{family}: block {i} was not recomputed: {plain_counts[i]} -> {counts[i]}")
    assert kept_bytes < plain_bytes
    assert len(plain) == len(checkpointed)
    for a, b in zip(plain, checkpointed):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert again_counts == plain_counts


class _Model(torch.nn.Module):
    def __init__(self, experts):
        super().__init__()
        self.llm = torch.nn.Linear(2, 2)
        self.experts = torch.nn.ModuleDict(experts)


def test_a_stage_checkpoints_the_experts_it_trains_and_not_the_frozen_ones():
    trained = build_expert(ExpertConfig(id="convnext", resolution=64, freeze=False)).train()
    frozen = build_expert(ExpertConfig(id="clip-vit", resolution=64, freeze=True)).train()
    model = _Model({"trained": trained, "frozen": frozen})
    with checkpointed(model, True):
        assert all(s.grad_checkpointing for s in trained.trunk.stages)
        assert not frozen.checkpoint_blocks
    assert not any(s.grad_checkpointing for s in trained.trunk.stages)
    with checkpointed(model, False):
        assert not any(s.grad_checkpointing for s in trained.trunk.stages)
