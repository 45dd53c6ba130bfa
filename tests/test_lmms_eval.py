"""The `lmms` extra: a finished tiny run evaluated by lmms-eval itself, through its command
line, on lmms-eval's own POPE task (its prompt, its generation settings, its scoring) pointed
at a local copy of our POPE fixture, and on a yes/no multiple-choice task that lmms-eval
answers by likelihood. The wrapper must ask exactly what `ablate` asks: the same answers as
the run's own predictions, and the same answer losses as the harness's likelihood scoring."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# In their own environment: lmms-eval pulls in wandb, which timm then imports in every
# process, adding seconds to each of the main suite's jobs.
pytestmark = pytest.mark.lmms
if os.environ.get("ABLATE_REQUIRE_LMMS"):   # CI: a missing extra fails instead of skipping
    import lmms_eval  # noqa: F401
else:
    pytest.importorskip("lmms_eval", reason="the lmms extra is not installed: "
                                            "pip install -e '.[lmms]'")

from harness.evaluation.benchmarks import BENCHMARKS  # noqa: E402
from harness.evaluation.benchmarks import FIXTURE_WRITERS as WRITERS  # noqa: E402
from tests.tiny import tiny_run_yaml  # noqa: E402

SPLITS = ("random", "popular", "adversarial")

CHOICE_UTILS = '''\
def doc_to_visual(doc):
    return [doc["image"].convert("RGB")]


def doc_to_text(doc):
    return doc["question"] + "\\nAnswer the question using a single word or phrase."


def doc_to_target(doc):
    return 0 if doc["answer"] == "yes" else 1
'''


def _pope_dataset(folder: Path, images: Path, out: Path) -> list[str]:
    """The POPE fixture as a saved Hugging Face dataset in lmms-eval's POPE columns; returns
    the question ids in dataset order (ours: '<split>-<question_id>')."""
    import datasets
    from PIL import Image
    rows = {k: [] for k in ("question_id", "question", "answer", "category", "image")}
    for split in SPLITS:
        for line in (folder / f"coco_pope_{split}.json").read_text().splitlines():
            rec = json.loads(line)
            rows["question_id"].append(f"{split}-{rec['question_id']}")
            rows["question"].append(rec["text"])
            rows["answer"].append(rec["label"])
            rows["category"].append(split)
            rows["image"].append(Image.open(images / rec["image"]))
    text = datasets.Value("string")
    features = datasets.Features({"question_id": text, "question": text, "answer": text,
                                  "category": text, "image": datasets.Image()})
    datasets.DatasetDict({"test": datasets.Dataset.from_dict(rows, features=features)}
                         ).save_to_disk(str(out))
    return rows["question_id"]


def _tasks(root: Path, dataset: Path) -> Path:
    """pope_local: lmms-eval's pope task on the local dataset (3 new tokens, as the run's
    eval); pope_choice: the same questions as Yes/No multiple choice."""
    import lmms_eval
    tasks = root / "tasks"
    tasks.mkdir()
    pope_yaml = Path(lmms_eval.__file__).parent / "tasks" / "pope" / "pope.yaml"
    (tasks / "pope_local.yaml").write_text(
        f"include: {pope_yaml}\ntask: pope_local\ndataset_path: {dataset}\n"
        "dataset_kwargs: {load_from_disk: true}\n"
        "generation_kwargs: {max_new_tokens: 3, temperature: 0, num_beams: 1, "
        "do_sample: false}\n")
    (tasks / "choice_utils.py").write_text(CHOICE_UTILS)
    (tasks / "pope_choice.yaml").write_text(f"""\
task: pope_choice
dataset_path: {dataset}
dataset_kwargs: {{load_from_disk: true}}
test_split: test
output_type: multiple_choice
doc_to_visual: !function choice_utils.doc_to_visual
doc_to_text: !function choice_utils.doc_to_text
doc_to_choice: ["Yes", "No"]
doc_to_target: !function choice_utils.doc_to_target
metric_list:
  - {{metric: acc, aggregation: mean, higher_is_better: true}}
""")
    return tasks


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """A tiny run evaluated on POPE by its own pipeline, then by lmms-eval's CLI."""
    from harness.runs.pipeline import run
    from harness.specs.run_file import load_run_config
    root = tmp_path_factory.mktemp("lmms")
    folder, images = WRITERS["pope"](root / "pope")
    text = tiny_run_yaml(sft_steps=2)
    text = text[:text.index("eval:")] + (
        f"eval: {{benchmarks: [pope], max_new_tokens: 3, "
        f"sources: {{pope: {{questions: {folder}, images: {images}}}}}}}\n")
    (root / "run.yaml").write_text(text)
    cfg = load_run_config(root / "run.yaml")
    run(cfg, root / "work", progress=False)
    run_dir = root / "work" / "runs" / cfg.key
    ids = _pope_dataset(folder, images, root / "pope_hf")
    tasks = _tasks(root, root / "pope_hf")
    out = root / "lmms_out"
    proc = subprocess.run(
        [sys.executable, "-m", "lmms_eval", "--model", "ablate",
         "--model_args", f"run_dir={run_dir},device=cpu", "--tasks", "pope_local,pope_choice",
         "--include_path", str(tasks), "--batch_size", "4", "--log_samples",
         "--output_path", str(out)],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"})
    # lmms-eval logs an evaluation's exception and still exits 0: its traceback is a failure too
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, (
        proc.stdout[-3000:] + proc.stderr[-3000:])

    def samples(task):
        (path,) = out.rglob(f"*_samples_{task}.jsonl")
        return [json.loads(line) for line in path.read_text().splitlines()]

    (results,) = out.rglob("*_results.json")
    return {"run_dir": run_dir, "ids": ids, "folder": folder, "images": images,
            "generated": samples("pope_local"), "chosen": samples("pope_choice"),
            "results": json.loads(results.read_text())["results"], "cache": root / "cache"}


def test_lmms_eval_generates_what_the_run_generated(evaluated):
    ours = {p["id"]: p["prediction"] for p in map(
        json.loads, (evaluated["run_dir"] / "predictions.jsonl").read_text().splitlines())}
    theirs = {evaluated["ids"][s["doc_id"]]: s["filtered_resps"]
              for s in evaluated["generated"]}
    theirs = {k: v[0] if isinstance(v, list) else v for k, v in theirs.items()}
    assert len(theirs) == 12 and theirs == ours
    assert "pope_f1_score,none" in evaluated["results"]["pope_local"]


def test_lmms_eval_loglikelihoods_are_the_harness_likelihoods(evaluated):
    """Each (question, Yes|No) value lmms-eval got is the harness's total answer loss for
    the same question in the run's template (lmms-eval ranks choices by argmin); lmms-eval
    marks right exactly the questions the harness's likelihood answers get right."""
    from harness.data.batching import Collator, to_device
    from harness.data.llava import Conversation
    from harness.evaluation.generate import choose_by_likelihood, expected_ids, score
    from harness.runs.rebuild import load_trained_run

    run = load_trained_run(evaluated["run_dir"])
    questions = BENCHMARKS.get("pope").load(evaluated["folder"], evaluated["images"],
                                            evaluated["cache"])
    by_id = {q.id: q for q in questions}
    collate = Collator(run.tokenizer, run.eval_template(), run.transforms(), "/")
    checked = 0
    for sample in evaluated["chosen"]:
        q = by_id[evaluated["ids"][sample["doc_id"]]]
        pairs = [Conversation(q.id, q.image, [(q.turns[0][0], c)]) for c in ("Yes", "No")]
        batch = to_device(collate(pairs), run.device)
        nll = run.model.per_sample_loss(**batch, total=True)
        # the samples file writes the (value, is_greedy) pairs as strings
        losses = [float(value) for value, _ in sample["filtered_resps"]]
        assert losses == pytest.approx(nll.tolist(), abs=1e-4)
        checked += 1
    assert checked == 12
    preds = choose_by_likelihood(run.model, collate, {"pope": questions}, 8, run.device,
                                 progress=False)
    right = {p.id: float(p.prediction.lower() == p.answers[0]) for p in preds}
    assert {evaluated["ids"][s["doc_id"]]: s["acc"] for s in evaluated["chosen"]} == right
    metrics, _ = score(preds, expected_ids({"pope": questions}))
    assert evaluated["results"]["pope_choice"]["acc,none"] == pytest.approx(
        metrics["pope"]["accuracy"])


def test_answer_likelihood_flags_greedy_continuations(evaluated):
    """The model's own greedy tokens are flagged greedy and score above any other token in
    their place; a changed token is not greedy."""
    from harness.data.batching import Collator, to_device
    from harness.data.llava import Conversation
    from harness.runs.rebuild import load_trained_run
    from models.templates import IGNORE_INDEX

    run = load_trained_run(evaluated["run_dir"])
    q = BENCHMARKS.get("pope").load(evaluated["folder"], evaluated["images"],
                                    evaluated["cache"])[0]
    prompt = to_device(Collator(run.tokenizer, run.eval_template(), run.transforms(), "/",
                                for_generation=True)([Conversation(q.id, q.image,
                                                                   [(q.turns[0][0], "")])]),
                       run.device)
    never = -1   # no stop token: greedy decoding runs the full budget
    (greedy,) = run.model.generate(prompt["input_ids"], prompt["attention_mask"],
                                   prompt["pixels"], prompt["has_image"], 4, never)
    changed = greedy[:-1] + [(greedy[-1] + 1) % run.tokenizer.vocab_size]
    n = prompt["input_ids"].shape[1]
    rows = [torch.cat([prompt["input_ids"][0], torch.tensor(c)]) for c in (greedy, changed)]
    labels = [torch.cat([torch.full((n,), IGNORE_INDEX), torch.tensor(c)])
              for c in (greedy, changed)]
    logp, is_greedy = run.model.answer_likelihood(
        torch.stack(rows), torch.ones(2, n + 4, dtype=torch.long), torch.stack(labels),
        {k: v.repeat(2, 1, 1, 1) for k, v in prompt["pixels"].items()},
        prompt["has_image"].repeat(2))
    assert is_greedy.tolist() == [True, False]
    assert logp[0] > logp[1]


def _instance(request_type, args, task="t"):
    from lmms_eval.api.instance import Instance
    return Instance(request_type, args, 0, {"task": task, "doc_id": 0, "repeats": 1})


def test_wrapper_rejects_what_it_cannot_answer(evaluated, tmp_path):
    from PIL import Image

    from core.errors import HarnessError
    from harness.downstream.lmms_eval_model import AblateRun

    with pytest.raises(TypeError, match="needs model_args run_dir"):
        AblateRun()
    with pytest.raises(TypeError, match=r"unknown model_args \['temperature'\]"):
        AblateRun(run_dir=str(evaluated["run_dir"]), temperature=0.2)
    with pytest.raises(HarnessError, match="not a finished run directory"):
        AblateRun(run_dir=str(tmp_path))
    model = AblateRun(run_dir=str(evaluated["run_dir"]), device="cpu")
    image = Image.new("RGB", (8, 8))
    model.task_dict = {"t": {"test": [{"q": "two"}]}}
    with pytest.raises(ValueError, match="document 0: 2 images"):
        model.generate_until([_instance("generate_until", (
            "Which?", {}, lambda doc: [image, image], 0, "t", "test"))])
    with pytest.raises(ValueError, match="has <image> but the task gave no image"):
        model.loglikelihood([_instance("loglikelihood", (
            "<image>\nWhich?", "Yes", lambda doc: [], 0, "t", "test"))])
    (text,) = model.generate_until([_instance("generate_until", (
        "Which?", {"max_new_tokens": 2, "until": ["\n"]}, lambda doc: [image], 0, "t",
        "test"))])
    assert isinstance(text, str) and "\n" not in text


def test_an_llm_routed_run_names_its_experts_in_lmms_eval_as_in_its_own_evaluation(tmp_path):
    """A MoVA run whose LLM routes (`router: llm`): the wrapper runs the routing pass before
    answering or scoring, so lmms-eval gets the answers the run's own evaluation gave, and
    answer likelihoods under the experts that evaluation routed each question to (which
    differ from those under all experts, what the fusion uses with no pass: lmms-eval's
    request ids are in no routing label)."""
    from PIL import Image

    from harness.data.batching import Collator, to_device
    from harness.data.llava import Conversation, load_llava_json
    from harness.downstream.lmms_eval_model import AblateRun
    from harness.evaluation.generate import collect_questions
    from harness.runs.inputs import resolve_data
    from harness.runs.pipeline import run
    from harness.specs.run_file import load_run_config
    from tests.test_llm_router import router_yaml

    path = tmp_path / "routed.yaml"
    # fallback none: a barely trained router that names no expert leaves the base alone
    path.write_text(router_yaml(tmp_path, fusion_extra=", fallback: none"))
    cfg = load_run_config(path)
    result = run(cfg, tmp_path / "w", progress=False)
    ours = {p["id"]: p for p in map(
        json.loads, (result.path / "predictions.jsonl").read_text().splitlines())}
    data = resolve_data(cfg, tmp_path / "w")
    questions = [q for qs in collect_questions(
        cfg.eval.benchmarks, load_llava_json(*data.eval), cfg.eval.sources,
        tmp_path / "cache").values() for q in qs]
    images = [Image.open(data.eval[1] / q.image).convert("RGB") for q in questions]
    model = AblateRun(run_dir=str(result.path), device="cpu", batch_size=4)
    assert model.run.model.before_answer
    model.task_dict = {"t": {"test": [{"image": im} for im in images]}}
    visual = lambda doc: [doc["image"]]   # noqa: E731
    answers = model.generate_until([
        _instance("generate_until", (q.turns[0][0], {"max_new_tokens": cfg.eval.max_new_tokens,
                                                     "until": []}, visual, i, "t", "test"))
        for i, q in enumerate(questions)])
    assert len(answers) == len(ours) == len(questions) > 0
    assert dict(zip([q.id for q in questions], answers)) == {
        i: p["prediction"] for i, p in ours.items()}
    scored = model.loglikelihood([_instance("loglikelihood", (q.turns[0][0], "yes", visual, i,
                                                              "t", "test"))
                                  for i, q in enumerate(questions)])
    run_ = model.run
    names = run_.model.fusion.expert_names
    collate = Collator(run_.tokenizer, run_.eval_template(), run_.transforms(), "/")
    batch = to_device(collate([Conversation(q.id, im, [(q.turns[0][0], "yes")])
                               for q, im in zip(questions, images)]), run_.device)
    routed = torch.tensor([[float(n in ours[q.id]["routing"]["used"]) for n in names]
                           for q in questions])
    under_routed = run_.model.per_sample_loss(**batch, total=True, given=routed)
    under_all = run_.model.per_sample_loss(**batch, total=True,
                                           given=torch.ones_like(routed))
    assert [r.text[0] for r in scored] == pytest.approx(under_routed.tolist(), abs=1e-4)
    assert not routed.bool().all(), "the router used every expert everywhere: no check"
    assert (under_routed - under_all).abs().max() > 1e-3
