"""The layout holds (docs/architecture.md): no import circles between modules or between
harness's packages, `core` imports nothing of the project, `models` and `analysis` nothing but
`core`; and a report needs only the records: after a spec's runs finish and its data is
deleted, `ablate report` still prints the table, without importing torch, transformers, timm
or open_clip."""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import textwrap
from collections import defaultdict
from pathlib import Path

import pytest

from core.errors import ConfigError
from harness.cli import main
from harness.rehearsal.generated_data import write_benchmarks, write_training_data
from harness.specs import load_spec

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("core", "models", "analysis", "harness")
MAY_IMPORT = {"core": set(), "models": {"core"}, "analysis": {"core"},
              "harness": {"core", "models", "analysis"}}
HEAVY = ("torch", "transformers", "timm", "open_clip")
# Bottom to top; a package imports only from layers below its own (docs/architecture.md).
LAYERS = [
    {"core"},
    {"models", "analysis"},
    {"harness.config", "harness.data"},
    {"harness.evaluation", "harness.training"},
    {"harness.specs"},
    {"harness.runs"},
    {"harness.tracking", "harness.downstream"},
    {"harness.scheduler"},
    {"harness.planning", "harness.search"},
    {"harness.rehearsal"},
    {"harness.cli"},
]


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports, anywhere in the file (a deferred import is
    still a dependency). Importing a.b.c runs the package a.b's __init__ too, so that is an
    edge as well, except to the importer's own packages (already being imported)."""
    modules = _modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[:len(base) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in modules else module
                           for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if not target or target == name:
                    continue
                graph[name].add(target)
                parts = target.split(".")
                for k in range(1, len(parts)):
                    parent = ".".join(parts[:k])
                    if parent in modules and not (name + ".").startswith(parent + "."):
                        graph[name].add(parent)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in list(graph):
        if v not in index:
            visit(v)
    return found


def harness_package(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "harness" and len(parts) > 1 else parts[0]


def test_cycle_finder_finds_a_cycle_and_passes_a_chain():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": {"c"}}) == []


def test_no_module_imports_itself_in_a_circle():
    graph = import_graph()
    assert len(graph) > 50                      # the walk saw the project
    assert cycles(graph) == []


def test_harness_packages_form_layers():
    """Collapsed to harness's packages (config, data, evaluation, ... cli), the graph has no
    circle either: each package builds only on the ones below it."""
    packages: dict[str, set[str]] = defaultdict(set)
    for module, targets in import_graph().items():
        for target in targets:
            if harness_package(module) != harness_package(target):
                packages[harness_package(module)].add(harness_package(target))
    assert cycles(packages) == []


def test_every_import_goes_down_the_layers():
    layer = {package: i for i, packages in enumerate(LAYERS) for package in packages}
    graph = import_graph()
    packages = {harness_package(m) for m in graph} - {"harness"}
    assert packages <= set(layer), f"not in LAYERS: {sorted(packages - set(layer))}"
    upward = [f"{m} -> {t}" for m, targets in graph.items() for t in targets
              if harness_package(m) != harness_package(t) and harness_package(t) != "harness"
              and layer[harness_package(t)] >= layer[harness_package(m)]]
    assert upward == []


def test_each_top_level_package_imports_only_what_it_may():
    wrong = [f"{m} -> {t}" for m, targets in import_graph().items() for t in targets
             if t.split(".")[0] != m.split(".")[0]
             and t.split(".")[0] not in MAY_IMPORT[m.split(".")[0]]]
    assert wrong == []


BASE = """\
name: records_only
seed: 0
data:
  align: {{json: {align_json}, images: {align_images}}}
  sft: {{json: {sft_json}, images: {sft_images}}}
model:
  experts:
    - {{id: clip-vit, preset: tiny, resolution: 32, layers: [-1]}}
  fusion: {{id: sequence_append}}
  llm: {{id: tiny-llama, hidden_size: 32, layers: 1, heads: 2, intermediate_size: 64,
        vocab_size: 300}}
stages:
  - {{name: align, data: align, template: plain, train: [projector], lr: 1.0e-3, steps: 2,
     batch_size: 4}}
  - {{name: sft, data: sft, template: vicuna_v1, train: [projector, llm], lr: 1.0e-3,
     steps: 2, batch_size: 4}}
eval:
  benchmarks: [pope]
  sources: {{pope: {{questions: {pope_questions}, images: {pope_images}}}}}
  batch_size: 8
  max_new_tokens: 3
"""
SPEC = """\
name: records_only
base: base.yaml
axes:
  lr: {path: "stages[sft].lr", values: [1.0e-3, 3.0e-4]}
report:
  baseline: "0.001"
"""
REPORT_WITHOUT_MODELS = """\
import sys
from harness.cli import main
code = main(["report", {spec!r}, "--workdir", {work!r}, "--format", "markdown",
             "--source", {source!r}])
heavy = [m for m in {heavy!r} if m in sys.modules]
print("HEAVY", heavy)
sys.exit(code or (3 if heavy else 0))
"""


def test_report_needs_only_the_records(tmp_path, capsys):
    data = tmp_path / "data"
    parts = write_training_data(data, 16)
    (pope_questions, pope_images), = write_benchmarks(data, ["pope"]).values()
    folder = tmp_path / "spec"
    folder.mkdir()
    (folder / "base.yaml").write_text(BASE.format(
        align_json=parts["align"][0], align_images=parts["align"][1],
        sft_json=parts["sft"][0], sft_images=parts["sft"][1],
        pope_questions=pope_questions, pope_images=pope_images))
    spec_path = folder / "records_only.yaml"
    spec_path.write_text(SPEC)
    work = tmp_path / "work"
    assert main(["run", str(spec_path), "--workdir", str(work), "--executor", "inline"]) == 0
    capsys.readouterr()
    assert (work / "specs" / "records_only.json").is_file()

    shutil.rmtree(data)
    with pytest.raises(ConfigError, match="not found"):
        load_spec(spec_path)            # the spec itself can no longer be loaded

    for source in ("rundirs", "mlflow"):
        script = REPORT_WITHOUT_MODELS.format(spec=str(spec_path), work=str(work),
                                              source=source, heavy=HEAVY)
        done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=ROOT,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "HEAVY []" in done.stdout
        assert "2 runs: 2 finished" in done.stdout
        assert "| 0.001 |" in done.stdout and "| 0.0003 |" in done.stdout
        assert "baseline" in done.stdout
    assert (work / "reports" / "records_only" / "ablation.md").is_file()


# A name a module or package may share, because it names a role inside its package and is
# always imported by its full path (docs/architecture.md, "No two modules share a name").
ROLE_NAMES = {"base", "registry", "synthetic"}


def test_no_two_modules_or_packages_share_a_name():
    owners: dict[str, list[str]] = defaultdict(list)
    for dotted in _modules():
        owners[dotted.rsplit(".", 1)[-1]].append(dotted)
    twins = {name: sorted(where) for name, where in owners.items()
             if len(where) > 1 and name not in ROLE_NAMES}
    assert not twins, f"modules or packages sharing a name: {twins}"
