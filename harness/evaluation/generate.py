"""Answering and scoring, as two steps. `generate` answers every question of the selected
benchmarks by batched greedy decoding; `choose_by_likelihood` answers closed questions (yes/no,
option letters) with the allowed answer the model finds most likely; `score` reads the answers
back, checks that every expected question has exactly one, and applies each benchmark's
scorer to the answer text, whichever way it was produced. A model whose fusion has a pass
before answering (Fusion.before_answer; its harness side in harness.evaluation.passes) answers
each batch in two passes: the pass first, then the answer with what it decided; the decision
goes into the prediction."""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from harness.data.batching import Collator, to_device
from harness.data.llava import Conversation
from harness.evaluation.batches import ChunkBatches, prepared
from harness.evaluation.benchmarks import BENCHMARKS
from harness.evaluation.passes import PassLog, ask_first
from harness.evaluation.scoring import SCORERS
from models.multimodal import MultimodalLM


@dataclass
class Prediction:
    id: str
    benchmark: str
    question: str
    prediction: str
    answers: list[str]
    meta: dict = field(default_factory=dict)
    method: str = "generate"   # generate | likelihood
    # the decision of the model's pass before answering (MoVA's LLM router: answer, experts,
    # used, unknown, fallback), under the key predictions.jsonl has always given it
    routing: dict | None = None

    def record(self) -> dict:
        """The prediction as predictions.jsonl holds it (no routing entry where none)."""
        out = dataclasses.asdict(self)
        if out["routing"] is None:
            del out["routing"]
        return out


def collect_questions(benchmarks: list[str], records: list[Conversation],
                      sources: dict, cache: Path) -> dict[str, list[Conversation]]:
    """benchmark -> its questions: real ones from their files (`sources[name]` has questions
    and images paths), synthetic ones from the run's eval records."""
    out = {}
    for name in benchmarks:
        bench = BENCHMARKS.get(name)
        if bench.needs_source:
            src = sources[name]
            out[name] = bench.load(Path(src.questions),
                                   Path(src.images) if src.images else None, cache)
        else:
            out[name] = bench.select(records)
    return out


def _answers(rec: Conversation) -> list[str]:
    return list(rec.extra.get("answers") or [rec.turns[0][1]])


def _prediction(name: str, rec: Conversation, text: str, method: str,
                routing: dict | None = None) -> Prediction:
    return Prediction(rec.id, name, rec.turns[0][0], text, _answers(rec),
                      rec.extra.get("meta") or {}, method, routing)


def _prompt_batch(collate: Collator, chunk: list[Conversation]) -> dict:
    """A generation batch: each question's prompt, without its answer."""
    return collate([Conversation(r.id, r.image, [(r.turns[0][0], "")], r.extra)
                    for r in chunk])


def generate(model: MultimodalLM, tokenizer, collate: Collator,
             questions: dict[str, list[Conversation]], batch_size: int, max_new_tokens: int,
             stop_id: int, device: torch.device, progress: bool = True,
             pass_log: PassLog | None = None, workers: int = 0) -> list[Prediction]:
    """`workers` processes prepare the batches ahead (harness.evaluation.batches)."""
    model.eval()
    out: list[Prediction] = []
    for name, records in questions.items():
        budget = BENCHMARKS.get(name).max_new_tokens or max_new_tokens
        chunks = [records[start:start + batch_size]
                  for start in range(0, len(records), batch_size)]
        ready = prepared(ChunkBatches(chunks, functools.partial(_prompt_batch, collate)),
                         workers, pin_memory=device.type == "cuda")
        for chunk, batch in tqdm(zip(chunks, ready), total=len(chunks), desc=f"eval {name}",
                                 leave=False, disable=not progress):
            batch = to_device(batch, device)
            given, decisions = ask_first(model, tokenizer, collate, chunk, device, stop_id,
                                         pass_log)
            tokens = model.generate(batch["input_ids"], batch["attention_mask"],
                                    batch["pixels"], batch["has_image"], budget, stop_id,
                                    sample_ids=batch["sample_ids"], given=given)
            for rec, toks, decision in zip(chunk, tokens, decisions):
                text = tokenizer.decode(toks, skip_special_tokens=True).strip()
                out.append(_prediction(name, rec, text, "generate", decision))
    return out


def _choice_batch(collate: Collator, chunk: list[tuple[int, Conversation, str]]) -> dict:
    """A likelihood batch: one row per (question, allowed answer), and each question's image
    once (`image_of`: a row's image row), so an image is encoded once per question however
    many answers it allows."""
    first: dict[int, Conversation] = {}   # question -> its record, in order of rows
    for i, rec, _ in chunk:
        first.setdefault(i, rec)
    row = {i: k for k, i in enumerate(first)}
    batch = collate.text([Conversation(r.id, r.image, [(r.turns[0][0], c)], r.extra)
                          for _, r, c in chunk])
    return {**batch, **collate.images(list(first.values())),
            "image_of": [row[i] for i, _, _ in chunk]}


def choice_likelihoods(model: MultimodalLM, collate: Collator, records: list[Conversation],
                       batch_size: int, device: torch.device, given: list | None = None,
                       workers: int = 0, progress: bool = False, desc: str = ""
                       ) -> list[list[float]]:
    """Each question's total log-likelihood of each of its `choices` as the reply to its
    prompt, batch_size (question, choice) rows at a time; `given`: what the model's pass
    before answering decided for each question (MoVA's LLM router: its experts)."""
    pairs = [(i, rec, c) for i, rec in enumerate(records) for c in rec.extra["choices"]]
    chunks = [pairs[start:start + batch_size] for start in range(0, len(pairs), batch_size)]
    ready = prepared(ChunkBatches(chunks, functools.partial(_choice_batch, collate)),
                     workers, pin_memory=device.type == "cuda")
    scores: list[float] = []
    for chunk, batch in tqdm(zip(chunks, ready), total=len(chunks), desc=desc, leave=False,
                             disable=not progress):
        batch = to_device(batch, device)
        decided = (torch.stack([given[i] for i, _, _ in chunk]) if given is not None
                   else None)
        nll = model.per_sample_loss(batch["input_ids"], batch["attention_mask"],
                                    batch["labels"], batch["pixels"], batch["has_image"],
                                    batch["sample_ids"], total=True, given=decided,
                                    image_of=batch["image_of"])
        scores += (-nll).tolist()
    out, at = [], 0
    for rec in records:
        n = len(rec.extra["choices"])
        out.append(scores[at:at + n])
        at += n
    return out


def choose_by_likelihood(model: MultimodalLM, collate: Collator,
                         questions: dict[str, list[Conversation]], batch_size: int,
                         device: torch.device, progress: bool = True, tokenizer=None,
                         stop_id: int | None = None, pass_log: PassLog | None = None,
                         workers: int = 0) -> list[Prediction]:
    """Each question's answer is the allowed answer (its `choices`) with the highest total
    log-likelihood as the reply to its prompt; `collate` must build training batches (labels
    on the reply) in the evaluation template. A model with a pass before answering passes
    over each question once (`tokenizer` and `stop_id` read what the pass says: MoVA's router
    names the experts) and scores every choice with what it decided."""
    model.eval()
    out: list[Prediction] = []
    for name, records in questions.items():
        for rec in records:
            if not rec.extra.get("choices"):
                raise ValueError(f"benchmark '{name}' question {rec.id} has no closed set of "
                                 "answers; likelihood scoring takes yes/no or option-letter "
                                 "benchmarks only")
        decisions: list[dict | None] = []
        given: list[torch.Tensor | None] = []
        for start in range(0, len(records), batch_size):
            decided, said = ask_first(model, tokenizer, collate,
                                      records[start:start + batch_size], device, stop_id,
                                      pass_log)
            decisions += said
            given += list(decided) if decided is not None else [None] * len(said)
        likelihoods = choice_likelihoods(model, collate, records, batch_size, device,
                                         given if model.before_answer else None,
                                         workers, progress, f"likelihood {name}")
        for rec, mine, decision in zip(records, likelihoods, decisions):
            choices = rec.extra["choices"]
            out.append(_prediction(name, rec, choices[mine.index(max(mine))], "likelihood",
                                   decision))
    return out


def expected_ids(questions: dict[str, list[Conversation]]) -> dict[str, list[str]]:
    return {name: [r.id for r in records] for name, records in questions.items()}


def score(predictions: list[Prediction], expected: dict[str, list[str]]
          ) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """{benchmark: {metric: value}} and {benchmark: {question: score}}: a question is what
    the benchmark's headline averages over, one prediction for most, the group of rows of
    one question for MMBench's CircularEval (the scorer says so by keying its scores).
    Refuses to score a benchmark unless every expected question has exactly one answer."""
    metrics, per_question = {}, {}
    for name, ids in expected.items():
        if not ids:
            raise RuntimeError(f"benchmark '{name}' has no questions in the eval data")
        by_id: dict[str, Prediction] = {}
        for p in predictions:
            if p.benchmark != name:
                continue
            if p.id in by_id:
                raise RuntimeError(f"benchmark '{name}': question {p.id} is answered twice")
            by_id[p.id] = p
        missing = [i for i in ids if i not in by_id]
        extra = sorted(set(by_id) - set(ids))
        if missing or extra:
            raise RuntimeError(f"benchmark '{name}': {len(by_id)} answers for {len(ids)} "
                               "questions; " + (f"{len(missing)} unanswered (first: "
                                                f"{missing[0]})" if missing else "")
                               + ("; " if missing and extra else "")
                               + (f"{len(extra)} answers to unknown questions (first: "
                                  f"{extra[0]})" if extra else "")
                               + "; generation is incomplete")
        preds = [by_id[i] for i in ids]
        bench = BENCHMARKS.get(name)
        m, per = SCORERS.get(bench.scorer)([p.prediction for p in preds],
                                           [p.answers for p in preds], [p.meta for p in preds])
        metrics[name] = m
        per_question[name] = per if isinstance(per, dict) else dict(zip(ids, per))
    return metrics, per_question
