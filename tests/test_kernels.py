"""A run's kernel and allocator setup (harness.training.kernels): determinism is the run's
choice (on by default on the CPU, where the tests compare bit for bit; off on CUDA, where it
costs speed and NaN-fills new tensors), and training processes get expandable segments unless
the user configured the allocator."""
import os

import torch

from harness.training.kernels import (
    ALLOC_CONF,
    job_environment,
    seed_kernels,
    use_expandable_segments,
    wants_determinism,
)


def test_determinism_is_a_choice_with_a_default_per_device():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert wants_determinism(None, cpu) and not wants_determinism(None, cuda)
    assert wants_determinism(True, cuda) and not wants_determinism(False, cpu)
    before = torch.are_deterministic_algorithms_enabled()
    try:
        seed_kernels(0, deterministic=False)
        assert not torch.are_deterministic_algorithms_enabled()
        seed_kernels(0, deterministic=True)
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(before)


def test_jobs_get_expandable_segments_unless_the_user_set_the_allocator(monkeypatch):
    assert job_environment({"PATH": "/bin"})[ALLOC_CONF] == "expandable_segments:True"
    mine = {ALLOC_CONF: "max_split_size_mb:128"}
    assert job_environment(mine) == mine
    monkeypatch.delenv(ALLOC_CONF, raising=False)
    use_expandable_segments()
    assert os.environ[ALLOC_CONF] == "expandable_segments:True"
    monkeypatch.setenv(ALLOC_CONF, "backend:native")
    use_expandable_segments()
    assert os.environ[ALLOC_CONF] == "backend:native"


def test_parallel_deterministic_is_read_from_the_config(tmp_path):
    import pytest

    from core.errors import ConfigError
    from harness.specs.run_file import load_run_config
    from tests.tiny import tiny_run_yaml
    text = tiny_run_yaml()
    for value, want in (("", None), ("parallel: {deterministic: false}\n", False),
                        ("parallel: {deterministic: true}\n", True)):
        path = tmp_path / "run.yaml"
        path.write_text(text + value)
        assert load_run_config(path).parallel.deterministic is want
    path.write_text(text + "parallel: {deterministic: sometimes}\n")
    with pytest.raises(ConfigError, match="parallel.deterministic"):
        load_run_config(path)
