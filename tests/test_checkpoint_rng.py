"""A stage checkpointed on more GPUs resumes on fewer (a documented feature): each rank keeps
the random state of its own GPU only, so nothing indexes devices this machine lacks, and a
checkpoint from before that change (every device's state, a list) still loads. The GPUs are
faked here: torch.cuda's random-state functions stand in for a node with fewer devices."""
from __future__ import annotations

import pytest
import torch

from harness.training import checkpoint


class FakeCuda:
    """`devices` GPUs with a random state each; `current` is this rank's. Asking for a device
    beyond them fails as torch does (its generators are a list indexed by device)."""

    def __init__(self, devices: int, current: int = 0):
        self.states = [torch.full((4,), i, dtype=torch.uint8) for i in range(devices)]
        self.current = current

    def _index(self, device) -> int:
        index = self.current if device in ("cuda", None) else int(
            torch.device(device).index if not isinstance(device, int) else device)
        if index >= len(self.states):
            raise IndexError("list index out of range")
        return index

    def get_rng_state(self, device="cuda"):
        return self.states[self._index(device)].clone()

    def set_rng_state(self, state, device="cuda"):
        self.states[self._index(device)] = state.clone()

    def get_rng_state_all(self):
        return [s.clone() for s in self.states]

    def set_rng_state_all(self, states):
        for i, state in enumerate(states):
            self.set_rng_state(state, i)


@pytest.fixture
def gpus(monkeypatch):
    def node(devices: int, current: int = 0) -> FakeCuda:
        fake = FakeCuda(devices, current)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: fake.current)
        for name in ("get_rng_state", "set_rng_state", "get_rng_state_all",
                     "set_rng_state_all"):
            monkeypatch.setattr(torch.cuda, name, getattr(fake, name))
        return fake
    return node


def test_a_rank_keeps_only_its_own_gpus_random_state(gpus):
    gpus(8, current=3)
    saved = checkpoint.rng_state()
    assert torch.equal(saved["cuda"], torch.full((4,), 3, dtype=torch.uint8))


def test_a_state_saved_on_eight_gpus_resumes_on_one(gpus):
    gpus(8, current=5)
    saved = checkpoint.rng_state()      # rank 5 of 8
    one = gpus(1)
    checkpoint.set_rng_state(saved)     # resumed on a single GPU
    assert torch.equal(one.states[0], torch.full((4,), 5, dtype=torch.uint8))


def test_an_old_checkpoint_with_every_devices_state_still_loads(gpus):
    """Before, rank r saved all its node's devices' states; the one it drew from was its own
    device's, entry r on one node (multi-node runs were not expressible then)."""
    old = {"torch": torch.get_rng_state(),
           "cuda": [torch.full((4,), 10 + i, dtype=torch.uint8) for i in range(8)]}
    one = gpus(2, current=1)
    checkpoint.set_rng_state(old, written_by=1)
    assert torch.equal(one.states[1], torch.full((4,), 11, dtype=torch.uint8))
    assert torch.equal(one.states[0], torch.zeros(4, dtype=torch.uint8))
