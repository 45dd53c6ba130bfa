"""One run end to end: resolve data, build the model, run each stage (reusing a finished
stage with the same key, resuming an interrupted one), evaluate, record cost, and write the
run directory. Stage keys chain: hash(model + seed + stage + its data + upstream key), so
runs that share their first stages share those stages' training."""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import json
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from core.contained import inside
from core.errors import DataError, HarnessError
from core.files import atomic_write_text
from core.identity import content_hash, to_plain
from harness.config.run_config import (
    DATASET_FIELDS,
    RunConfig,
    StageConfig,
    architecture_dict,
    device_problem,
    model_identity,
    solo_config,
    source_identity,
    trainable_lrs,
)
from harness.config.selection import Rung, SelectionSplit
from harness.data.batching import Collator, expert_transforms, to_device
from harness.data.fingerprints import use_workdir
from harness.data.image_check import check_llava_images
from harness.data.llava import load_llava_json, read_llava_records
from harness.data.routing import route_stage_data
from harness.data.synthetic import corpus as synthetic_corpus
from harness.data.synthetic import ensure_synthetic, ensure_validation
from harness.evaluation.generate import (
    choose_by_likelihood,
    collect_questions,
    expected_ids,
    generate,
    score,
)
from harness.evaluation.rescore import Rescored, rescore_run
from harness.evaluation.routing import RoutingLog, routing_metrics
from harness.evaluation.scores import headlines, read_scores
from harness.modelbuild import build_model, build_solo
from harness.runs.cost import forward_flops, parameter_counts, peak_memory_mb
from harness.runs.data_changes import verify_unchanged, write_sources
from harness.runs.rundir import (
    ADAPTER_WEIGHTS,
    RunDir,
    read_stage_weights,
    record_stage_weights,
    save_stage_weights,
    stage_weights_path,
    stage_weights_problem,
)
from harness.training import StageInterrupted, StagePaused, StageResult, split, train_stage
from harness.training.distributed import (
    World,
    abort,
    barrier,
    broadcast,
    gather_to_main,
    init_world,
    main_holds,
    shard,
)
from harness.training.kernels import (
    autocast,
    seed_kernels,
    use_expandable_segments,
    wants_determinism,
)
from harness.training.loop import total_steps
from harness.training.memory import release, without_frames
from models.experts import ExpertConfig
from models.fusion.context_routing import routing_corpus
from models.fusion.routing import load_routing_labels
from models.lora import add_lora, fold, is_adapter
from models.templates import TEMPLATES, template_corpus


@dataclass
class RunResult:
    key: str
    name: str
    path: Path
    scores: dict[str, float]              # benchmark -> its headline metric's value
    metrics: dict[str, dict[str, float]]  # benchmark -> all metrics
    cost: dict
    untrained_scores: dict[str, float] | None = None
    units: dict[str, str] = dataclasses.field(default_factory=dict)  # fraction | points


@dataclass
class PausedRun:
    """A run paused at a rung: its last stage checkpointed there and scored on the selection
    split (harness.config.selection); submitted again without the rung, or with a later one,
    it continues from that checkpoint."""
    key: str
    name: str
    rung: dict                            # rung.json: number, fraction, stage, step, total
    scores: dict[str, float]              # selection benchmark -> its headline value
    metrics: dict[str, dict[str, float]]


@dataclass(frozen=True)
class ResolvedData:
    align: tuple[Path, Path] | None
    sft: tuple[Path, Path] | None
    eval: tuple[Path, Path] | None   # None: every benchmark reads its own files
    corpus: list[str]


def resolve_data(cfg: RunConfig, workdir: Path) -> ResolvedData:
    d = cfg.data
    if d.synthetic is not None:
        root = ensure_synthetic(d.synthetic, workdir / "data")
        images = root / "images"
        parts = {p: (root / f"{p}.json", images) for p in ("align", "sft", "eval")}
        text = synthetic_corpus(d.synthetic)
    else:
        parts = {p: (Path(r.json), Path(r.images)) if (r := getattr(d, p)) else None
                 for p in ("align", "sft", "eval")}
        text = []
        if cfg.model.llm.id == "tiny-llama":  # only a locally trained tokenizer needs a corpus
            for p in parts.values():
                if p:
                    for rec in read_llava_records(p[0])[:5000]:
                        turns = rec.get("conversations") if isinstance(rec, dict) else None
                        text += [t["value"] for t in turns or [] if isinstance(t, dict)
                                 and isinstance(t.get("value"), str)]
    return ResolvedData(parts["align"], parts["sft"], parts["eval"],
                        text + template_corpus() + routing_corpus(cfg.model.fusion.options))


def skipped_images(cfg: RunConfig, data: ResolvedData, show: bool) -> dict[str, set[str]]:
    """Training part -> the images of its records that do not decode, with
    `data.bad_images: skip` (empty otherwise): their records are left out and counted."""
    if cfg.data.bad_images != "skip":
        return {}
    out = {}
    for part in sorted({s.data for s in cfg.stages}):
        json_path, root = getattr(data, part)
        out[part] = check_llava_images(json_path, root, progress=show).bad_images()
    return out


def evaluation_template(cfg: RunConfig):
    """The conversation template questions are asked in: eval.template, else the last
    stage's."""
    return TEMPLATES.get(cfg.eval.template or cfg.stages[-1].template)


def stage_key(cfg: RunConfig, stage: StageConfig, upstream: str | None) -> str:
    """What determines a stage's weights: the network, the seed, the stage's settings with
    what it trains at which rate spelled out, its data (by content, not by where it lies:
    run_config.source_identity), and the stage it starts from."""
    d = cfg.data
    data = (to_plain(d.synthetic) if d.synthetic else
            source_identity(to_plain(getattr(d, stage.data)), DATASET_FIELDS))
    if d.image_aspect_ratio != "resize":   # left out at `resize`, what earlier keys were made with
        data = {**data, "image_aspect_ratio": d.image_aspect_ratio}
    if d.bad_images != "fail":   # fewer records train
        data = {**data, "bad_images": d.bad_images}
    return content_hash({"model": model_identity(architecture_dict(cfg.model)),
                         "seed": cfg.seed,
                         "stage": to_plain(stage),
                         "trains": trainable_lrs(cfg.model.experts, stage),
                         "data": data, "upstream": upstream})


def expert_stage_key(cfg: RunConfig, stage: StageConfig, expert: ExpertConfig,
                     upstream: str | None) -> str:
    """A per-expert stage's key: stage_key of the lone expert's model
    (harness.modelbuild.solo_config); nothing about the other experts or the fusion, so every
    combination containing the expert shares it."""
    return stage_key(dataclasses.replace(cfg, model=solo_config(cfg.model, expert)), stage,
                     upstream)


def stage_keys(cfg: RunConfig) -> list[tuple[str, str | None, str]]:
    """(stage name, expert or None, key) of every stage `cfg` trains, in order: what the
    pipeline keys its stage directories by, for plans and counts without running anything."""
    out, upstream = [], None
    expert_upstream: dict[str, str | None] = {e.key: None for e in cfg.model.experts}
    for stage in cfg.stages:
        if stage.per_expert:
            for e in cfg.model.experts:
                expert_upstream[e.key] = expert_stage_key(cfg, stage, e, expert_upstream[e.key])
                out.append((stage.name, e.key, expert_upstream[e.key]))
            continue
        if upstream is None and any(expert_upstream.values()):
            upstream = content_hash({"per_expert": expert_upstream})
        upstream = stage_key(cfg, stage, upstream)
        out.append((stage.name, None, upstream))
    return out


def stage_dir_name(name: str, expert: str | None, key: str) -> str:
    return f"{name}-{expert}-{key}" if expert else f"{name}-{key}"


def stage_label(record: dict) -> str:
    """A stage record's name in cost.json and the records: `NAME`, or `NAME.EXPERT` for one
    expert's part of a per-expert stage."""
    return f"{record['name']}.{record['expert']}" if record.get("expert") else record["name"]


def _stage(world: World, run_dir: RunDir, stage_dir: RunDir, cfg: RunConfig,
           stage: StageConfig, expert: str | None, upstream: str | None, train
           ) -> tuple[bool, dict]:
    """Reuse the stage if it is done, else train it with `train()` on every rank (rank 0
    writes weights.safetensors and returns the summary). Runs sharing the stage wait on its
    lock, then reuse it. Rank 0 decides, the other ranks follow."""
    label = stage_label({"name": stage.name, "expert": expert})
    if world.is_main:
        run_dir.set_status("RUNNING", name=cfg.name, stage=label, stage_dir=str(stage_dir.path))
    with main_holds(world, stage_dir.lock_path):
        reuse = None
        if world.is_main and stage_dir.done:
            # its weights are checked against the hashes recorded when it finished
            problem = stage_weights_problem(stage_dir.path)
            reuse = problem is None
            if problem:
                StageTraining(stage_dir, run_dir).notice(
                    f"stage {label}: {problem}: its weights are not used; the stage is trained "
                    "again (from its last sound checkpoint, if one is left)")
        if broadcast(world, reuse):
            return True, broadcast(world, stage_dir.read_json("result.json")
                                   if world.is_main else None)
        if world.is_main:
            stage_dir.write_json("stage.json", {"stage": to_plain(stage), "expert": expert,
                                                "upstream": upstream, "run": cfg.key})
            stage_dir.set_status("RUNNING", run=cfg.key)
        summary = train()
        if world.is_main:
            record_stage_weights(stage_dir.path)
            stage_dir.write_json("result.json", summary)
            stage_dir.set_status("DONE", run=cfg.key)
        return False, broadcast(world, summary if world.is_main else None)


@dataclass
class StageTraining:
    """A stage's folder as its training sees it (harness.training.loop.StageFolder): its
    notices (a checkpoint or stage weights that failed their check) also go to the run's
    status and log, and to stderr, where a job's log shows them."""
    stage: RunDir
    run: RunDir

    @property
    def path(self) -> Path:
        return self.stage.path

    def log(self, **metrics) -> None:
        self.stage.log(**metrics)

    def metrics_log(self) -> list[dict]:
        return self.stage.metrics_log()

    def notice(self, message: str) -> None:
        print(f"notice: {message}", file=sys.stderr, flush=True)
        self.stage.notice(message)
        self.run.notice(message)


def until_paused(call, device: torch.device):
    """`call()`'s value, or the StagePaused it raised (a rung reached), without the frames of
    the training that raised it; either way with the stage's memory released
    (harness.training.memory). The rung is scored after this returns, not inside the
    handler, where the traceback would keep the stage's sharded copy, optimizer state and
    loader workers alive through the evaluation."""
    try:
        value = call()
    except StagePaused as reached:
        value = without_frames(reached)
    release(device)
    return value


def _world(cfg: RunConfig) -> World:
    problem = device_problem(cfg.device)
    if problem:
        raise HarnessError(problem)
    return init_world(cfg.device)


def load_result(run_dir: RunDir) -> RunResult:
    """A finished run's numbers as its records state them: each benchmark's headline from
    scores.json (written from the benchmark registry when the run was scored)."""
    metrics = run_dir.read_json("metrics.json")
    cost = run_dir.read_json("cost.json")
    config = run_dir.read_json("config.json")
    scores = read_scores(run_dir.path)
    untrained = read_scores(run_dir.path, "_untrained")
    return RunResult(run_dir.path.name, config["name"], run_dir.path,
                     {b: h["value"] for b, h in scores.items()}, metrics, cost,
                     {b: h["value"] for b, h in untrained.items()} if untrained else None,
                     {b: h["unit"] for b, h in scores.items()})


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


def rung_dir(run_dir: RunDir, rung: Rung) -> RunDir:
    return RunDir(run_dir.path / "rungs" / rung.folder_name())


def load_paused(run_dir: RunDir, rung: Rung) -> PausedRun | None:
    """The run's records at `rung`, if it has been scored there (rung.json is written
    last)."""
    folder = rung_dir(run_dir, rung)
    if not (folder.path / "rung.json").exists():
        return None
    record = folder.read_json("rung.json")
    return PausedRun(run_dir.path.name, record["run"], record,
                     {b: h["value"] for b, h in read_scores(folder.path).items()},
                     folder.read_json("metrics.json"))


def selection_questions(cfg: RunConfig, selection: SelectionSplit, workdir: Path
                        ) -> tuple[dict, Path]:
    """The selection split's questions per benchmark, and the folder their images are in."""
    if selection.data is not None:
        records = load_llava_json(Path(selection.data.json), Path(selection.data.images))
        root = Path(selection.data.images)
    elif cfg.data.synthetic is not None:
        folder = ensure_validation(cfg.data.synthetic, selection.synthetic_per_skill,
                                   workdir / "data")
        records = load_llava_json(folder / "validation.json", folder / "images")
        root = folder / "images"
    else:
        records, root = [], Path("/")
    questions = collect_questions(selection.benchmarks, records, selection.sources,
                                  workdir / "cache" / "benchmarks")
    return questions, root


def load_stage_weights(model: torch.nn.Module, stage_dir: Path, verify: bool = True
                       ) -> set[str]:
    """Load a finished stage's consolidated weights (everything trained up to it) into
    `model`, checked against their recorded hashes unless `verify` is False (just checked or
    written); returns the names it set. Weights that name parameters the model lacks are an
    error."""
    loaded = read_stage_weights(stage_dir, verify)
    unexpected = model.load_state_dict(loaded, strict=False).unexpected_keys
    if unexpected:
        raise RuntimeError(f"{stage_weights_path(stage_dir)} does not fit the model: "
                           f"{unexpected[:3]}")
    return set(loaded)


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
        if broadcast(world, run_dir.done if main else None):
            if main:
                rescore_if_stale(cfg, run_dir, hooks)
                hooks.finished(cfg, run_dir)
            barrier(world)   # the other ranks read the records rank 0 may have rewritten
            return load_result(run_dir)
        if rung is not None:   # scored at this rung before: its record, nothing trained
            paused = load_paused(run_dir, rung) if main else None
            if broadcast(world, paused is not None):
                return paused or load_paused(run_dir, rung)
        if main:
            for old in run_dir.path.glob("rank-*.error"):
                old.unlink()
            run_dir.write_json("config.json", cfg.to_dict())
            atomic_write_text(run_dir.path / "config.yaml",
                              yaml.safe_dump(cfg.to_dict(), sort_keys=False))
            write_sources(run_dir, cfg)   # what its data was, by path and content
            run_dir.set_status("RUNNING", name=cfg.name, ranks=world.size, notices=[])
            run_dir.reserve()   # given back before the last status: room for it on a full disk
            hooks.started(cfg, run_dir)
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
            # A failing rank aborts its process groups, so peers waiting for it in a
            # collective fail now rather than after NCCL's timeout (harness.training.
            # distributed.abort); rank 0 records why first.
            if not main:   # rank 0 owns the status: leave it this rank's traceback
                with contextlib.suppress(OSError):   # a full disk may refuse even this
                    atomic_write_text(run_dir.path / f"rank-{world.rank}.error",
                                      traceback.format_exc())
                abort(world)
                await_main_record(run_dir)
                raise
            run_dir.release()
            reason = failure_reason(run_dir, exc)
            run_dir.set_status("FAILED", reason=reason, name=cfg.name)
            hooks.stopped(cfg, run_dir, "FAILED", reason)
            abort(world)
            raise
        if main:
            run_dir.release()
        if isinstance(result, PausedRun):
            if main:
                r = result.rung
                reason = (f"paused at rung {r['number']} (step {r['step']} of {r['total']} of "
                          f"stage {r['stage']}) for successive halving; selection scores in "
                          f"{rung_dir(run_dir, rung).path}")
                run_dir.set_status("PAUSED", reason=reason, name=cfg.name,
                                   rung=r["number"], step=r["step"], total=r["total"])
                hooks.stopped(cfg, run_dir, "PAUSED", reason)
            return result
        if main:
            run_dir.set_status("DONE", name=cfg.name)
            hooks.finished(cfg, run_dir)
        return result


def await_main_record(run_dir: RunDir, wait_s: float = 60.0) -> None:
    """A failing rank other than 0, its traceback written and its groups aborted, waits (at
    most `wait_s`) for rank 0 to record the run's end: under Slurm's --kill-on-bad-exit this
    rank's exit kills rank 0, which would otherwise leave the run RUNNING (then LOST)."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            if run_dir.read_json("status.json").get("state") != "RUNNING":
                return
        time.sleep(0.2)


def disk_full(exc: BaseException) -> OSError | None:
    """The out-of-space error (ENOSPC, or EDQUOT: a quota, as on cluster scratch) behind
    `exc`: itself, its cause or context, or one rank's failure inside DCP's
    CheckpointException; None if there is none."""
    seen, todo = set(), [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return e
        failures = getattr(e, "failures", None)   # DCP's: rank -> (exception, its stack)
        todo += [e.__cause__, e.__context__,
                 *(f[0] for f in (failures.values() if isinstance(failures, dict) else ())
                   if isinstance(f, tuple) and f and isinstance(f[0], BaseException))]
    return None


def failure_reason(run_dir: RunDir, exc: BaseException, wait_s: float = 3.0) -> str:
    """Rank 0's exception, and the traceback a failing rank left (rank 0 often only sees
    its peer vanish from a collective): the other ranks' own words are the cause."""
    full = disk_full(exc)
    if full is not None:   # the cause, and what to do, instead of a write's traceback
        return (f"disk full ({full.strerror}) while writing {full.filename or 'a record'}: "
                "the last complete checkpoint and records are intact; free space (or quota) "
                "and run again to resume")
    reason = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, HarnessError):
        return reason
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and not list(run_dir.path.glob("rank-*.error")):
        time.sleep(0.2)
    for path in sorted(run_dir.path.glob("rank-*.error")):
        text = path.read_text().strip()
        last = text.splitlines()[-1] if text else ""
        reason += f"; {path.stem}: {last} (traceback in {path})\n{text}"
    return reason


def _run(cfg: RunConfig, workdir: Path, run_dir: RunDir, progress: bool,
         stop_after: int | None, world: World, rung: Rung | None = None
         ) -> RunResult | PausedRun:
    started = time.time()
    main = world.is_main
    for stage in cfg.stages:   # before anything trains: the global batch must split
        split(stage, world.size, cfg.parallel.micro_batch)
    seed_kernels(cfg.seed, wants_determinism(cfg.parallel.deterministic, world.device))
    # rank 0 first writes what the ranks share (generated data, a locally built LLM), the
    # others then read it
    if not main:
        barrier(world)
    data = resolve_data(cfg, workdir)
    if main:   # the data is still what the run's key says (edited since submission?)
        verify_unchanged(cfg)
    # data.bad_images: skip: the images that do not decode, per part (rank 0 decodes them,
    # the others read its verdict from the work directory's cache)
    skip = skipped_images(cfg, data, progress and main)
    selection = selection_questions(cfg, rung.selection, workdir) if rung else None
    model, llm = build_model(cfg.model, cfg.seed, workdir / "cache" / "llm", data.corpus)
    if main:
        barrier(world)
    model.to(world.device)
    transforms = expert_transforms(model.experts, cfg.data.image_aspect_ratio)
    tokenizer = llm.tokenizer

    def note(message: str) -> None:   # each normalization of a data file, once, in the log
        if main:
            print(message, flush=True)
            run_dir.log(event="data", note=message)

    eval_records = load_llava_json(*data.eval, report=note) if data.eval else []
    eval_template = evaluation_template(cfg)
    datasets = {p: load_llava_json(*getattr(data, p), report=note)
                for p in sorted({s.data for s in cfg.stages})}
    for part, records in datasets.items():
        stated = getattr(cfg.data, part).samples if getattr(cfg.data, part) else None
        if stated is not None and stated != len(records):
            raise DataError(f"{getattr(data, part)[0]}: has {len(records)} records; the config "
                            f"states data.{part}.samples = {stated}")
    skipped = {p: sum(r.image in skip.get(p, ()) for r in records)
               for p, records in datasets.items()}
    datasets = {p: [r for r in records if r.image not in skip.get(p, ())]
                for p, records in datasets.items()}
    questions = collect_questions(cfg.eval.benchmarks, eval_records, cfg.eval.sources,
                                  workdir / "cache" / "benchmarks")
    image_root = data.eval[1] if data.eval else Path("/")

    def evaluate(tag: str, questions: dict = questions, image_root: Path = image_root,
                 folder: RunDir = run_dir) -> dict | None:
        """Each rank answers its share of every benchmark's questions; rank 0 gathers the
        answers back into the questions' order and scores them into `folder` (None on the
        other ranks)."""
        mine = {n: shard(q, world) for n, q in questions.items()}
        by_likelihood = {n: q for n, q in mine.items() if n in cfg.eval.likelihood}
        by_generation = {n: q for n, q in mine.items() if n not in by_likelihood}
        collate = Collator(tokenizer, eval_template, transforms, image_root, for_generation=True)
        stop_id = eval_template.stop_id(tokenizer)
        log = RoutingLog()
        workers = cfg.parallel.loader_workers
        # in the run's precision, as it trained: the vision side in fp32 cost an evaluation
        # at 1024 px hours instead of minutes
        with autocast(world.device, cfg.precision):
            preds = generate(model, tokenizer, collate, by_generation, cfg.eval.batch_size,
                             cfg.eval.max_new_tokens, stop_id, world.device, progress and main,
                             log, workers)
            if by_likelihood:
                scoring = Collator(tokenizer, eval_template, transforms, image_root)
                preds += choose_by_likelihood(model, scoring, by_likelihood,
                                              cfg.eval.batch_size, world.device,
                                              progress and main, tokenizer, stop_id, log,
                                              workers)
        routing_logs.append(log)
        gathered = gather_to_main(world, preds)
        if not main:
            return None
        order = {(n, q.id): i for i, (n, q) in enumerate(
            (n, q) for n, qs in questions.items() for q in qs)}
        preds = sorted((p for part in gathered for p in part),
                       key=lambda p: order.get((p.benchmark, p.id), len(order)))
        folder.path.mkdir(parents=True, exist_ok=True)
        with open(folder.path / f"predictions{tag}.jsonl", "w") as f:
            f.writelines(json.dumps(p.record()) + "\n" for p in preds)
        if model.routes_by_llm:   # the router against the labels of the questions it routed
            folder.write_json(f"routing{tag}.json", routing_metrics(
                preds, load_routing_labels(model.fusion.options.labels,
                                           model.fusion.expert_names),
                model.fusion.expert_names))
        metrics, per_question = score(preds, expected_ids(questions))
        folder.write_json(f"metrics{tag}.json", metrics)
        folder.write_json(f"scores{tag}.json", headlines(metrics))
        folder.write_json(f"per_question{tag}.json", per_question)
        return metrics

    routing_logs: list[RoutingLog] = []   # what each evaluation's routing passes cost
    if cfg.eval.before_training:
        evaluate("_untrained")

    stages_record, trained_names = [], set()
    unwrapped = model
    stages = {s.name: s for s in cfg.stages}
    experts = {e.key: e for e in cfg.model.experts}
    upstream: dict[str | None, str | None] = {}   # expert (None: joint) -> its last stage key

    def train_joint(stage: StageConfig, stage_dir: StageTraining, pause_at: int | None) -> dict:
        nonlocal trained_names
        collate = Collator(tokenizer, TEMPLATES.get(stage.template), transforms,
                           getattr(data, stage.data)[1])
        if stage.lora is not None:
            lo = stage.lora
            add_lora(model.llm, lo.rank, lo.alpha, lo.dropout, lo.targets)
        records = (route_stage_data(model.fusion, datasets[stage.data]) if stage.task == "route"
                   else datasets[stage.data])
        try:   # a route stage trains the model as its own router (base tokens, LoRA on)
            with model.routing() if stage.task == "route" else contextlib.nullcontext():
                res = train_stage(model, stage, records, collate, stage_dir,
                                  cfg.seed, world, cfg.parallel, cfg.precision,
                                  stop_after=stop_after, progress=progress,
                                  pause_at=pause_at)
        except StagePaused as paused:   # the rung scores the model with the adapters merged
            if stage.lora is not None:
                paused.weights, _ = fold_stage_lora(paused.weights)
            raise
        if stage.lora is not None:
            res.weights, merged = fold_stage_lora(res.weights, stage_dir)
            trained_names |= merged
        trained_names |= {n for n, p in model.named_parameters() if p.requires_grad}
        if main:
            # Everything trained so far (this stage and the ones it builds on): the rest of
            # the model is reproducible from its initialization.
            state = {**unwrapped.state_dict(), **res.weights}
            save_stage_weights({n: state[n] for n in trained_names}, stage_dir.path)
        return _summary(res)

    def fold_stage_lora(weights: dict, stage_dir: StageTraining | None = None
                        ) -> tuple[dict, set[str]]:
        """The trained adapters (in `weights`, on rank 0) merged into the LLM and the LoRA
        layers removed on every rank; returns the stage's trained weights by their plain
        names and the LLM weights the merge changed. With `stage_dir`, rank 0 also keeps the
        adapters as they trained (adapter.safetensors) beside the stage's merged weights."""
        if main:   # a sharded stage trained a copy: its weights go into the caller's model
            unfit = unwrapped.load_state_dict(weights, strict=False).unexpected_keys
            if unfit:
                raise RuntimeError(f"trained weights that fit no parameter: {unfit[:3]}")
            if stage_dir is not None:
                save_stage_weights({n: v for n, v in weights.items() if is_adapter(n)},
                                   stage_dir.path, ADAPTER_WEIGHTS)
        changed = {f"llm.{n}" for n in fold(model.llm, merge=main)}
        if not main:
            return weights, changed
        state = unwrapped.state_dict()
        names = {n.replace(".base_layer.", ".") for n in weights if not is_adapter(n)}
        return {n: state[n] for n in names | changed}, changed

    def train_alone(stage: StageConfig, stage_dir: StageTraining, expert: ExpertConfig
                    ) -> dict:
        solo = build_solo(cfg.model, expert, cfg.seed, llm).to(world.device)
        collate = Collator(tokenizer, TEMPLATES.get(stage.template),
                           expert_transforms(solo.experts, cfg.data.image_aspect_ratio),
                           getattr(data, stage.data)[1])
        res = train_stage(solo, stage, datasets[stage.data], collate, stage_dir, cfg.seed,
                          world, cfg.parallel, cfg.precision, stop_after=stop_after,
                          progress=progress)
        if main:
            prefix = f"experts.{expert.key}."
            state = {**solo.state_dict(), **res.weights}
            # the expert carries on into the combination; its own projector does not
            save_stage_weights({n: v for n, v in state.items() if n.startswith(prefix)},
                               stage_dir.path)
        return _summary(res)

    def score_rung(stage: StageConfig, paused: StagePaused) -> PausedRun:
        """The weights at the rung into every rank's model, then the selection split."""
        folder = rung_dir(run_dir, rung)
        if main:
            unwrapped.load_state_dict(paused.weights, strict=False)
            if world.size > 1:   # the other ranks read the rung's weights from disk
                save_stage_weights(paused.weights, folder.path)
        barrier(world)
        if not main:
            unwrapped.load_state_dict(read_stage_weights(folder.path, verify=False),
                                      strict=False)
        barrier(world)
        questions, root = selection
        evaluate("", questions, root, folder)
        if main:
            (folder.path / "weights.safetensors").unlink(missing_ok=True)
            folder.write_json("rung.json", {
                "number": rung.number, "fraction": rung.fraction, "stage": stage.name,
                "step": paused.step, "total": paused.total, "run": cfg.name,
                "selection": to_plain(rung.selection),
                "selection_id": rung.selection.identity})
        barrier(world)
        return load_paused(run_dir, rung)

    keys = stage_keys(cfg)
    last_stage = keys[-1][2]
    for name, expert, key in keys:
        stage = stages[name]
        stage_dir = RunDir(inside(workdir / "stages", stage_dir_name(name, expert, key)))
        training = StageTraining(stage_dir, run_dir)
        if expert:
            train = functools.partial(train_alone, stage, training, experts[expert])
        else:
            pause_at = (rung.step_of(total_steps(stage, len(datasets[stage.data])))
                        if rung is not None and key == last_stage else None)
            train = functools.partial(train_joint, stage, training, pause_at)
        outcome = until_paused(functools.partial(_stage, world, run_dir, stage_dir, cfg, stage,
                                                 expert, upstream.get(expert), train),
                               world.device)
        if isinstance(outcome, StagePaused):
            return score_rung(stage, outcome)
        reused, summary = outcome
        # rank 0 checked them (a reuse) or wrote them just now
        trained_names |= load_stage_weights(unwrapped, stage_dir.path, verify=False)
        upstream[expert] = key
        stages_record.append({"name": name, **({"expert": expert} if expert else {}),
                              "key": key, "reused": reused, "dir": str(stage_dir.path),
                              **summary,
                              **({"skipped_bad_images": skipped[stage.data]}
                                 if cfg.data.bad_images == "skip" else {})})
        if main:
            run_dir.log(event="stage", **stages_record[-1])
    if main:
        run_dir.write_json("stages.json", stages_record)

    evaluate("")
    if not main:   # rank 0 records the cost; the others wait for the run's records
        barrier(world)
        return load_result(run_dir)
    one = Collator(tokenizer, TEMPLATES.get(cfg.stages[-1].template), transforms,
                   getattr(data, cfg.stages[-1].data)[1])
    sample = next(r for r in datasets[cfg.stages[-1].data] if r.image is not None)
    batch = to_device(one([sample]), world.device)
    cost = {"parameters": parameter_counts(model),
            "visual_tokens": model.num_visual_tokens,
            "fusion_channels": model.fusion.channels,
            "fusion_added_parameters": model.fusion.added_parameters(),
            "forward_flops_per_sample": forward_flops(model, batch),
            "step_time_s": {stage_label(s): s["step_time"] for s in stages_record},
            "train_samples_per_s": {stage_label(s): s["samples_per_second"]
                                    for s in stages_record},
            # what each stage trained, by group (a LoRA stage: its adapters)
            "trainable_parameters": {stage_label(s): s.get("trainable", {})
                                     for s in stages_record},
            # an LLM router's pass before each answer (this rank's final evaluation)
            **({k: v for k, v in routing_logs[-1].cost().items() if v is not None}
               if model.routes_by_llm else {}),
            "peak_memory_mb": peak_memory_mb(world.device),
            "wall_time_s": time.time() - started,
            "ranks": world.size}
    run_dir.write_json("cost.json", cost)
    barrier(world)
    return load_result(run_dir)


def _summary(res: StageResult) -> dict:
    """A stage's result.json: the numbers, without the trained tensors."""
    return {k: v for k, v in dataclasses.asdict(res).items() if k != "weights"}
