"""The time-based checkpoint's decision (harness.training.loop): a collective every step
cost each step a round trip between ranks; the clock is asked only every few steps."""
import torch

from harness.training import loop
from harness.training.distributed import World


class _TwoRanks(World):
    @property
    def distributed(self) -> bool:
        return True


def test_the_clock_is_asked_every_few_steps_and_never_late_by_more_than_its_slack(monkeypatch):
    asked = []

    def broadcast(world, value):
        asked.append(value)
        return value

    now = [0.0]
    monkeypatch.setattr(loop, "broadcast", broadcast)
    monkeypatch.setattr(loop.time, "monotonic", lambda: now[0])
    world = _TwoRanks(0, 2, 0, torch.device("cpu"))
    clock = loop._CheckpointClock(minutes=1.0)
    step_time, saves = 0.1, []
    for step in range(3000):                       # 300 s of 0.1-s steps
        now[0] += step_time
        if clock.due(world, step, step_time):
            saves.append(now[0])
            clock.saved()
    assert len(asked) <= 3000 * step_time / (loop.CLOCK_SLACK * 60) + 5   # ~100, not 3000
    gaps = [b - a for a, b in zip([0.0] + saves, saves)]
    assert len(saves) == 4 and all(60 <= g <= 60 * (1 + loop.CLOCK_SLACK) + step_time
                                   for g in gaps), gaps


def test_slow_steps_ask_every_step_and_no_minutes_never_asks(monkeypatch):
    asked = []
    monkeypatch.setattr(loop, "broadcast", lambda world, value: asked.append(value) or value)
    now = iter(range(100))
    monkeypatch.setattr(loop.time, "monotonic", lambda: float(next(now)))
    world = _TwoRanks(0, 2, 0, torch.device("cpu"))
    clock = loop._CheckpointClock(minutes=1.0e-6)
    assert all(clock.due(world, step, 0.5) for step in range(5)) and len(asked) == 5
    asked.clear()
    off = loop._CheckpointClock(minutes=None)
    assert not any(off.due(world, step, 0.5) for step in range(5)) and not asked
