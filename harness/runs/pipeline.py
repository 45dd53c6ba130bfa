"""One run end to end, around its lock: a finished run is returned as recorded (scored again
if its scoring code changed), otherwise the run directory is prepared, the run is trained and
evaluated by a `harness.runs.trainer.Trainer`, and its end (DONE, PAUSED at a rung,
INTERRUPTED or FAILED, with the reason) is recorded and told to the hooks. Stage keys and
reuse live in harness.runs.stages, sharded evaluation in harness.evaluation.sharded."""
from __future__ import annotations

import contextlib
import sys
import traceback
from pathlib import Path

import yaml

from core.contained import inside
from core.errors import DataError, HarnessError
from core.files import atomic_write_text
from harness.config.run_config import RunConfig, device_problem
from harness.config.selection import Rung
from harness.data.fingerprints import use_workdir
from harness.evaluation.rescore import Rescored, rescore_run
from harness.runs.data_changes import write_sources
from harness.runs.failures import await_main_record, failure_reason
from harness.runs.outcome import PausedRun, RunResult, load_paused, load_result, rung_dir
from harness.runs.rundir import RunDir
from harness.runs.trainer import Trainer
from harness.training import StageInterrupted
from harness.training.distributed import (
    World,
    abort,
    barrier,
    broadcast,
    init_world,
    main_holds,
)
from harness.training.kernels import use_expandable_segments


class RunHooks:
    """Told about a run's life (the scheduler's job mirrors it into MLflow). Called with the
    run's lock held, so one run is never reported by two processes at once."""

    def started(self, cfg: RunConfig, run_dir: RunDir) -> None: ...

    def finished(self, cfg: RunConfig, run_dir: RunDir) -> None: ...

    def rescored(self, cfg: RunConfig, run_dir: RunDir, what: list[Rescored]) -> None:
        """A finished run's scores were computed again (harness.evaluation.rescore); called
        before `finished`."""

    def stopped(self, cfg: RunConfig, run_dir: RunDir, state: str, reason: str) -> None: ...


def run(cfg: RunConfig, workdir: Path, progress: bool = True, stop_after: int | None = None,
        hooks: RunHooks | None = None, rung: Rung | None = None) -> RunResult | PausedRun:
    """Train and evaluate `cfg` under workdir/runs/<key>; a finished run is returned as is.
    A second process asking for the same run waits for the first and then reuses its result.
    With a `rung`, the last stage pauses there: the run is scored on the rung's selection
    split and returned as a PausedRun (state PAUSED) unless it had finished before."""
    hooks = hooks or RunHooks()
    use_expandable_segments()   # before anything of the run allocates on a GPU
    workdir = Path(workdir).resolve()
    use_workdir(workdir)   # data fingerprints and image verdicts cached there
    run_dir = RunDir(inside(workdir / "runs", cfg.key))
    world = _world(cfg)
    main = world.is_main
    with main_holds(world, run_dir.lock_path):
        recorded = _recorded(cfg, run_dir, world, hooks, rung)
        if recorded is not None:
            return recorded
        if main:
            _start(cfg, run_dir, world, hooks)
        try:
            result = _run(cfg, workdir, run_dir, progress, stop_after, world, rung)
        except (StageInterrupted, KeyboardInterrupt, SystemExit) as exc:
            # preemption (submitit exits from its signal handler), Ctrl-C, or a test's stop:
            # the checkpoint is kept and the next attempt resumes from it
            reason = str(exc) if isinstance(exc, StageInterrupted) else \
                f"{type(exc).__name__} (preempted, timed out or cancelled); checkpoint kept"
            if main:
                run_dir.release()
                run_dir.set_status("INTERRUPTED", reason=reason, name=cfg.name)
                hooks.stopped(cfg, run_dir, "INTERRUPTED", reason)
            raise
        except BaseException as exc:
            _record_failure(cfg, run_dir, world, hooks, exc)
            raise
        if main:
            run_dir.release()
            _record_end(cfg, run_dir, hooks, result, rung)
        return result


def _run(cfg: RunConfig, workdir: Path, run_dir: RunDir, progress: bool,
         stop_after: int | None, world: World, rung: Rung | None = None
         ) -> RunResult | PausedRun:
    return Trainer(cfg, workdir, run_dir, world, progress, stop_after, rung).run()


def _world(cfg: RunConfig) -> World:
    problem = device_problem(cfg.device)
    if problem:
        raise HarnessError(problem)
    return init_world(cfg.device)


def _recorded(cfg: RunConfig, run_dir: RunDir, world: World, hooks: RunHooks,
              rung: Rung | None) -> RunResult | PausedRun | None:
    """The run's result if its records already hold it: finished (scored again first if its
    scoring code has changed), or scored at this rung before (nothing is trained)."""
    main = world.is_main
    if broadcast(world, run_dir.done if main else None):
        if main:
            rescore_if_stale(cfg, run_dir, hooks)
            hooks.finished(cfg, run_dir)
        barrier(world)   # the other ranks read the records rank 0 may have rewritten
        return load_result(run_dir)
    if rung is not None:
        paused = load_paused(run_dir, rung) if main else None
        if broadcast(world, paused is not None):
            return paused or load_paused(run_dir, rung)
    return None


def _start(cfg: RunConfig, run_dir: RunDir, world: World, hooks: RunHooks) -> None:
    """Rank 0 prepares the run directory: its config, its data's sources, status RUNNING."""
    for old in run_dir.path.glob("rank-*.error"):
        old.unlink()
    run_dir.write_json("config.json", cfg.to_dict())
    atomic_write_text(run_dir.path / "config.yaml",
                      yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    write_sources(run_dir, cfg)   # what its data was, by path and content
    run_dir.set_status("RUNNING", name=cfg.name, ranks=world.size, notices=[])
    run_dir.reserve()   # given back before the last status: room for it on a full disk
    hooks.started(cfg, run_dir)


def _record_failure(cfg: RunConfig, run_dir: RunDir, world: World, hooks: RunHooks,
                    exc: BaseException) -> None:
    """Called while `exc` is handled. A failing rank aborts its process groups, so peers
    waiting for it in a collective fail now rather than after NCCL's timeout
    (harness.training.distributed.abort); rank 0 records why first."""
    if not world.is_main:   # rank 0 owns the status: leave it this rank's traceback
        with contextlib.suppress(OSError):   # a full disk may refuse even this
            atomic_write_text(run_dir.path / f"rank-{world.rank}.error",
                              traceback.format_exc())
        abort(world)
        await_main_record(run_dir)
        return
    run_dir.release()
    reason = failure_reason(run_dir, exc)
    run_dir.set_status("FAILED", reason=reason, name=cfg.name)
    hooks.stopped(cfg, run_dir, "FAILED", reason)
    abort(world)


def _record_end(cfg: RunConfig, run_dir: RunDir, hooks: RunHooks,
                result: RunResult | PausedRun, rung: Rung | None) -> None:
    """Rank 0 records how the run ended: DONE, or PAUSED at the rung."""
    if isinstance(result, PausedRun):
        r = result.rung
        reason = (f"paused at rung {r['number']} (step {r['step']} of {r['total']} of "
                  f"stage {r['stage']}) for successive halving; selection scores in "
                  f"{rung_dir(run_dir, rung).path}")
        run_dir.set_status("PAUSED", reason=reason, name=cfg.name,
                           rung=r["number"], step=r["step"], total=r["total"])
        hooks.stopped(cfg, run_dir, "PAUSED", reason)
        return
    run_dir.set_status("DONE", name=cfg.name)
    hooks.finished(cfg, run_dir)


def rescore_if_stale(cfg: RunConfig, run_dir: RunDir, hooks: RunHooks) -> list[Rescored]:
    """A finished run whose scoring code has changed since it was scored, scored again from
    its stored predictions (nothing is trained or generated); its lock is held. A run that
    cannot be (its predictions are gone or malformed) keeps its scores, with a warning."""
    try:
        done = rescore_run(run_dir.path)
    except DataError as exc:
        print(f"warning: run {cfg.name} ({cfg.key}) was scored by other code than today's and "
              f"cannot be scored again; its earlier scores stand: {exc}", file=sys.stderr)
        return []
    for item in done:
        print("\n".join(item.lines()), flush=True)
    if done:
        hooks.rescored(cfg, run_dir, done)
    return done

