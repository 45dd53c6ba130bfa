"""What a run reads before it builds anything: its data files resolved (generated synthetic
data, or the configured LLaVA files), the images that do not decode, the training sets as
loaded (sizes checked against the config, bad images left out), the evaluation template and
a rung's selection questions."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from core.errors import DataError
from harness.config.run_config import RunConfig
from harness.config.selection import SelectionSplit
from harness.data.image_check import check_llava_images
from harness.data.llava import Conversation, load_llava_json, read_llava_records
from harness.data.synthetic import corpus as synthetic_corpus
from harness.data.synthetic import ensure_synthetic, ensure_validation
from harness.evaluation.generate import collect_questions
from models.fusion import FUSIONS
from models.templates import TEMPLATES, template_corpus


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
    fusion = cfg.model.fusion
    return ResolvedData(parts["align"], parts["sft"], parts["eval"],
                        text + template_corpus()
                        + FUSIONS.get(fusion.id).text_corpus(fusion.options))


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


def training_sets(cfg: RunConfig, data: ResolvedData, skip: dict[str, set[str]],
                  report: Callable[[str], None]
                  ) -> tuple[dict[str, list[Conversation]], dict[str, int]]:
    """Each training part's records, loaded once for every stage that reads it, without the
    records whose images `skip` names; and how many each part left out. A part whose size
    differs from the `samples` its config states is an error."""
    datasets = {p: load_llava_json(*getattr(data, p), report=report)
                for p in sorted({s.data for s in cfg.stages})}
    for part, records in datasets.items():
        stated = getattr(cfg.data, part).samples if getattr(cfg.data, part) else None
        if stated is not None and stated != len(records):
            raise DataError(f"{getattr(data, part)[0]}: has {len(records)} records; the config "
                            f"states data.{part}.samples = {stated}")
    skipped = {p: sum(r.image in skip.get(p, ()) for r in records)
               for p, records in datasets.items()}
    kept = {p: [r for r in records if r.image not in skip.get(p, ())]
            for p, records in datasets.items()}
    return kept, skipped


def evaluation_template(cfg: RunConfig):
    """The conversation template questions are asked in: eval.template, else the last
    stage's."""
    return TEMPLATES.get(cfg.eval.template or cfg.stages[-1].template)


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
