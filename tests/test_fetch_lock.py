"""Hub weights pinned by commit: `ablate fetch` resolves every model a spec names to the commit
the hub serves, writes the spec's lock file, and the runs are then keyed by those commits and
built from them offline; a model missing from the cache is refused before anything is
submitted, with the command that fetches it. The hub here is a prepared Hugging Face cache
(its own layout: models--org--name/snapshots/<commit>, refs/main), with HF_HUB_OFFLINE set,
as on a compute node: no network is used."""
import json
import shutil
from pathlib import Path

import huggingface_hub.constants
import pytest

from harness.cli import main
from harness.specs import load_spec
from models.experts import ExpertConfig, build_expert
from models.hub import pinned_llm
from models.llm import LLMConfig, write_tiny_llama
from tests.tiny import tiny_run_yaml

COMMIT_A, COMMIT_B = "a" * 40, "b" * 40
CORPUS = ["what color is the square", "is there a circle in the image", "yes", "no", "red"]


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """put(repo, folder, commit): the folder as that commit of repo, and the hub's main."""
    cache = tmp_path / "hub"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def put(repo: str, folder: Path, commit: str) -> None:
        root = cache / f"models--{repo.replace('/', '--')}"
        shutil.copytree(folder, root / "snapshots" / commit)
        (root / "refs").mkdir(parents=True, exist_ok=True)
        (root / "refs" / "main").write_text(commit)
    return put


def tiny_llm(tmp_path, seed: int) -> Path:
    folder = tmp_path / f"llm-{seed}"
    write_tiny_llama(LLMConfig(hidden_size=32, layers=1, heads=2, intermediate_size=64,
                               vocab_size=300, init_seed=seed), CORPUS, folder)
    return folder


def tiny_sam(tmp_path) -> Path:
    folder = tmp_path / "sam"
    build_expert(ExpertConfig(id="sam")).model.save_pretrained(folder)
    return folder


def hub_spec(tmp_path, llm="local/tiny-llm", sam="local/tiny-sam") -> Path:
    folder = tmp_path / "spec"
    folder.mkdir(exist_ok=True)
    base = tiny_run_yaml("pinned", sft_steps=2)
    base = base.replace("{id: sam, preset: tiny,", f"{{id: sam, preset: tiny, pretrained: {sam},")
    # the hf LLM reads its sizes from its own config: its entry is id and path alone
    lines = base.splitlines()
    start = next(i for i, line in enumerate(lines) if "llm: {id: tiny-llama" in line)
    lines[start:start + 2] = [f"  llm: {{id: hf, path: {llm}}}"]
    (folder / "base.yaml").write_text("\n".join(lines) + "\n")
    spec = folder / "pinned.yaml"
    spec.write_text("name: pinned\nbase: base.yaml\n")
    return spec


def test_fetch_pins_every_model_and_runs_build_from_the_pins(hub, tmp_path, capsys):
    hub("local/tiny-llm", tiny_llm(tmp_path, 0), COMMIT_A)
    hub("local/tiny-sam", tiny_sam(tmp_path), COMMIT_A)
    spec = hub_spec(tmp_path)
    (unpinned,) = load_spec(spec).runs

    assert main(["fetch", str(spec)]) == 0
    lock = json.loads((spec.parent / "pinned.lock.json").read_text())
    assert lock["artifacts"] == {"local/tiny-llm": COMMIT_A, "local/tiny-sam": COMMIT_A}
    (run,) = load_spec(spec).runs
    assert run.config.model.llm.revision == COMMIT_A
    assert [e.revision for e in run.config.model.experts] == [None, COMMIT_A]
    assert run.key != unpinned.key   # the commit is part of the run's identity
    assert pinned_llm(run.config.model.llm).path.endswith(f"snapshots/{COMMIT_A}")

    # the hub moves on: the lock keeps the runs on their commit until --update
    hub("local/tiny-llm", tiny_llm(tmp_path, 1), COMMIT_B)
    assert load_spec(spec).runs[0].key == run.key
    assert main(["fetch", str(spec), "--update"]) == 0
    (moved,) = load_spec(spec).runs
    assert moved.config.model.llm.revision == COMMIT_B and moved.key != run.key

    # a pinned commit that is not in this machine's cache: refused before anything is written
    shutil.rmtree(tmp_path / "hub" / "models--local--tiny-llm" / "snapshots" / COMMIT_B)
    work = tmp_path / "work"
    capsys.readouterr()
    assert main(["run", str(spec), "--workdir", str(work), "--executor", "inline"]) == 2
    err = capsys.readouterr().err
    assert f"model.llm.path: local/tiny-llm@{COMMIT_B} is not in this machine's" in err
    assert f"ablate fetch {spec}" in err
    assert not work.exists()


@pytest.mark.slow
def test_a_pinned_run_trains_offline_from_its_snapshot(hub, tmp_path):
    hub("local/tiny-llm", tiny_llm(tmp_path, 0), COMMIT_A)
    hub("local/tiny-sam", tiny_sam(tmp_path), COMMIT_A)
    spec = hub_spec(tmp_path)
    assert main(["fetch", str(spec)]) == 0
    work = tmp_path / "work"
    assert main(["run", str(spec), "--workdir", str(work), "--executor", "inline"]) == 0
    (run,) = load_spec(spec).runs
    status = json.loads((work / "runs" / run.key / "status.json").read_text())
    assert status["state"] == "DONE"
    resolved = json.loads((work / "runs" / run.key / "config.json").read_text())
    assert resolved["model"]["llm"]["revision"] == COMMIT_A


def test_offline_without_the_model_is_refused_with_the_fetch_command(hub, tmp_path, capsys):
    hub("local/tiny-sam", tiny_sam(tmp_path), COMMIT_A)
    spec = hub_spec(tmp_path, llm="local/never-fetched")
    work = tmp_path / "work"
    assert main(["run", str(spec), "--workdir", str(work), "--executor", "inline"]) == 2
    err = capsys.readouterr().err
    assert "model.llm.path: local/never-fetched@main is not in this machine's" in err
    assert "ablate fetch" in err and not work.exists()


@pytest.mark.parametrize("expert,repo,filename", [
    (dict(id="clip-vit-hf", preset="large-336", pretrained="openai/clip-vit-large-patch14-336"),
     "openai/clip-vit-large-patch14-336", None),
    # timm's pretrained config names the hub repo of an `arch.tag` name
    (dict(id="convnext", preset="xxlarge", pretrained="clip_laion2b_soup_ft_in1k"),
     "timm/convnext_xxlarge.clip_laion2b_soup_ft_in1k", None),
    # open_clip's pretrained table: `hf_hub` entry of (arch, tag)
    (dict(id="clip-vit", preset="large-336", pretrained="openai"),
     "timm/vit_large_patch14_clip_336.openai", None),
    (dict(id="clip-convnext", preset="xxlarge-1024",
          pretrained="hf-hub:laion/CLIP-convnext_xxlarge-laion2B-s34B-b82K-augreg-soup"),
     "laion/CLIP-convnext_xxlarge-laion2B-s34B-b82K-augreg-soup", None),
])
def test_each_library_name_is_its_hub_repo(expert, repo, filename, tmp_path):
    from models.hub import HubSource, expert_source
    assert expert_source(ExpertConfig(**expert)) == HubSource(repo, filename)
    local = ExpertConfig(**{**expert, "pretrained": str(tmp_path)})   # a path: not the hub
    assert expert_source(local) is None
