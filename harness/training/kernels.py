"""How a run's process sets up torch's kernels and CUDA memory: seeding, deterministic
kernels when the run asks for them (parallel.deterministic), the CUDA caching allocator's
expandable segments, and autocast to the run's precision outside the training step
(evaluation computes as training did).

Deterministic kernels cost speed on a GPU (and torch then fills every new tensor with NaN so
a read of uninitialized memory shows), while on the CPU they are free and are what the tests'
bit-for-bit comparisons lean on: so by default they are on for a CPU run and off on CUDA.
Expandable segments let the allocator grow a segment instead of keeping blocks of each size
apart, which keeps a training job with changing sequence lengths from running out of memory
through fragmentation; a setting the user made is left alone."""
from __future__ import annotations

import os

import torch

COMPUTE_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
ALLOC_CONF = "PYTORCH_CUDA_ALLOC_CONF"
EXPANDABLE = "expandable_segments:True"


def autocast(device: torch.device, precision: str, cache_enabled: bool = True):
    """Autocast to the run's `precision` (no: off, fp32 as loaded). Training turns the cache
    of weight casts off (harness.training.loop)."""
    if precision == "no":
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=COMPUTE_DTYPES[precision],
                          cache_enabled=cache_enabled)


def wants_determinism(setting: bool | None, device: torch.device) -> bool:
    """parallel.deterministic on `device`: None means on for the CPU, off on CUDA."""
    return device.type == "cpu" if setting is None else setting


def seed_kernels(seed: int, deterministic: bool = True) -> None:
    """Seed torch and choose deterministic kernels or not (every run sets both, so a run in
    a process another run has used does not inherit its choice). On CUDA some backward
    kernels (bilinear upsampling, used when a trainable expert's map is resized) have no
    deterministic version; there determinism warns instead of refusing to train."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic, warn_only=torch.cuda.is_available())
    torch.manual_seed(seed)


def job_environment(env: dict[str, str]) -> dict[str, str]:
    """`env` for a training process: expandable segments unless the user configured the
    allocator."""
    return env if ALLOC_CONF in env else {**env, ALLOC_CONF: EXPANDABLE}


def use_expandable_segments() -> None:
    """This process's allocator with expandable segments (read when CUDA first allocates,
    so called before a run touches the GPU), unless the user configured it."""
    os.environ.update(job_environment(dict(os.environ)))
