"""`ablate plan` estimates each stage's memory per GPU (parameters, gradients, AdamW state,
activations at the micro-batch; FSDP's shards) for the profile's GPUs and refuses a plan that
cannot fit, with the fix."""
from pathlib import Path

from harness.cli import main
from harness.planning.estimate import stage_memory
from harness.specs import load_spec

ROOT = Path(__file__).resolve().parent.parent
DC = ROOT / "experiments" / "dense_connector_table1.yaml"


def test_llava15_fine_tuning_fits_8_gpus_sharded_and_not_1(tmp_path, capsys):
    run = load_spec(DC, check_files=False).runs[0]
    sft = run.config.stages[-1]
    eight, one = stage_memory(run.config, sft, 8), stage_memory(run.config, sft, 1)
    assert eight.strategy == "fsdp" and one.strategy == "single"
    # Vicuna-7B fully fine-tuned: fp32 weights + gradients + two AdamW moments, 16 B/param
    assert 95 < one.params + one.grads + one.optimizer < 115
    assert abs((eight.params + eight.grads + eight.optimizer) * 8
               - (one.params + one.grads + one.optimizer)) < 1.0
    assert eight.total < 0.9 * 80
    assert main(["plan", str(DC), "--workdir", str(tmp_path)]) == 0   # the 8-GPU profile
    assert "GB/GPU" in capsys.readouterr().out
    code = main(["plan", str(DC), "--workdir", str(tmp_path), "--profile",
                 str(ROOT / "slurm" / "example-gpu.yaml")])
    captured = capsys.readouterr()
    assert code == 2
    assert "do not fit on 80-GB GPUs" in captured.err and "fix: more GPUs" in captured.err
    assert "GB/GPU" in captured.out   # the table is still shown
