"""The ranks of a submitit job of several tasks, as torchrun's variables (RANK, WORLD_SIZE,
LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT), derived from what the job's
launcher sets: Slurm's SLURM_* variables, or submitit's local executor's SUBMITIT_LOCAL_*.

Derived here rather than by submitit's TorchDistributedEnvironment.export(), which refuses to
run when any of those variables is already set (a shell that exported MASTER_ADDR, a job
started from inside another job), and so that a job of several nodes is one world: Slurm's
task counts are over the whole job, and the rendezvous host is the first node of the job's
nodelist, expanded from Slurm's compressed form (`gpu[01-02]`) by our own parser rather than
a `scontrol` call per task."""
from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from core.errors import HarnessError
from core.registry import Registry

PORTS = (20000, 60000)   # the rendezvous port is a function of the job id, in this range


class RankEnvironmentError(HarnessError):
    """A job's launcher variables are missing or malformed."""


@dataclass(frozen=True)
class Ranks:
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    master_addr: str
    master_port: int

    def variables(self) -> dict[str, str]:
        return {"RANK": str(self.rank), "WORLD_SIZE": str(self.world_size),
                "LOCAL_RANK": str(self.local_rank),
                "LOCAL_WORLD_SIZE": str(self.local_world_size),
                "MASTER_ADDR": self.master_addr, "MASTER_PORT": str(self.master_port)}


def _int(environ: Mapping[str, str], name: str) -> int:
    value = environ.get(name)
    if value is None or not value.strip().isdigit():
        raise RankEnvironmentError(f"{name}={value!r} in the job's environment; expected a "
                                   "non-negative integer (is this a task of the job's step?)")
    return int(value)


def job_port(job_id: str) -> int:
    """The same port on every task of a job, different for jobs whose ids differ by less
    than the range (array tasks on one node included: each has its own SLURM_JOB_ID)."""
    digits = re.sub(r"\D", "", job_id) or "0"
    low, high = PORTS
    return low + int(digits) % (high - low)


_GROUP = re.compile(r"\[([^\]]*)\]")


def _expand_group(body: str, text: str) -> list[str]:
    out = []
    for part in body.split(","):
        lo, sep, hi = part.partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise RankEnvironmentError(f"nodelist {text!r}: cannot read range {part!r} "
                                       "(expected N or N-M)")
        width = len(lo)   # zero padding, as Slurm keeps it: gpu[01-02] is gpu01, gpu02
        out += [str(n).zfill(width) for n in range(int(lo), int(hi or lo) + 1)]
    return out


def expand_nodelist(text: str) -> list[str]:
    """Slurm's compressed hostlist as host names, in Slurm's order: `gpu[01-02],cpu7` is
    gpu01, gpu02, cpu7; several bracket groups in one name multiply (`a[1-2]b[7,9]`)."""
    hosts, depth, start = [], 0, 0
    for i, ch in enumerate(text + ","):
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if depth < 0 or depth > 1:
            raise RankEnvironmentError(f"nodelist {text!r}: unbalanced brackets")
        if ch == "," and depth == 0:
            item = text[start:i].strip()
            start = i + 1
            if not item:
                continue
            pieces = _GROUP.split(item)   # literal, group, literal, group, ..., literal
            choices = [[p] if k % 2 == 0 else _expand_group(p, text)
                       for k, p in enumerate(pieces)]
            hosts += ["".join(c) for c in itertools.product(*choices)]
    if depth:
        raise RankEnvironmentError(f"nodelist {text!r}: unbalanced brackets")
    return hosts


# by submitit's SUBMITIT_EXECUTOR, which every task of a submitit job has
RANK_SOURCES: Registry[Callable[[Mapping[str, str]], Ranks]] = Registry("job launcher")


@RANK_SOURCES.register("slurm")
def slurm_ranks(environ: Mapping[str, str]) -> Ranks:
    """A task of a Slurm step: the world is every task of the job over all its nodes."""
    nodelist = environ.get("SLURM_STEP_NODELIST") or environ.get("SLURM_JOB_NODELIST")
    if not nodelist:
        raise RankEnvironmentError("neither SLURM_STEP_NODELIST nor SLURM_JOB_NODELIST is in "
                                   "the job's environment")
    world, nodes = _int(environ, "SLURM_NTASKS"), _int(environ, "SLURM_NNODES")
    return Ranks(rank=_int(environ, "SLURM_PROCID"), world_size=world,
                 local_rank=_int(environ, "SLURM_LOCALID"),
                 local_world_size=max(1, world // max(1, nodes)),
                 master_addr=expand_nodelist(nodelist)[0],
                 master_port=job_port(environ.get("SLURM_JOB_ID", "0")))


@RANK_SOURCES.register("local")
def local_ranks(environ: Mapping[str, str]) -> Ranks:
    """A task of a submitit local job: one node, this machine."""
    world = _int(environ, "SUBMITIT_LOCAL_NTASKS")
    return Ranks(rank=_int(environ, "SUBMITIT_LOCAL_GLOBALID"), world_size=world,
                 local_rank=_int(environ, "SUBMITIT_LOCAL_LOCALID"), local_world_size=world,
                 master_addr="127.0.0.1",
                 master_port=job_port(environ.get("SUBMITIT_LOCAL_JOB_ID", "0")))



def job_ranks(environ: Mapping[str, str]) -> Ranks | None:
    """This task's place in its job (None: not a task of a submitit job)."""
    launcher = environ.get("SUBMITIT_EXECUTOR")
    if not launcher:
        return None
    return RANK_SOURCES.get(launcher)(environ)
