"""`ablate check-data SPEC` (and `plan --check-data`, `rehearse`): every image of every LLaVA
source the spec's runs train or evaluate on, decoded once before any job starts
(harness.data.image_check), each bad one named with its record and file."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from harness.config.run_config import RunConfig
from harness.data.image_check import ImageCheck, check_llava_images

SHOWN = 20   # bad images listed per source; the count says how many in all


@dataclass
class DataCheckReport:
    lines: list[str] = field(default_factory=list)
    checks: list[ImageCheck] = field(default_factory=list)

    @property
    def bad(self) -> int:
        return sum(len(c.bad) for c in self.checks)


def spec_sources(configs: Iterable[RunConfig]) -> dict[tuple[str, str], list[str]]:
    """(json, image folder) -> the parts naming it (align, sft, eval), over all runs."""
    out: dict[tuple[str, str], list[str]] = {}
    for cfg in configs:
        if cfg.data.synthetic is not None:
            continue   # generated here, decodable by construction
        for part in ("align", "sft", "eval"):
            ref = getattr(cfg.data, part)
            if ref is not None:
                parts = out.setdefault((ref.json, ref.images), [])
                if part not in parts:
                    parts.append(part)
    return out


def check_spec_data(configs: Iterable[RunConfig], workers: int | None = None,
                    progress: bool = True) -> DataCheckReport:
    report = DataCheckReport()
    sources = spec_sources(configs)
    if not sources:
        report.lines.append("no LLaVA data files in this spec (synthetic data): nothing to "
                            "check")
    for (json_path, images), parts in sources.items():
        label = "/".join(parts)
        if not (Path(json_path).is_file() and Path(images).is_dir()):
            report.lines.append(f"{label}: {json_path}: not on this machine, not checked")
            continue
        check = check_llava_images(json_path, images, workers, progress)
        report.checks.append(check)
        when = "checked before, same fingerprint" if check.cached else "decoded now"
        if not check.bad:
            report.lines.append(f"{label}: {json_path}: all {check.images:,} images decode "
                                f"({when})")
            continue
        report.lines.append(f"{label}: {json_path}: {len(check.bad):,} of {check.images:,} "
                            f"images do not decode ({when}):")
        report.lines += ["  " + b.line(check.root) for b in check.bad[:SHOWN]]
        if len(check.bad) > SHOWN:
            report.lines.append(f"  ... and {len(check.bad) - SHOWN:,} more")
    if report.bad:
        report.lines.append(f"{report.bad:,} bad images: fix or remove their records, or set "
                            "`data.bad_images: skip` to train without them (counted in each "
                            "stage's record)")
    return report
