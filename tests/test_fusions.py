"""Every fusion strategy: the papers' shape numbers at full size (meta device), numerical
agreement with the plain loop-based references in tests/reference_fusions.py, the routers,
and clear errors for options the experts cannot serve."""
import json

import pytest
import torch

import tests.reference_fusions as ref
from core.fields import grid_sides
from models.builder import build_architecture
from models.experts import ExpertConfig, ExpertOutput
from models.fusion import FUSIONS, BuildContext, FeatureSpec, TextContext
from models.fusion.concat import ChannelConcatOptions, SequenceAppendOptions
from models.fusion.dense_connector import DenseConnector, DenseConnectorOptions
from models.fusion.mini_gemini import DeformableMiningOptions, PatchInfoMiningOptions
from models.fusion.mova import MoVAOptions
from models.fusion.mova.routers import ROUTERS, RoutingInputs
from models.fusion.mr_adapter import MRAdapterOptions
from models.model_config import FusionSpec, ModelConfig

ATOL = 1e-4


def test_registry_has_every_strategy():
    assert set(FUSIONS.names()) >= {"sequence_append", "channel_concat", "mr_adapter",
                                    "patch_info_mining", "deformable_mining",
                                    "dense_connector", "mova"}


# --- the registry's contract: every fusion's declared shape is the real one --------------------
TINY_VIT = ExpertConfig("clip-vit", resolution=32, layers=[-1])
TINY_CONVNEXT = ExpertConfig("convnext", resolution=64, layers=[2])
TINY_SAM = ExpertConfig("sam", resolution=32, layers=[-1])
# one tiny case per registered fusion (experts, options); a fusion registered without one
# fails the contract test by its name
CONTRACT_CASES = {
    "sequence_append": ([TINY_VIT, TINY_CONVNEXT], {}),
    "channel_concat": ([TINY_VIT, TINY_CONVNEXT], {"grid": 4}),
    "mr_adapter": ([TINY_VIT, TINY_CONVNEXT], {}),
    "patch_info_mining": ([TINY_VIT, TINY_CONVNEXT], {}),
    "deformable_mining": ([TINY_VIT, TINY_CONVNEXT], {"heads": 2}),
    "dense_connector": ([TINY_VIT], {"mode": "dci", "groups": 2, "downsample": 2}),
    "mova": ([TINY_VIT, TINY_CONVNEXT, TINY_SAM], {"depth": 1, "router": "topk", "k": 1}),
}
TEXT_WIDTH = 16


@pytest.mark.parametrize("fusion_id", FUSIONS.names())
def test_declared_tokens_and_channels_are_what_the_fusion_produces(fusion_id):
    assert fusion_id in CONTRACT_CASES, (f"fusion '{fusion_id}' has no tiny case in "
                                         "tests/test_fusions.py:CONTRACT_CASES")
    experts_cfg, options = CONTRACT_CASES[fusion_id]
    torch.manual_seed(0)
    typed = FUSIONS.get(fusion_id).Options(**options)
    experts, fusion = build_architecture(ModelConfig(experts_cfg, FusionSpec(fusion_id, typed)),
                                         text_width=TEXT_WIDTH)
    # the pass the spec's check asks for (from the options) is the one the run asks
    assert fusion.before_answer == type(fusion).pass_of(typed)
    assert all(hasattr(typed, f"{option}_sha256") for option in fusion.file_options)
    pixels = {name: torch.randn(2, 3, *e.input_size) for name, e in experts.items()}
    text = TextContext(torch.randn(2, 5, TEXT_WIDTH), torch.ones(2, 5, dtype=torch.long),
                       ["s0", "s1"])
    with torch.no_grad():
        tokens = fusion.encode(experts, pixels, text)
        projected = fusion.after_projector(torch.randn(2, fusion.num_tokens, TEXT_WIDTH))
    assert tuple(tokens.shape) == (2, fusion.num_tokens, fusion.channels)
    assert tuple(projected.shape) == (2, fusion.output_tokens, TEXT_WIDTH)


def test_grid_options_are_marked_for_the_rehearsal():
    """The rehearsal shrinks the option fields marked grid_side with the experts' grids
    (harness.rehearsal.geometry); unset ones (None) are left alone."""
    assert grid_sides(ChannelConcatOptions(grid=32)) == {"grid": 32}
    assert grid_sides(SequenceAppendOptions(grid=24)) == {"grid": 24}
    assert grid_sides(MoVAOptions(expert_grid=16)) == {"expert_grid": 16}
    assert grid_sides(DenseConnectorOptions(downsample=12)) == {"downsample": 12}
    assert grid_sides(ChannelConcatOptions()) == {} == grid_sides(None)


# --- full-size shapes --------------------------------------------------------------------------
def _meta(experts, fusion_id, options):
    return build_architecture(ModelConfig(experts, FusionSpec(fusion_id, options)), meta=True)


CLIP_L = ExpertConfig("clip-vit", preset="large-336")
SIGLIP = ExpertConfig("siglip", preset="so400m-384")


@pytest.mark.parametrize("expert,options,tokens,channels", [
    (CLIP_L, DenseConnectorOptions("sti", [8, 16]), 720, 1024),
    (CLIP_L, DenseConnectorOptions("sci", [8, 16]), 576, 3072),
    (CLIP_L, DenseConnectorOptions("dci", groups=2), 576, 3072),
    (SIGLIP, DenseConnectorOptions("sti", [8, 16]), 911, 1152),
])
def test_dense_connector_paper_shapes(expert, options, tokens, channels):
    experts, fusion = _meta([expert], "dense_connector", options)
    assert (fusion.num_tokens, fusion.channels) == (tokens, channels)
    # paper layer k is hidden state k-1; the final layer is the penultimate state
    served = experts[expert.key].layers
    if options.mode == "dci":
        assert served == list(range(24))           # groups 0-11 and 12-23
    else:
        assert served == [7, 15, experts[expert.key].depth - 1]


def test_efficient_dense_connector_downsamples_projected_tokens_576_to_144():
    _, fusion = _meta([CLIP_L], "dense_connector", DenseConnectorOptions("sci", downsample=12))
    assert (fusion.num_tokens, fusion.output_tokens) == (576, 144)
    projected = torch.randn(1, 576, 4096, device="meta")
    assert fusion.after_projector(projected).shape == (1, 144, 4096)


def test_mini_gemini_576_queries_over_192x192_map_see_64_keys_each():
    specs = [FeatureSpec("clip", 23, 1024, (24, 24)), FeatureSpec("convnext", 4, 1536, (192, 192))]
    with torch.device("meta"):
        fusion = FUSIONS.get("patch_info_mining")(specs, PatchInfoMiningOptions())
        out = fusion({"clip": ExpertOutput({23: torch.empty(1, 1024, 24, 24)}),
                      "convnext": ExpertOutput({4: torch.empty(1, 1536, 192, 192)})})
    assert fusion.keys_per_query == 64 and out.shape == (1, 576, 1024)


def test_llava_hr_injects_after_blocks_6_12_18_of_24():
    """LLaVA-HR-1024 (scripts and wrapper): CLIP-L/14 at 448 (1024/32*14) over all 24 blocks,
    ConvNeXt-L at 1024, whose stage 4 (32x32, 1536 channels) every injection reads."""
    experts = [ExpertConfig("clip-vit", preset="large-336", resolution=448, layers=[-1]),
               ExpertConfig("convnext", preset="large", resolution=1024)]
    built, fusion = _meta(experts, "mr_adapter", MRAdapterOptions())
    assert fusion.blocks == [6, 12, 18] and fusion.final_layer == 24
    assert (fusion.num_tokens, fusion.channels) == (1024, 1024)
    assert built["convnext"].layers == [4]
    assert [s.layer for s in fusion.injected] == [4, 4, 4]
    adapter = fusion.adapters[0]
    assert adapter.slow_conv.weight.shape == (1536, 1536, 1, 1)
    assert adapter.slow_proj.weight.shape == (1024, 1536, 1, 1)
    assert adapter.fast_conv.weight.shape == (1024, 1, 7, 7)
    assert adapter.gate[0].weight.shape == (512, 2048)                 # wrapper:57
    built, fusion = _meta(experts, "mr_adapter", MRAdapterOptions(injected="stages"))
    assert built["convnext"].layers == [1, 2, 3, 4]
    assert [s.grid for s in fusion.injected] == [(256, 256), (128, 128), (64, 64)]


# --- numerical agreement with the loop references ----------------------------------------------
def _randomize(module, std=0.3):
    torch.manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * std)


DEPTH = 6   # a synthetic ViT with hidden states 0..6 on a 4x4 grid, width 4


@pytest.mark.parametrize("mode", ["sti", "sci", "dci"])
@pytest.mark.parametrize("learned", [False, True])
def test_dense_connector_matches_reference(mode, learned):
    options = DenseConnectorOptions(mode, layers=[2, 4], groups=3, alpha=4, learned=learned)
    final, groups = DenseConnector.plan(options, DEPTH)
    layers = sorted({final, *(i for g in groups for i in g)})
    specs = [FeatureSpec("vit", i, 4, (4, 4)) for i in layers]
    fusion = FUSIONS.get("dense_connector")(specs, options, BuildContext(depths={"vit": DEPTH}))
    _randomize(fusion)
    torch.manual_seed(0)
    hidden = {i: torch.randn(2, 4, 4, 4) for i in layers}
    with torch.no_grad():
        got = fusion({"vit": ExpertOutput(hidden)})
        want = ref.dense_connector(fusion, hidden, 2, DEPTH)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)


def test_efficient_dense_connector_matches_reference():
    options = DenseConnectorOptions("sci", layers=[2], downsample=2)
    specs = [FeatureSpec("vit", i, 4, (4, 4)) for i in (1, 5)]
    fusion = FUSIONS.get("dense_connector")(specs, options, BuildContext(depths={"vit": DEPTH}))
    projected = torch.randn(2, 16, 3)
    torch.testing.assert_close(fusion.after_projector(projected),
                               ref.efficient_downsample(projected, 2), atol=ATOL, rtol=0)


MINING_SPECS = [FeatureSpec("lr", 3, 6, (3, 3)), FeatureSpec("hr", 2, 4, (6, 6)),
                FeatureSpec("hr", 3, 5, (3, 3))]


def _mining_inputs():
    torch.manual_seed(0)
    maps = {f"{s.expert}:{s.layer}": torch.randn(2, s.channels, *s.grid) for s in MINING_SPECS}
    outputs = {"lr": ExpertOutput({3: maps["lr:3"]}),
               "hr": ExpertOutput({2: maps["hr:2"], 3: maps["hr:3"]})}
    return maps, outputs


def test_patch_info_mining_matches_reference():
    fusion = FUSIONS.get("patch_info_mining")(MINING_SPECS, PatchInfoMiningOptions(width=5))
    _randomize(fusion)
    maps, outputs = _mining_inputs()
    assert fusion.window == (2, 2)
    with torch.no_grad():
        torch.testing.assert_close(fusion(outputs), ref.patch_info_mining(fusion, maps, 2),
                                   atol=ATOL, rtol=0)


def test_deformable_mining_matches_reference():
    fusion = FUSIONS.get("deformable_mining")(MINING_SPECS,
                                              DeformableMiningOptions(points=3, heads=2))
    _randomize(fusion, std=0.5)   # offsets large enough to leave the map (zero padding)
    maps, outputs = _mining_inputs()
    with torch.no_grad():
        torch.testing.assert_close(fusion(outputs), ref.deformable_mining(fusion, maps, 2),
                                   atol=ATOL, rtol=0)


def test_deformable_mining_starts_with_points_spread_over_each_cell():
    fusion = FUSIONS.get("deformable_mining")(MINING_SPECS, DeformableMiningOptions(points=4))
    offsets = fusion.initial_offsets()
    assert offsets.shape == (1, 4, 2)
    assert len({tuple(p) for p in offsets[0].round(decimals=4).tolist()}) == 4
    assert offsets.norm(dim=-1).max() <= 1.0 + 1e-6    # half of a 2x2 cell


def test_mr_adapter_starts_as_the_plain_vit_without_its_class_token():
    """Zero-initialised projections: the adapters add nothing, so the tokens are the merge of
    the ViT run without its class token (LLaVA-HR drops it before the blocks) and stage 4."""
    torch.manual_seed(0)
    experts, fusion = build_architecture(ModelConfig(
        [ExpertConfig("clip-vit"), ExpertConfig("convnext", resolution=256)],
        FusionSpec("mr_adapter", MRAdapterOptions())))
    vit = experts["clip-vit"]
    pixels = {n: torch.randn(1, 3, *e.input_size) for n, e in experts.items()}
    with torch.no_grad():
        tokens = vit.embed(pixels["clip-vit"])[:, 1:]
        for k in range(1, fusion.final_layer + 1):
            tokens = vit.block(k, tokens)
        high = experts["convnext"](pixels["convnext"]).maps[4].flatten(2).transpose(1, 2)
        plain = fusion.fast_proj(tokens) + fusion.slow_proj(high)      # both 8x8
        torch.testing.assert_close(fusion.encode(experts, pixels), plain, atol=1e-5, rtol=0)
        with_class = vit(pixels["clip-vit"]).maps[fusion.final_layer].flatten(2).transpose(1, 2)
        assert not torch.allclose(fusion.fast_proj(with_class), fusion.fast_proj(tokens),
                                  atol=1e-3)


MOVA_SPECS = [FeatureSpec("base", 2, 8, (3, 3)), FeatureSpec("a", 1, 4, (6, 6)),
              FeatureSpec("b", 1, 5, (3, 3)), FeatureSpec("b", 2, 3, (2, 2))]


@pytest.mark.parametrize("gating,router", [("learned", "all"), ("learned", "topk"),
                                           ("uniform", "random"), ("learned", "oracle")])
def test_mova_matches_reference(gating, router, tmp_path):
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"s0": ["b"], "s1": []}))   # s1: no expert helps
    options = MoVAOptions(depth=2, heads=2, gating=gating, router=router, k=1,
                          labels=str(labels))
    fusion = FUSIONS.get("mova")(MOVA_SPECS, options, BuildContext(text_width=6))
    _randomize(fusion, std=0.2)
    torch.manual_seed(0)
    maps = {f"{s.expert}:{s.layer}": torch.randn(2, s.channels, *s.grid) for s in MOVA_SPECS}
    outputs = {"base": ExpertOutput({2: maps["base:2"]}), "a": ExpertOutput({1: maps["a:1"]}),
               "b": ExpertOutput({1: maps["b:1"], 2: maps["b:2"]})}
    text = TextContext(torch.randn(2, 5, 6), torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]),
                       ["s0", "s1"])
    with torch.no_grad():
        got = fusion(outputs, text)
        want = ref.mova(fusion, maps, text.embeddings, text.mask, fusion.last_routing)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
    if router == "oracle":
        assert fusion.last_routing.tolist() == [[0.0, 1.0], [0.0, 0.0]]


# --- routers -----------------------------------------------------------------------------------
PROBS = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.35, 0.45], [0.34, 0.33, 0.33]])


def _route(name, **args):
    return ROUTERS.get(name)(**args)(RoutingInputs(PROBS, ["x", "y", "z"], ["p", "q", "r"]))


def test_routers():
    assert _route("all").tolist() == [[1, 1, 1]] * 3
    assert _route("topk", k=1).tolist() == [[1, 0, 0], [0, 0, 1], [1, 0, 0]]
    assert _route("topk", k=2).sum(1).tolist() == [2, 2, 2]
    # dynamic: above 1/3, at least one, at most k
    assert _route("dynamic", k=3).tolist() == [[1, 0, 0], [0, 1, 1], [1, 0, 0]]
    assert _route("dynamic", k=1).tolist() == [[1, 0, 0], [0, 0, 1], [1, 0, 0]]
    torch.manual_seed(0)
    picks = _route("random", k=2)
    assert picks.sum(1).tolist() == [2, 2, 2]
    oracle = _route("oracle", labels={"x": ["r"], "y": [], "z": ["p", "q"]})
    assert oracle.tolist() == [[0, 0, 1], [0, 0, 0], [1, 1, 0]]
    partial = {"x": [], "y": ["q"]}
    assert _route("oracle", labels=partial).tolist() == [[0, 0, 0], [0, 1, 0], [1, 1, 1]]
    assert _route("oracle", labels=partial, unlabeled="none")[2].tolist() == [0, 0, 0]
    with pytest.raises(KeyError, match="no entry for sample 'z'"):
        _route("oracle", labels=partial, source="l.json", unlabeled="error")


# --- bad options: named file, line and field before anything runs -----------------------------
BASE = "experiments/tiny/two_experts.yaml"
ONE_VIT = "    - {id: clip-vit, preset: tiny, resolution: 64, layers: [-1], freeze: false}\n"
CONVNEXT = "    - {id: convnext, preset: tiny, resolution: 64, layers: [3], freeze: false}\n"


@pytest.mark.parametrize("experts,fusion,field,message", [
    (ONE_VIT, "{id: dense_connector, mode: sti, layers: [2, 9]}", "model.fusion.layers",
     "layer 9 is not below the final layer 4; allowed: 1..3"),
    (ONE_VIT, "{id: dense_connector, mode: dci, groups: 3}", "model.fusion.groups",
     "3 DCI groups do not divide the 4 layers 1..4; allowed: 1, 2, 4"),
    (ONE_VIT + CONVNEXT.replace("resolution: 64", "resolution: 96").replace("[3]", "[2]"),
     "{id: patch_info_mining}", "model.fusion",
     "the 8x8 query grid does not tile the 12x12 high-resolution map"),
    (ONE_VIT, "{id: mova}", "model.fusion", "mova routes between experts besides the base"),
    (ONE_VIT + CONVNEXT, "{id: mova, router: oracle}", "model.fusion.labels",
     "router 'oracle' needs `labels`"),
    (ONE_VIT + CONVNEXT, "{id: mova, heads: 5}", "model.fusion.heads",
     "5 heads do not divide the base width 64"),
    (CONVNEXT + CONVNEXT.replace("convnext,", "convnext, name: hr,"), "{id: mr_adapter}",
     "model.fusion.vit", "mr_adapter needs a ViT that runs block by block"),
    (ONE_VIT + CONVNEXT, "{id: mr_adapter, injected: paper}", "model.fusion.injected",
     "'last_stage', 'stages'"),
    (ONE_VIT + CONVNEXT.replace("resolution: 64", "resolution: 96"), "{id: mr_adapter}",
     "model.fusion", "the 3x3 map of 'convnext' and the ViT's 8x8 grid must divide one another"),
])
def test_bad_fusion_options_are_named_with_their_line(tmp_path, experts, fusion, field, message):
    from pathlib import Path

    from core.errors import ConfigError
    from harness.cli import main
    from harness.specs.run_file import load_run_config
    text = Path(BASE).read_text()
    start = text.index("  experts:\n") + len("  experts:\n")
    end = text.index("  fusion:")
    text = text[:start] + experts + f"  fusion: {fusion}\n" + text[text.index("  projector"):]
    assert end > start
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_run_config(path)
    assert err.value.field == field, str(err.value)
    assert message in str(err.value)
    assert err.value.file == str(path) and err.value.line is not None
    work = tmp_path / "work"
    assert main(["train", str(path), "--workdir", str(work)]) == 2
    assert not (work / "runs").exists()


# --- every strategy trains, and records its cost -----------------------------------------------
VIT = "{id: clip-vit, preset: tiny, resolution: 32, layers: [-1], freeze: false}"
HIGH_RES = "{id: convnext, preset: tiny, resolution: 64, layers: [2]}"
SAM = "{id: sam, preset: tiny, resolution: 32, layers: [-1]}"
TRAINING_CASES = {
    "sequence_append": ([VIT, HIGH_RES], "{id: sequence_append}"),
    "channel_concat": ([VIT, HIGH_RES], "{id: channel_concat, grid: 4}"),
    "mr_adapter": ([VIT, HIGH_RES], "{id: mr_adapter}"),
    "patch_info_mining": ([VIT, HIGH_RES], "{id: patch_info_mining}"),
    "deformable_mining": ([VIT, HIGH_RES], "{id: deformable_mining, heads: 2}"),
    "dc_sti": ([VIT], "{id: dense_connector, mode: sti, layers: [2, 3], alpha: 4}"),
    "dc_sci_learned": ([VIT], "{id: dense_connector, mode: sci, layers: [2], learned: true}"),
    "dc_dci_efficient": ([VIT], "{id: dense_connector, mode: dci, groups: 2, downsample: 2}"),
    "mova_topk": ([VIT, HIGH_RES, SAM], "{id: mova, depth: 1, router: topk, k: 1}"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(TRAINING_CASES))
def test_every_strategy_trains_with_decreasing_loss_and_records_its_cost(case, tmp_path):
    from harness.runs.pipeline import run
    from harness.specs.run_file import load_run_config
    from tests.tiny import tiny_run_yaml
    experts, fusion = TRAINING_CASES[case]
    path = tmp_path / "run.yaml"
    path.write_text(tiny_run_yaml(case, sft_steps=40, sft_batch=8, experts=experts,
                                  fusion=fusion))
    cfg = load_run_config(path)
    result = run(cfg, tmp_path / "work", progress=False)
    log = [json.loads(line) for line in
           next((tmp_path / "work" / "stages").glob("sft-*/metrics.jsonl")).read_text()
           .splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert len(losses) == 40
    assert sum(losses[-8:]) / 8 < sum(losses[:8]) / 8, losses
    cost = result.cost
    experts_built, fusion_built = build_architecture(cfg.model, meta=True)
    assert cost["visual_tokens"] == fusion_built.output_tokens
    assert cost["fusion_added_parameters"] == fusion_built.added_parameters()
    assert cost["forward_flops_per_sample"] > 0 and cost["train_samples_per_s"]["sft"] > 0
