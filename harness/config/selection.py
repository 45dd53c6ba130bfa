"""What a run is asked to do besides training to the end: pause its last stage at a rung
(a fraction of that stage's steps), score the checkpoint there on a selection split, and
wait. Successive halving (harness.search) decides from these scores which candidates go on.

Neither is part of a run's identity (like the executor): a candidate paused at a rung and
continued ends exactly where the same run trained without pausing would have ended, and a
run finished by a full search is reused by a halving search.

The selection split is held out from the benchmarks the search reports, so the search does
not select on the numbers it publishes: for synthetic data, fresh questions drawn from the
same generator apart from the eval split; otherwise a held-out LLaVA-format evaluation file
and, for benchmarks that read their own files, their held-out question files."""
from __future__ import annotations

from dataclasses import dataclass, field

from core.fields import ranged
from core.identity import content_hash, to_plain
from harness.config.run_config import BenchmarkSource, DatasetRef


@dataclass(frozen=True)
class SelectionSplit:
    benchmarks: list[str] = ranged(default_factory=list)   # empty: the objective's benchmarks
    synthetic_per_skill: int = ranged(50, ge=1)   # synthetic data: held-out questions per skill
    data: DatasetRef | None = None      # otherwise: a held-out evaluation file (LLaVA JSON)
    sources: dict[str, BenchmarkSource] = field(default_factory=dict)  # own-file benchmarks

    @property
    def identity(self) -> str:
        return content_hash(to_plain(self))[:10]

    def describe(self) -> str:
        where = (f"held-out file {self.data.json}" if self.data is not None
                 else f"{self.synthetic_per_skill} fresh synthetic questions per skill")
        own = f", held-out files for {', '.join(sorted(self.sources))}" if self.sources else ""
        return f"selection split ({', '.join(self.benchmarks)}): {where}{own}"


@dataclass(frozen=True)
class Rung:
    """Pause the run's last stage at `fraction` of its steps (the step rounds down, at least
    1) and score that checkpoint on `selection`."""
    number: int                 # 1-based, in the order of the halving's rungs
    fraction: float
    selection: SelectionSplit

    def folder_name(self) -> str:
        """Its records' folder under the run directory's rungs/."""
        return f"{self.fraction:g}-{self.selection.identity}"

    def step_of(self, total: int) -> int:
        return max(1, int(self.fraction * total))
