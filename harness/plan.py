"""`ablate plan`: the expanded runs of a spec as a table of axis values, which are done, which
stages each still has to train (a stage shared by several runs is trained by the first and
reused by the rest), and the estimated training compute of what remains."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.estimate import TEXT_TOKENS, architecture_cost, stage_flops
from harness.pipeline import stage_dir_name, stage_keys
from harness.rundir import RunDir
from harness.scheduler.views import view_spec
from harness.spec import ExperimentSpec


def plan_table(spec: ExperimentSpec, workdir: Path) -> tuple[pd.DataFrame, list[str]]:
    workdir = Path(workdir).resolve()
    views = view_spec(spec, workdir)
    planned: set[str] = set()
    total, unknown, stages_to_train, stage_uses, rows = 0.0, False, 0, 0, []
    for i, (run, view) in enumerate(zip(spec.runs, views)):
        cfg = run.config
        stages = {s.name: s for s in cfg.stages}
        trains, reuses, flops = [], [], 0.0
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
        total += flops
        cost = architecture_cost(cfg)
        row = {"#": i, **run.labels, "run": run.key, "state": view.state,
               "visual tokens": cost.visual_tokens,
               "trains": ", ".join(trains) or "-", "reuses": ", ".join(reuses) or "-",
               "train TFLOPs": round(flops / 1e12, 2) if trains else 0.0}
        if view.state == "DONE":
            row["trains"] = row["reuses"] = ""
            row["state"] = f"DONE ({view.detail})" if view.detail else "DONE"
        rows.append(row)
    done = sum(v.state == "DONE" for v in views)
    footer = [f"{len(spec.runs)} runs: {done} done, {len(spec.runs) - done} to run; "
              f"{stage_uses} stages in those runs, {stages_to_train} to train (the rest are "
              "shared or already done)",
              f"estimated training compute: {total / 1e12:.2f} TFLOPs"
              + (" (plus runs whose LLM size is unknown here)" if unknown else "")
              + f" (3x forward of trained parts, {TEXT_TOKENS} text tokens per sample)"]
    return pd.DataFrame(rows).set_index("#"), footer
