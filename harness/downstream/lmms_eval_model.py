"""A finished run of this harness as an lmms-eval model (the `lmms` extra), so any of
lmms-eval's tasks can score it beside the published models:

    pip install -e '.[lmms]'
    python -m lmms_eval --model ablate --model_args run_dir=WORKDIR/runs/<key> --tasks pope

The package's `lmms_eval.models` entry point registers the name `ablate`. The run is rebuilt
from its directory (config, last stage's weights, tokenizer) and asked in its own evaluation
template, exactly as `ablate` asks its benchmarks:

- `generate_until`: greedy decoding (LLaVA-1.5's evaluation setting) up to the request's
  `max_new_tokens` (else the run's `eval.max_new_tokens`), cut at the first `until` string;
- `loglikelihood`: the continuation scored as the assistant's whole reply, its end marker
  included (as `eval.likelihood` ranks allowed answers). lmms-eval's multiple-choice scoring
  picks the choice with the *lowest* value (api/task.py: "we return the actual loss in many
  model loglikelihood, we just use the argmin here"; lmms-eval issue #370), so the value is
  the reply's total negative log-likelihood, paired with whether greedy decoding would
  produce the reply.

A question carries at most one image (the run's experts see one); `<image>` is put before
the question when the task's prompt does not place it, as LLaVA does."""
from __future__ import annotations

import itertools
import warnings
from typing import NamedTuple

from lmms_eval.api.instance import GenerationResult, Instance
from lmms_eval.api.model import lmms
from PIL import Image
from tqdm import tqdm

from harness.data.batching import Collator, to_device
from harness.data.llava import Conversation
from harness.runs.rebuild import load_trained_run
from models.templates import IMAGE_PLACEHOLDER

MODEL_NAME = "ablate"


def manifest():
    """The `lmms_eval.models` entry point: where lmms-eval finds the `ablate` model."""
    from lmms_eval.models.registry_v2 import ModelManifest
    return ModelManifest(model_id=MODEL_NAME,
                         simple_class_path=f"{__name__}.{AblateRun.__name__}")


class _Asked(NamedTuple):
    """One generate_until request, ready to batch."""
    question: Conversation
    budget: int            # max new tokens
    until: list[str]
    context: str
    gen_kwargs: dict


class AblateRun(lmms):
    """model_args: run_dir (required: WORKDIR/runs/<key>), device (auto, cpu, cuda:N),
    batch_size, max_new_tokens (default: the run's eval.max_new_tokens)."""

    is_simple = True

    def __init__(self, run_dir: str | None = None, device: str | None = None,
                 batch_size: int | str = 1, max_new_tokens: int | str | None = None,
                 max_batch_size: int | None = None, **unknown) -> None:
        super().__init__()
        if unknown:
            raise TypeError(f"lmms-eval model '{MODEL_NAME}': unknown model_args "
                            f"{sorted(unknown)}; allowed: run_dir, device, batch_size, "
                            "max_new_tokens")
        if not run_dir:
            raise TypeError(f"lmms-eval model '{MODEL_NAME}' needs model_args "
                            "run_dir=WORKDIR/runs/<key> (a finished run)")
        if str(batch_size).startswith("auto"):
            raise TypeError(f"lmms-eval model '{MODEL_NAME}': batch_size must be a number")
        self.run = load_trained_run(run_dir, device or "auto")
        self.batch_size = int(batch_size)
        self.max_new_tokens = int(max_new_tokens or self.run.config.eval.max_new_tokens)
        template = self.run.eval_template()
        transforms = self.run.transforms()
        tokenizer = self.run.tokenizer
        self._prompting = Collator(tokenizer, template, transforms, "/", for_generation=True)
        self._scoring = Collator(tokenizer, template, transforms, "/")
        self._stop_id = template.stop_id(tokenizer)
        self._warned_sampling = False

    # -- one question ------------------------------------------------------------------
    def _doc(self, task: str, split: str, doc_id) -> dict:
        return self.task_dict[task][split][doc_id]

    def _image(self, visuals, task: str, doc_id) -> Image.Image | None:
        visuals = [v for v in (visuals or []) if v is not None]
        if len(visuals) > 1:
            raise ValueError(f"task '{task}' document {doc_id}: {len(visuals)} images; a run "
                             "of this harness answers questions about one image")
        if visuals and not isinstance(visuals[0], Image.Image):
            raise ValueError(f"task '{task}' document {doc_id}: visual of type "
                             f"{type(visuals[0]).__name__}; this model reads images only")
        return visuals[0] if visuals else None

    def _question(self, context: str, image: Image.Image | None, reply: str, tag: str
                  ) -> Conversation:
        if image is not None and IMAGE_PLACEHOLDER not in context:
            context = f"{IMAGE_PLACEHOLDER}\n{context}"
        if image is None and IMAGE_PLACEHOLDER in context:
            raise ValueError(f"{tag}: the prompt has {IMAGE_PLACEHOLDER} but the task gave "
                             "no image")
        return Conversation(tag, image, [(context, reply)])

    # -- lmms-eval's requests -----------------------------------------------------------
    def loglikelihood(self, requests: list[Instance]) -> list[GenerationResult]:
        convs = []
        for req in requests:
            if len(req.args) == 2:   # an unconditional request (acc_mutual_info): no image
                context, continuation, image, tag = *req.args, None, "unconditional"
            else:
                context, target, doc_to_visual, doc_id, task, split = req.args
                doc = self._doc(task, split, doc_id)
                continuation = target if isinstance(target, str) else target(doc)
                tag = f"{task}/{doc_id}"
                image = self._image(doc_to_visual(doc), task, doc_id)
            # the template puts its own separator before the reply
            convs.append(self._question(context, image, str(continuation).lstrip(), tag))
        out = []
        for start in tqdm(range(0, len(convs), self.batch_size), desc="ablate loglikelihood",
                          disable=self.rank != 0):
            chunk = convs[start:start + self.batch_size]
            batch = to_device(self._scoring(chunk), self.run.device)
            logp, greedy = self.run.model.answer_likelihood(
                **batch, given=self._given(self._scoring, chunk))
            # lmms-eval 0.7 turns every response that is not text (or wrapped as a
            # GenerationResult) into its str(), so a bare (loss, is_greedy) pair would reach
            # the task's scoring as "(1.2, False)"; wrapped, it arrives as the pair
            out += [GenerationResult((-float(lp), bool(g)))
                    for lp, g in zip(logp.tolist(), greedy.tolist())]
        return out

    def _given(self, collate, questions: list[Conversation]):
        """What the model's pass before answering decides (MoVA's LLM router names its
        experts), as in the harness's own evaluation; None for a model without one."""
        from harness.evaluation.passes import ask_first
        given, _ = ask_first(self.run.model, self.run.tokenizer, collate, questions,
                             self.run.device, self._stop_id)
        return given

    def _budget(self, kwargs: dict) -> int:
        sampling = (kwargs.get("do_sample") or float(kwargs.get("temperature") or 0) > 0
                    or int(kwargs.get("num_beams") or 1) > 1)
        if sampling and not self._warned_sampling:
            warnings.warn(f"lmms-eval model '{MODEL_NAME}' decodes greedily; the task's "
                          "sampling or beam settings are not used", stacklevel=3)
            self._warned_sampling = True
        return int(kwargs.get("max_new_tokens") or self.max_new_tokens)

    def generate_until(self, requests: list[Instance]) -> list[str]:
        asked = []
        for req in requests:
            context, gen_kwargs, doc_to_visual, doc_id, task, split = req.args
            gen_kwargs = dict(gen_kwargs or {})
            until = gen_kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            image = self._image(doc_to_visual(self._doc(task, split, doc_id)), task, doc_id)
            asked.append(_Asked(self._question(context, image, "", f"{task}/{doc_id}"),
                                self._budget(gen_kwargs), [u for u in until if u], context,
                                gen_kwargs))
        answers: list[str] = []
        bar = tqdm(total=len(asked), desc="ablate generate", disable=self.rank != 0)
        # a batch shares one token budget: consecutive requests of the same task do
        for budget, same in itertools.groupby(asked, key=lambda a: a.budget):
            same = list(same)
            for start in range(0, len(same), self.batch_size):
                chunk = same[start:start + self.batch_size]
                batch = to_device(self._prompting([a.question for a in chunk]),
                                  self.run.device)
                tokens = self.run.model.generate(
                    batch["input_ids"], batch["attention_mask"], batch["pixels"],
                    batch["has_image"], budget, self._stop_id, sample_ids=batch["sample_ids"],
                    given=self._given(self._prompting, [a.question for a in chunk]))
                for a, toks in zip(chunk, tokens):
                    text = self.run.tokenizer.decode(toks, skip_special_tokens=True).strip()
                    for marker in a.until:
                        text = text.split(marker)[0]
                    answers.append(text)
                    self.cache_hook.add_partial("generate_until", (a.context, a.gen_kwargs),
                                                text)
                bar.update(len(chunk))
        bar.close()
        return answers

    def generate_until_multi_round(self, requests) -> list[str]:
        raise NotImplementedError(f"lmms-eval model '{MODEL_NAME}' answers single-turn "
                                  "questions; multi-round tasks are not supported")
