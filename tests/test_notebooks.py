"""The notebooks in analysis/notebooks execute top to bottom (nbclient, a real kernel) on
records written by hand, so they cannot rot as the code under them changes."""
import json
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from analysis.report_manifest import write_manifest
from harness.search import load_search_spec
from harness.search.search_spec import search_manifest
from harness.specs import load_spec
from harness.specs.experiment_manifest import record_spec
from tests.test_analysis import HAND, ROUNDS, SCORES, SPEED, write_run

NOTEBOOKS = Path(__file__).resolve().parent.parent / "analysis" / "notebooks"
ROOT = NOTEBOOKS.parent.parent


def execute(name: str) -> nbformat.NotebookNode:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    return nb


def outputs(nb) -> str:
    text = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            text.append(out.get("text", ""))
            text.extend(str(v) for v in out.get("data", {}).values())
    return "\n".join(text)


def test_ablation_notebook_runs_on_a_specs_records(tiny_spec, tmp_path, monkeypatch):
    path = tiny_spec("hand", HAND)
    work = tmp_path / "work"
    spec = load_spec(path)
    record_spec(spec, work)    # what `ablate run` writes beside the records
    for run in spec.runs:
        key = (run.labels["lr"], int(run.labels["seed"]))
        if key in SCORES:
            write_run(work, run, "DONE", SCORES[key], SPEED[key])
    monkeypatch.setenv("ABLATE_SPEC", str(path))
    monkeypatch.setenv("ABLATE_WORKDIR", str(work))
    nb = execute("ablation_report.ipynb")
    text = outputs(nb)
    assert "6 runs: 4 finished, 2 not run" in text
    assert "+16.7 [+0.0, +50.0]" in text          # the ablation table, as HTML
    images = [o for c in nb.cells for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert len(images) == 2                        # the bar chart and the cost plot


def test_greedy_notebook_runs_on_a_searchs_records(tmp_path, monkeypatch):
    work = tmp_path / "work"
    folder = work / "searches" / "greedy_known_answer"
    folder.mkdir(parents=True)
    for r in ROUNDS:
        (folder / f"round-{r['round']}.json").write_text(json.dumps(r))
    spec_file = ROOT / "experiments/tiny/greedy_known_answer.yaml"
    write_manifest(search_manifest(load_search_spec(spec_file)), work)
    monkeypatch.setenv("ABLATE_SPEC", str(spec_file))
    monkeypatch.setenv("ABLATE_WORKDIR", str(work))
    nb = execute("greedy_search.ipynb")
    text = outputs(nb)
    assert "a + b" in text and "50.0 ± 2.0" in text
    assert any("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
