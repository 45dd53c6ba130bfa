"""One run in progress as an object (after torchtitan's `Trainer`): built once on every rank,
it holds the run's config, world, data, model, image transforms and what has been trained
so far; its methods train a joint stage, train an expert alone, evaluate, score a rung and
record the cost. `harness.runs.pipeline.run` owns the run directory's lock and status around
it; harness.runs.stages keys the stages and decides their reuse."""
from __future__ import annotations

import contextlib
import functools
import time
from dataclasses import dataclass
from pathlib import Path

from core.contained import inside
from core.identity import to_plain
from harness.config.run_config import RunConfig, StageConfig
from harness.config.selection import Rung
from harness.data.batching import Collator, expert_transforms, to_device
from harness.data.llava import load_llava_json
from harness.evaluation.generate import collect_questions
from harness.evaluation.passes import PassLog, answer_pass
from harness.evaluation.sharded import Answerer, evaluate_sharded
from harness.runs.cost import forward_flops, parameter_counts, peak_memory_mb
from harness.runs.data_changes import verify_unchanged
from harness.runs.inputs import (
    evaluation_template,
    resolve_data,
    selection_questions,
    skipped_images,
    training_sets,
)
from harness.runs.outcome import PausedRun, RunResult, load_paused, load_result, rung_dir
from harness.runs.rundir import ADAPTER_WEIGHTS, RunDir, read_stage_weights, save_stage_weights
from harness.runs.stages import (
    StageTraining,
    load_stage_weights,
    reuse_or_train,
    stage_dir_name,
    stage_keys,
    stage_label,
    stage_summary,
    until_paused,
)
from harness.training import StagePaused, split, train_stage
from harness.training.distributed import World, barrier, gather_to_main, shard
from harness.training.kernels import autocast, seed_kernels, wants_determinism
from harness.training.loop import total_steps
from models.builder import build_model, build_solo
from models.experts import ExpertConfig
from models.lora import add_lora, fold, is_adapter
from models.templates import TEMPLATES


@dataclass(frozen=True)
class WorldRanks:
    """A World's collectives as a sharded evaluation asks for them
    (harness.evaluation.sharded.Ranks)."""
    world: World

    @property
    def is_main(self) -> bool:
        return self.world.is_main

    def share(self, items: list) -> list:
        return shard(items, self.world)

    def gather(self, value: list) -> list[list] | None:
        return gather_to_main(self.world, value)


class Trainer:
    """Everything one run holds while it trains and evaluates, on one rank. Built with the
    run's lock held; rank 0 writes the records, the others follow it."""

    def __init__(self, cfg: RunConfig, workdir: Path, run_dir: RunDir, world: World,
                 progress: bool, stop_after: int | None, rung: Rung | None = None):
        self.started = time.time()
        self.cfg, self.workdir, self.run_dir, self.world = cfg, workdir, run_dir, world
        self.progress, self.stop_after, self.rung = progress, stop_after, rung
        self.main = main = world.is_main
        for stage in cfg.stages:   # before anything trains: the global batch must split
            split(stage, world.size, cfg.parallel.micro_batch)
        seed_kernels(cfg.seed, wants_determinism(cfg.parallel.deterministic, world.device))
        # rank 0 first writes what the ranks share (generated data, a locally built LLM), the
        # others then read it
        if not main:
            barrier(world)
        self.data = data = resolve_data(cfg, workdir)
        if main:   # the data is still what the run's key says (edited since submission?)
            verify_unchanged(cfg)
        # data.bad_images: skip: the images that do not decode, per part (rank 0 decodes
        # them, the others read its verdict from the work directory's cache)
        skip = skipped_images(cfg, data, progress and main)
        self.selection = selection_questions(cfg, rung.selection, workdir) if rung else None
        self.model, self.llm = build_model(cfg.model, cfg.seed, workdir / "cache" / "llm",
                                           data.corpus)
        if main:
            barrier(world)
        self.model.to(world.device)
        self.transforms = expert_transforms(self.model.experts, cfg.data.image_aspect_ratio)
        self.tokenizer = self.llm.tokenizer
        eval_records = load_llava_json(*data.eval, report=self.note) if data.eval else []
        self.datasets, self.skipped = training_sets(cfg, data, skip, self.note)
        self.questions = collect_questions(cfg.eval.benchmarks, eval_records, cfg.eval.sources,
                                           workdir / "cache" / "benchmarks")
        self.image_root = data.eval[1] if data.eval else Path("/")
        # what each evaluation's passes before answering cost (MoVA's LLM router)
        self.pass_logs: list[PassLog] = []
        self.trained_names: set[str] = set()   # every weight trained so far, by its name
        self.stages_record: list[dict] = []
        # expert (None: the joint stages) -> the key of its last stage
        self.upstream: dict[str | None, str | None] = {}

    def note(self, message: str) -> None:
        """Each normalization of a data file, once, in the log."""
        if self.main:
            print(message, flush=True)
            self.run_dir.log(event="data", note=message)

    def run(self) -> RunResult | PausedRun:
        """Every stage trained (or reused) and the model evaluated and costed; a PausedRun if
        the last stage reached the rung."""
        if self.cfg.eval.before_training:
            self.evaluate("_untrained")
        paused = self.train_stages()
        if paused is not None:
            return paused
        self.evaluate("")
        if self.main:   # rank 0 records the cost; the others wait for the run's records
            self.record_cost()
        barrier(self.world)
        return load_result(self.run_dir)

    def evaluate(self, tag: str, questions: dict | None = None,
                 image_root: Path | None = None, folder: RunDir | None = None) -> dict | None:
        """The run's questions (or a rung's) answered across the ranks and scored into the
        run directory (or `folder`) by rank 0; None on the other ranks."""
        cfg = self.cfg
        answerer = Answerer(self.model, self.tokenizer, evaluation_template(cfg),
                            self.transforms, self.world.device, cfg.eval.batch_size,
                            cfg.eval.max_new_tokens, cfg.eval.likelihood,
                            cfg.parallel.loader_workers,
                            functools.partial(autocast, self.world.device, cfg.precision),
                            self.progress and self.main)
        log = PassLog()
        self.pass_logs.append(log)
        return evaluate_sharded(answerer, WorldRanks(self.world),
                                self.questions if questions is None else questions,
                                self.image_root if image_root is None else image_root,
                                self.run_dir if folder is None else folder, tag, log)

    def _collator(self, stage: StageConfig, transforms: dict | None = None) -> Collator:
        """Batches of `stage`'s records in its template, images through `transforms` (the
        run's experts' by default)."""
        return Collator(self.tokenizer, TEMPLATES.get(stage.template),
                        self.transforms if transforms is None else transforms,
                        getattr(self.data, stage.data)[1])

    def train_stages(self) -> PausedRun | None:
        """Each stage in order, reused or trained (a per-expert stage once per expert), its
        weights loaded into the model; stages.json written. A PausedRun once the last stage
        reached the rung."""
        cfg, main = self.cfg, self.main
        stages = {s.name: s for s in cfg.stages}
        experts = {e.key: e for e in cfg.model.experts}
        keys = stage_keys(cfg)
        last_stage = keys[-1][2]
        for name, expert, key in keys:
            stage = stages[name]
            stage_dir = RunDir(inside(self.workdir / "stages", stage_dir_name(name, expert, key)))
            training = StageTraining(stage_dir, self.run_dir)
            if expert:
                train = functools.partial(self.train_alone, stage, training, experts[expert])
            else:
                pause_at = (self.rung.step_of(total_steps(stage, len(self.datasets[stage.data])))
                            if self.rung is not None and key == last_stage else None)
                train = functools.partial(self.train_joint, stage, training, pause_at)
            outcome = until_paused(functools.partial(
                reuse_or_train, self.world, self.run_dir, stage_dir, cfg, stage, expert,
                self.upstream.get(expert), train), self.world.device)
            if isinstance(outcome, StagePaused):
                return self.score_rung(stage, outcome)
            reused, summary = outcome
            # rank 0 checked them (a reuse) or wrote them just now
            self.trained_names |= load_stage_weights(self.model, stage_dir.path, verify=False)
            self.upstream[expert] = key
            self.stages_record.append({
                "name": name, **({"expert": expert} if expert else {}),
                "key": key, "reused": reused, "dir": str(stage_dir.path), **summary,
                **({"skipped_bad_images": self.skipped[stage.data]}
                   if cfg.data.bad_images == "skip" else {})})
            if main:
                self.run_dir.log(event="stage", **self.stages_record[-1])
        if main:
            self.run_dir.write_json("stages.json", self.stages_record)
        return None

    def train_joint(self, stage: StageConfig, stage_dir: StageTraining, pause_at: int | None
                    ) -> dict:
        """A stage of the whole model; rank 0 saves everything trained so far (this stage
        and the ones it builds on): the rest of the model is reproducible from its
        initialization."""
        model, cfg = self.model, self.cfg
        collate = self._collator(stage)
        if stage.lora is not None:
            lo = stage.lora
            add_lora(model.llm, lo.rank, lo.alpha, lo.dropout, lo.targets)
        # a stage of another task than answering trains the model's pass before answering
        # whose task it is (MoVA's `task: route`, validated at load): on the pass's data,
        # inside the pass
        trains_pass = stage.task != "answer"
        records = self.datasets[stage.data]
        if trains_pass:
            found = answer_pass(model)
            if found is None or found.task != stage.task:
                raise ValueError(f"stage '{stage.name}' trains task '{stage.task}', which this "
                                 f"model's pass before answering ({model.before_answer}) "
                                 "does not have")
            records = found.stage_data(model.fusion, records)
        try:
            with model.in_pass() if trains_pass else contextlib.nullcontext():
                res = train_stage(model, stage, records, collate, stage_dir,
                                  cfg.seed, self.world, cfg.parallel, cfg.precision,
                                  stop_after=self.stop_after, progress=self.progress,
                                  pause_at=pause_at)
        except StagePaused as paused:   # the rung scores the model with the adapters merged
            if stage.lora is not None:
                paused.weights, _ = self.fold_stage_lora(paused.weights)
            raise
        if stage.lora is not None:
            res.weights, merged = self.fold_stage_lora(res.weights, stage_dir)
            self.trained_names |= merged
        self.trained_names |= {n for n, p in model.named_parameters() if p.requires_grad}
        if self.main:
            state = {**model.state_dict(), **res.weights}
            save_stage_weights({n: state[n] for n in self.trained_names}, stage_dir.path)
        return stage_summary(res)

    def fold_stage_lora(self, weights: dict, stage_dir: StageTraining | None = None
                        ) -> tuple[dict, set[str]]:
        """The trained adapters (in `weights`, on rank 0) merged into the LLM and the LoRA
        layers removed on every rank; returns the stage's trained weights by their plain
        names and the LLM weights the merge changed. With `stage_dir`, rank 0 also keeps the
        adapters as they trained (adapter.safetensors) beside the stage's merged weights."""
        model, main = self.model, self.main
        if main:   # a sharded stage trained a copy: its weights go into the caller's model
            unfit = model.load_state_dict(weights, strict=False).unexpected_keys
            if unfit:
                raise RuntimeError(f"trained weights that fit no parameter: {unfit[:3]}")
            if stage_dir is not None:
                save_stage_weights({n: v for n, v in weights.items() if is_adapter(n)},
                                   stage_dir.path, ADAPTER_WEIGHTS)
        changed = {f"llm.{n}" for n in fold(model.llm, merge=main)}
        if not main:
            return weights, changed
        state = model.state_dict()
        names = {n.replace(".base_layer.", ".") for n in weights if not is_adapter(n)}
        return {n: state[n] for n in names | changed}, changed

    def train_alone(self, stage: StageConfig, stage_dir: StageTraining, expert: ExpertConfig
                    ) -> dict:
        """One expert's part of a per-expert stage, trained on the lone expert's model
        (models.builder.build_solo)."""
        cfg = self.cfg
        solo = build_solo(cfg.model, expert, cfg.seed, self.llm).to(self.world.device)
        collate = self._collator(stage, expert_transforms(solo.experts,
                                                          cfg.data.image_aspect_ratio))
        res = train_stage(solo, stage, self.datasets[stage.data], collate, stage_dir,
                          cfg.seed, self.world, cfg.parallel, cfg.precision,
                          stop_after=self.stop_after, progress=self.progress)
        if self.main:
            prefix = f"experts.{expert.key}."
            state = {**solo.state_dict(), **res.weights}
            # the expert carries on into the combination; its own projector does not
            save_stage_weights({n: v for n, v in state.items() if n.startswith(prefix)},
                               stage_dir.path)
        return stage_summary(res)

    def score_rung(self, stage: StageConfig, paused: StagePaused) -> PausedRun:
        """The weights at the rung into every rank's model, then the selection split."""
        world, main, rung = self.world, self.main, self.rung
        folder = rung_dir(self.run_dir, rung)
        if main:
            self.model.load_state_dict(paused.weights, strict=False)
            if world.size > 1:   # the other ranks read the rung's weights from disk
                save_stage_weights(paused.weights, folder.path)
        barrier(world)
        if not main:
            self.model.load_state_dict(read_stage_weights(folder.path, verify=False),
                                       strict=False)
        barrier(world)
        questions, root = self.selection
        self.evaluate("", questions, root, folder)
        if main:
            (folder.path / "weights.safetensors").unlink(missing_ok=True)
            folder.write_json("rung.json", {
                "number": rung.number, "fraction": rung.fraction, "stage": stage.name,
                "step": paused.step, "total": paused.total, "run": self.cfg.name,
                "selection": to_plain(rung.selection),
                "selection_id": rung.selection.identity})
        barrier(world)
        return load_paused(self.run_dir, rung)

    def record_cost(self) -> None:
        """cost.json (rank 0): parameters, visual tokens, FLOPs of one sample's forward, each
        stage's speed and what it trained, the passes before answering, memory and wall time."""
        cfg, model, records = self.cfg, self.model, self.stages_record
        last = cfg.stages[-1]
        one = self._collator(last)
        sample = next(r for r in self.datasets[last.data] if r.image is not None)
        batch = to_device(one([sample]), self.world.device)
        cost = {"parameters": parameter_counts(model),
                "visual_tokens": model.num_visual_tokens,
                "fusion_channels": model.fusion.channels,
                "fusion_added_parameters": model.fusion.added_parameters(),
                "forward_flops_per_sample": forward_flops(model, batch),
                "step_time_s": {stage_label(s): s["step_time"] for s in records},
                "train_samples_per_s": {stage_label(s): s["samples_per_second"]
                                        for s in records},
                # what each stage trained, by group (a LoRA stage: its adapters)
                "trainable_parameters": {stage_label(s): s.get("trainable", {})
                                         for s in records},
                # the pass before each answer (this rank's final evaluation)
                **self._pass_cost(),
                "peak_memory_mb": peak_memory_mb(self.world.device),
                "wall_time_s": time.time() - self.started,
                "ranks": self.world.size}
        self.run_dir.write_json("cost.json", cost)

    def _pass_cost(self) -> dict:
        """What the model's pass before answering cost in the last evaluation, under the
        pass's record name (MoVA's LLM router: routing_...); empty without one."""
        found = answer_pass(self.model)
        if found is None:
            return {}
        return {k: v for k, v in self.pass_logs[-1].cost(found.record).items()
                if v is not None}
