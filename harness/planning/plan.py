"""`ablate plan`: the expanded runs of a spec as a table of axis values, which are done, which
stages each still has to train (a stage shared by several runs is trained by the first and
reused by the rest), the estimated training compute and GPU-hours of what remains, and the
Slurm array `ablate run --executor slurm` would submit. It needs neither weights nor data nor
a GPU: architectures are built on the meta device and dataset sizes come from the spec."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from core.errors import HarnessError
from harness.config.profiles import GpuThroughput, SlurmProfile, load_profile
from harness.planning.estimate import TEXT_TOKENS, architecture_cost, stage_flops, stage_memory
from harness.runs.rundir import RunDir
from harness.runs.stages import stage_dir_name, stage_keys
from harness.scheduler.gpu_slots import GpuSlotError, visible_gpus
from harness.scheduler.states import view_spec
from harness.specs import ExperimentSpec


class PlanDoesNotFit(HarnessError):
    """A stage whose estimated memory exceeds the profile's GPUs; carries the table."""

    def __init__(self, message: str, table: pd.DataFrame, footer: list[str]):
        super().__init__(message)
        self.table, self.footer = table, footer


def plan_table(spec: ExperimentSpec, workdir: Path, profile: str | None = None
               ) -> tuple[pd.DataFrame, list[str]]:
    """The runs table and the footer lines. `profile` (default: the spec's own) sizes the
    Slurm array and the GPU the GPU-hours assume."""
    workdir = Path(workdir).resolve()
    profile = profile or spec.slurm_profile
    slurm = load_profile(profile, check_cluster=False) if profile else None
    gpu = slurm.gpu if slurm else GpuThroughput()
    views = view_spec(spec, workdir)
    planned: set[str] = set()
    total, unknown, stages_to_train, stage_uses, rows = 0.0, False, 0, 0, []
    ranks = slurm.world_size if slurm else 1
    too_big: list[str] = []
    for i, (run, view) in enumerate(zip(spec.runs, views)):
        cfg = run.config
        stages = {s.name: s for s in cfg.stages}
        trains, reuses, flops, memory = [], [], 0.0, None
        for name, expert, key in stage_keys(cfg):
            if view.state == "DONE":
                continue
            stage_uses += 1
            label = f"{name}[{expert}]" if expert else name
            if RunDir(workdir / "stages" / stage_dir_name(name, expert, key)).done:
                reuses.append(f"{label} (done)")
            elif key in planned:
                reuses.append(f"{label} (shared)")
            else:
                planned.add(key)
                trains.append(label)
                stages_to_train += 1
                f = stage_flops(cfg, stages[name], expert)
                if f is None:
                    unknown = True
                else:
                    flops += f
                m = stage_memory(cfg, stages[name], ranks, expert)
                if m is not None:
                    memory = max(memory or 0.0, m.total)
                    if m.total > 0.9 * gpu.memory_gb:
                        too_big.append(f"{run.name} stage {label}: {m.total:.0f} GB per GPU "
                                       f"({m.strategy} on {ranks}: parameters {m.params:.0f}, "
                                       f"gradients {m.grads:.0f}, optimizer "
                                       f"{m.optimizer:.0f}, activations "
                                       f"{m.activations:.0f}, gathered {m.gathered:.0f})")
        total += flops
        cost = architecture_cost(cfg)
        row = {"#": i, **run.labels, "run": run.key, "state": view.state,
               "visual tokens": cost.visual_tokens,
               "trains": ", ".join(trains) or "-", "reuses": ", ".join(reuses) or "-",
               "train PFLOPs": round(flops / 1e15, 3) if trains else 0.0,
               "GPU-h": round(gpu.hours(flops), 2) if trains else 0.0,
               "GB/GPU": round(memory, 1) if memory is not None else "-"}
        if view.state == "DONE":
            row["trains"] = row["reuses"] = ""
            row["state"] = f"DONE ({view.detail})" if view.detail else "DONE"
        rows.append(row)
    run_hours = [r["GPU-h"] for r in rows if r["trains"]]
    done = sum(v.state == "DONE" for v in views)
    footer = [f"{len(spec.runs)} runs: {done} done, {len(spec.runs) - done} to run; "
              f"{stage_uses} stages in those runs, {stages_to_train} to train (the rest are "
              "shared or already done)",
              f"estimated training compute: {total / 1e15:,.3f} PFLOPs"
              + (" (plus runs whose LLM size is unknown here)" if unknown else "")
              + f" (3x forward of trained parts, {TEXT_TOKENS} text tokens per sample)",
              f"estimated GPU-hours: {gpu.hours(total):,.1f} on {gpu.describe()}"
              + (", training only" if not unknown else ", training of the runs sized above")]
    footer.append(f"memory: the largest stage's estimate per GPU is shown (GB/GPU; on {ranks} "
                  f"rank(s), against {gpu.memory_gb:g} GB)")
    footer += [f"#{i}: {v.reason}" for i, v in enumerate(views)   # why not reused
               if v.state == "NEW" and v.reason]
    if too_big:
        raise PlanDoesNotFit(
            f"{len(too_big)} stage(s) do not fit on {gpu.memory_gb:g}-GB GPUs (90% usable):\n  "
            + "\n  ".join(too_big[:10]) + ("\n  ..." if len(too_big) > 10 else "")
            + "\nfix: more GPUs (the profile's gpus_per_node, tasks_per_node or nodes), a "
              "smaller parallel.micro_batch (accumulation keeps the global batch), or "
              "parallel.activation_checkpointing: true", table=pd.DataFrame(rows).set_index("#"),
            footer=footer)
    todo = len(spec.runs) - done
    if slurm is not None and todo:
        footer += slurm_lines(slurm, Path(profile), todo, max(run_hours, default=0.0))
    elif todo:
        footer.append("Slurm: no profile (give the spec a `slurm:` profile or --profile) "
                      "to see the array it would submit")
    if todo:
        footer.append(local_line())
    return pd.DataFrame(rows).set_index("#"), footer


def local_line() -> str:
    """What `ablate run --executor local` would hand its jobs on this machine."""
    try:
        gpus = visible_gpus()
    except GpuSlotError as exc:
        return f"local executor: {exc}"
    if not gpus:
        return "local executor: this machine shows no GPU; local jobs run on the CPU"
    return (f"local executor: this machine shows GPU {','.join(map(str, gpus))}; `ablate run "
            f"--max-parallel P --gpus-per-job G` runs P jobs at once, job slot k on GPUs "
            f"k*G..k*G+G-1 of these (default G = 1: at most {len(gpus)} at once)")


def slurm_lines(profile: SlurmProfile, path: Path, tasks: int, longest_gpu_hours: float
                ) -> list[str]:
    """The array `ablate run --executor slurm` submits: one task per run still to do, and
    how often the longest task will hit the time limit and be requeued (it resumes from its
    last checkpoint each time)."""
    p = profile
    gpus = max(p.gpus_per_node, 1) * p.nodes
    wall_h = longest_gpu_hours / gpus
    limit_h = p.time_min / 60
    requeues = max(0, int(wall_h // limit_h)) if limit_h else 0
    lines = [f"Slurm ({path}): 1 array of {tasks} tasks, sbatch --array=0-{tasks - 1}"
             f"%{p.array_parallelism} --partition={p.partition} --nodes={p.nodes} "
             f"--gpus-per-node="
             f"{p.gpus_per_node} --ntasks-per-node={p.ranks_per_node} "
             f"--cpus-per-task={p.cpus_per_task} --mem={p.mem_gb}GB "
             f"--time={p.time_min}"
             + (f" --account={p.account}" if p.account else "")
             + (f" --qos={p.qos}" if p.qos else "")
             + (f" --constraint={p.constraint}" if p.constraint else ""),
             f"  longest task: about {wall_h:.1f} h on {gpus} GPU(s) against a "
             f"{p.time_min}-min limit"
             + (f": about {requeues} time-limit requeue(s), each resuming from its last "
                f"checkpoint" if requeues else "")]
    if requeues > p.max_requeues:
        lines.append(f"  WARNING: that is more than the profile's max_requeues "
                     f"({p.max_requeues}); raise max_requeues or time_min")
    return lines


def search_plan(search, workdir: Path, profile: str | None = None
                ) -> tuple[pd.DataFrame, list[str]]:
    """A greedy search's first round (the start set and the start set plus each candidate, at
    every seed) planned like a spec, and a bound on the rounds after it: round r trains the
    candidates left, so at most pool + (pool - 1) + ... arms until max_experts."""
    runs = [search.run(search.start, seed) for seed in search.seeds]
    runs += [search.run(search.start + [e], seed) for e in search.pool for seed in search.seeds]
    spec = ExperimentSpec(search.name, search.file, search.description, ["experts", "seed"],
                          runs, None, search.slurm_profile)
    table, footer = plan_table(spec, workdir, profile)
    first = len(search.pool)
    later = sum(len(search.pool) - r for r in range(1, search.max_experts - len(search.start)))
    pending = table[table["trains"] != ""]   # done runs have their trains cell emptied
    mean = float(pending["GPU-h"].mean()) if len(pending) else 0.0
    footer.insert(0, f"round 1 of the search: {first} candidates x {len(search.seeds)} seed(s) "
                     "(plus the start set)")
    footer.append(f"later rounds: at most {later} more arms x {len(search.seeds)} seed(s) up to "
                  f"{search.max_experts} experts; at round 1's mean cost that is at most "
                  f"{later * len(search.seeds) * mean:,.1f} more GPU-hours (arms with more "
                  "experts cost more, shared pre-alignment less)")
    if search.halving is not None:
        footer += _halving_lines(search, runs, profile)
    return table, footer


def _halving_lines(search, runs, profile: str | None) -> list[str]:
    """The search's training compute with and without successive halving, from the estimate
    and for a search not yet started: round 1 trains every stage of its arms once (the
    experts' pre-alignment is shared); a later round's arm trains its joint stages; halving
    cuts each candidate's last stage to what the rungs let it train."""
    h = search.halving
    profile = profile or search.slurm_profile
    gpu = load_profile(profile, check_cluster=False).gpu if profile else GpuThroughput()
    seen: set[str] = set()
    first, joint, last = 0.0, [], []
    candidates = runs[len(search.seeds):]
    for run in runs:
        cfg = run.config
        stages = {st.name: st for st in cfg.stages}
        own = flops = 0.0
        for name, expert, key in stage_keys(cfg):
            flops = stage_flops(cfg, stages[name], expert) or 0.0
            if key not in seen:
                seen.add(key)
                first += flops
            if expert is None:
                own += flops
        if run in candidates:   # `flops`: its last stage's
            joint.append(own)
            last.append(flops)
    joint_mean = sum(joint) / len(joint) if joint else 0.0
    last_mean = sum(last) / len(last) if last else 0.0
    seeds, pool = len(search.seeds), len(search.pool)
    sizes = [pool - r for r in range(0, search.max_experts - len(search.start))]
    without = first + sum(sizes[1:]) * seeds * joint_mean

    def saved(decided_at_first: bool = False) -> float:
        return sum(n * seeds * last_mean * (1.0 - h.last_stage_share(n, decided_at_first))
                   for n in sizes)
    rungs = ", ".join(f"{f:g}" for f in h.rungs)
    share = f"{100 * last_mean / joint_mean if joint_mean else 0:.0f}%"
    whole = (f"the whole search (round 1, then {sum(sizes[1:])} later arms x {seeds} seed(s) "
             f"training their joint stages): {_hours(gpu.hours(without))} GPU-hours without "
             "halving, ")
    best, worst = without - saved(True), without - saved()
    if not h.by_evidence:
        return [f"successive halving (rungs {rungs}, keep {h.keep_fraction:g}, at least "
                f"{h.min_keep}): a candidate's last stage is {share} of its joint stages' "
                f"estimated FLOPs; round 1 trains {100 * h.last_stage_share(pool):.0f}% of its "
                "candidates' last-stage steps",
                whole + f"{_hours(gpu.hours(worst))} with it"
                + (f" (x{worst / without:.2f})" if without else "")
                + "; derived from the estimate, not measured"]
    ratio = (f" (x{best / without:.2f} to x{worst / without:.2f})" if without else "")
    return [f"successive halving by evidence (rungs {rungs}, risk {h.risk:g} of stopping a "
            f"round's best; at least {h.min_keep} go on): a candidate's last stage is {share} "
            "of its joint stages' estimated FLOPs; what a round trains depends on its scores",
            whole + f"between {_hours(gpu.hours(best))} (every round decided at the first "
            f"rung) and {_hours(gpu.hours(worst))} (no one stopped"
            + (f", keep {h.keep:g}" if h.keep is not None else "") + ") with it" + ratio
            + "; derived from the estimate, not measured"]


def _hours(x: float) -> str:
    return f"{x:,.1f}" if x >= 10 else f"{x:.3g}"
