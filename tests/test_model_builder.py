"""`models` builds a whole multimodal model from its typed config alone (models.model_config,
models.builder), as a library: nothing of the harness is imported on the way, so the networks
can be built, tested or reused without specs, runs or jobs."""
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# tests/tiny.py's model: two tiny expert families, channel-concatenated on a 2x2 grid, and the
# tiny Llama
BUILD_ALONE = """\
import sys
import tempfile
from pathlib import Path

from models.builder import build_architecture, build_model
from models.model_config import FusionSpec, ModelConfig
from models.experts import ExpertConfig
from models.fusion.concat import ChannelConcatOptions
from models.llm import LLMConfig
from models.multimodal import MultimodalLM

cfg = ModelConfig(
    experts=[ExpertConfig("clip-vit", resolution=32),
             ExpertConfig("sam", resolution=32, resample="unshuffle")],
    fusion=FusionSpec("channel_concat", ChannelConcatOptions(grid=2)),
    llm=LLMConfig(hidden_size=32, layers=1, heads=2, intermediate_size=64, vocab_size=300))

experts, fusion = build_architecture(cfg, meta=True)
assert list(experts) == ["clip-vit", "sam"], list(experts)
assert all(p.is_meta for e in experts.values() for p in e.parameters())
assert all(p.is_meta for p in fusion.parameters())
print("TOKENS", fusion.output_tokens)

with tempfile.TemporaryDirectory() as cache:
    model, llm = build_model(cfg, seed=0, cache_dir=Path(cache),
                             corpus=["a red square on a white ground", "how many circles?"])
assert isinstance(model, MultimodalLM) and llm.model.config.hidden_size == 32
assert not any(p.is_meta for p in model.parameters())
print("HARNESS", sorted(m for m in sys.modules if m.split(".")[0] == "harness"))
"""


def test_models_build_a_whole_model_without_the_harness():
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(BUILD_ALONE)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "TOKENS 4" in done.stdout
    assert "HARNESS []" in done.stdout
