"""Per-arm tuning with Optuna: each arm is compared at its own best value of one field
(normally a stage's learning rate), so a candidate is not judged at a rate that suits only
the start set.

One study per arm in a journal file under the search's folder (shared storage works). Trials
are asked in waves of `tune.parallel` per arm, and every arm's wave goes out as one
submission. A trial's value is the mean objective over the seeds. The sampler is seeded by
`sampler_seed` plus the number of trials the study already holds, so a resumed search asks
what an uninterrupted one would have; a trial asked but never told (the search was killed)
is evaluated again (its runs, keyed by content, are found if they finished)."""
from __future__ import annotations

from pathlib import Path

import optuna
from optuna.distributions import FloatDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from core.identity import content_hash
from harness.search.round_types import Arm, ArmRunner
from harness.search.search_spec import SearchSpec

optuna.logging.set_verbosity(optuna.logging.WARNING)


class Tuner:
    def __init__(self, spec: SearchSpec, folder: Path, runner: ArmRunner):
        self.spec, self.runner = spec, runner
        folder.mkdir(parents=True, exist_ok=True)
        self.storage = JournalStorage(JournalFileBackend(str(folder / "optuna.journal")))
        t = self.spec.tune
        self.distribution = FloatDistribution(t.low, t.high, log=t.log)

    def study(self, experts: list[str]) -> optuna.Study:
        t = self.spec.tune
        name = (f"{self.spec.name}:{'+'.join(experts)}:"
                f"{content_hash([self.spec.identity, t.path, t.low, t.high, t.log])[:8]}")
        return optuna.create_study(study_name=name, storage=self.storage,
                                   direction="maximize", load_if_exists=True)

    def ask(self, study: optuna.Study, held: int) -> optuna.Trial:
        """Seeded by the trials the study holds, so a resumed search asks exactly what an
        uninterrupted one would have."""
        study.sampler = optuna.samplers.TPESampler(seed=self.spec.tune.sampler_seed + held)
        return study.ask({"value": self.distribution})

    def evaluate(self, arms: list[tuple[list[str], str | None]], what: str) -> list[Arm]:
        t, spec = self.spec.tune, self.spec
        studies = {tuple(e): self.study(e) for e, _ in arms}
        wave = 0
        while True:
            asked = []   # (arm experts, trial number, value)
            for experts, _ in arms:
                study = studies[tuple(experts)]
                trials = study.get_trials(deepcopy=False)
                done = sum(tr.state == TrialState.COMPLETE for tr in trials)
                pending = [tr for tr in trials if tr.state == TrialState.RUNNING]
                asked += [(tuple(experts), tr.number, tr.params["value"]) for tr in pending]
                room = min(t.parallel - len(pending), t.trials - done - len(pending))
                for i in range(max(0, room)):
                    trial = self.ask(study, len(trials) + i)
                    asked.append((tuple(experts), trial.number, trial.params["value"]))
            if not asked:
                break
            wave += 1
            planned = {(e, n, s): spec.run(list(e), s, {t.path: v})
                       for e, n, v in asked for s in spec.seeds}
            results = self.runner.execute(list(planned.values()),
                                          f"{what}, tuning wave {wave}")
            for e, n, v in asked:
                runs = [self.runner.seed_run(planned[(e, n, s)], results[planned[(e, n, s)].key],
                                             {t.path: v}) for s in spec.seeds]
                studies[e].tell(n, sum(r.objective for r in runs) / len(runs))
        out = []
        for experts, added in arms:
            trials = [tr for tr in studies[tuple(experts)].get_trials(deepcopy=False)
                      if tr.state == TrialState.COMPLETE]
            best = max(trials, key=lambda tr: (tr.value, -tr.number))
            value = best.params["value"]
            runs = [spec.run(experts, s, {t.path: value}) for s in spec.seeds]
            seed_runs = [self.runner.seed_run(r, self.runner.result_of(r), {t.path: value})
                         for r in runs]
            out.append(Arm(list(experts), added, seed_runs, {
                "path": t.path, "value": value,
                "trials": [{"value": tr.params["value"], "objective": tr.value}
                           for tr in sorted(trials, key=lambda tr: tr.number)]}))
        return out

