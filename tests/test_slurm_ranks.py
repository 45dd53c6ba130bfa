"""A Slurm job's ranks: torchrun's variables derived from Slurm's (a compressed nodelist
included, a job over several nodes one world), stale variables from the submitting shell
replaced instead of refused, LOCAL_RANK mapped onto the GPUs a task sees, a profile's
`nodes` carried to sbatch, `ablate plan` and the batch split, the srun line giving each task
its CPUs, and a 2-task job on the one-node cluster forming one world."""
import datetime
import os
import re
from pathlib import Path

import pytest

from harness.cli import main
from harness.config.profiles import load_profile
from harness.scheduler.job import export_ranks
from harness.scheduler.ranks import RankEnvironmentError, expand_nodelist, slurm_ranks
from harness.training.distributed import local_gpu

ROOT = Path(__file__).resolve().parent.parent
NODELISTS = ["gpu[01-02]", "gpu[01-02],cpu7", "a[1,3-4]b[7-8]", "x[08-11]", "node1",
             "n[9-10],m[098-101]"]

# rank 9 of a 2-node job of 8 tasks per node, as srun sets it
TASK = {"SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "gpu[01-02]",
        "SLURM_NNODES": "2", "SLURM_NTASKS": "16", "SLURM_PROCID": "9", "SLURM_LOCALID": "1",
        "SLURM_NODEID": "1", "SLURM_JOB_NUM_NODES": "2"}


def test_nodelists_expand_as_slurm_does():
    assert expand_nodelist("gpu[01-02]") == ["gpu01", "gpu02"]
    assert expand_nodelist("gpu[01-02],cpu7") == ["gpu01", "gpu02", "cpu7"]
    assert expand_nodelist("a[1,3-4]b[7-8]") == ["a1b7", "a1b8", "a3b7", "a3b8", "a4b7",
                                                 "a4b8"]
    assert expand_nodelist("m[098-101]") == ["m098", "m099", "m100", "m101"]
    for bad in ("gpu[01-", "gpu]1[", "gpu[a-b]"):
        with pytest.raises(RankEnvironmentError, match=re.escape(f"nodelist '{bad}'")):
            expand_nodelist(bad)


def test_a_two_node_task_is_a_rank_of_the_whole_job():
    ranks = slurm_ranks(TASK)
    assert (ranks.rank, ranks.world_size, ranks.local_rank, ranks.local_world_size,
            ranks.master_addr) == (9, 16, 1, 8, "gpu01")
    assert ranks.master_port == slurm_ranks({**TASK, "SLURM_PROCID": "0"}).master_port
    # the step's nodes where srun gives them
    assert slurm_ranks({**TASK, "SLURM_STEP_NODELIST": "gpu[02-03]"}).master_addr == "gpu02"
    with pytest.raises(RankEnvironmentError, match=r"SLURM_PROCID=None"):
        slurm_ranks({k: v for k, v in TASK.items() if k != "SLURM_PROCID"})


def test_stale_rendezvous_variables_are_replaced(monkeypatch):
    # submitit's TorchDistributedEnvironment.export() raised here: MASTER_ADDR and RANK set
    for key, value in {**TASK, "MASTER_ADDR": "elsewhere", "RANK": "5"}.items():
        monkeypatch.setenv(key, value)
    for key in ("WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT", "LOCAL_WORLD_SIZE"):
        # set, then removed: monkeypatch then restores what export_ranks writes here (a
        # WORLD_SIZE left behind made later tests' runs wait for 16 ranks)
        monkeypatch.setenv(key, "stale")
        monkeypatch.delenv(key)
    export_ranks()
    assert {k: os.environ[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")} == {
        "RANK": "9", "WORLD_SIZE": "16", "LOCAL_RANK": "1", "MASTER_ADDR": "gpu01"}


def test_local_rank_maps_onto_the_gpus_a_task_sees():
    assert local_gpu(5, 8) == 5      # every GPU of the node visible to each task
    assert local_gpu(5, 1) == 0      # the cluster bound one GPU to this task
    with pytest.raises(RuntimeError, match="LOCAL_RANK=2 was told to use a GPU and sees none"):
        local_gpu(2, 0)


def _two_node_profile(tmp_path):
    profile = tmp_path / "two-nodes.yaml"
    profile.write_text((ROOT / "slurm" / "paper-8xa100.yaml").read_text() + "nodes: 2\n")
    return profile


def test_a_profiles_nodes_reach_sbatch_srun_and_the_plan(tmp_path, capsys):
    profile = load_profile(_two_node_profile(tmp_path), check_cluster=False)
    assert profile.world_size == 16
    params = profile.executor_parameters()
    assert params["slurm_nodes"] == 2 and params["slurm_tasks_per_node"] == 8
    assert params["slurm_srun_args"] == ["--cpus-per-task=8", "--kill-on-bad-exit=1"]
    spec = ROOT / "experiments" / "dense_connector_table1.yaml"
    assert main(["plan", str(spec), "--workdir", str(tmp_path / "w"), "--profile",
                 str(_two_node_profile(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert "on 16 rank(s)" in out and "--nodes=2 --gpus-per-node=8" in out
    assert "GPU(s) against" in out and " on 16 GPU(s)" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("partition: gpu\nnodes: 0\n")
    with pytest.raises(Exception, match=r"bad.yaml:2: nodes: .*1"):
        load_profile(bad, check_cluster=False)


def _rank_report():
    """Runs in each task of the job: the derived variables, and a collective over them."""
    import torch
    import torch.distributed as dist
    export_ranks()
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
    total = torch.tensor([float(dist.get_rank() + 1)])
    dist.all_reduce(total)
    dist.destroy_process_group()
    return {**{k: os.environ[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")},
            "sum": total.item()}


@pytest.mark.slurm
def test_scontrol_expands_nodelists_as_we_do(slurm_cluster):
    import subprocess
    for text in NODELISTS:
        hosts = subprocess.run(["scontrol", "show", "hostnames", text], capture_output=True,
                               text=True, check=True).stdout.split()
        assert expand_nodelist(text) == hosts, text


@pytest.mark.slurm
def test_a_two_task_job_is_one_world_despite_a_stale_master(slurm_cluster, tmp_path,
                                                            monkeypatch):
    import submitit
    monkeypatch.setenv("MASTER_ADDR", "stale.invalid")   # sbatch passes the shell's on
    monkeypatch.setenv("RANK", "7")
    profile = tmp_path / "two.yaml"
    profile.write_text(Path(slurm_cluster).read_text() + "tasks_per_node: 2\n")
    executor = submitit.AutoExecutor(folder=tmp_path / "jobs", cluster="slurm")
    executor.update_parameters(name="ranks", **load_profile(profile).executor_parameters())
    job = executor.submit(_rank_report)
    results = job.results()
    host = os.uname().nodename.split(".")[0]
    assert sorted(r["RANK"] for r in results) == ["0", "1"]
    assert all(r["WORLD_SIZE"] == "2" and r["MASTER_ADDR"] == host and r["sum"] == 3.0
               for r in results), results
    srun = next(line for line in job.paths.submission_file.read_text().splitlines()
                if line.startswith("srun"))
    assert "--cpus-per-task=1 --kill-on-bad-exit=1" in srun


def test_a_local_jobs_tasks_meet_on_this_machine():
    from harness.scheduler.ranks import job_ranks
    task = {"SUBMITIT_EXECUTOR": "local", "SUBMITIT_LOCAL_NTASKS": "2",
            "SUBMITIT_LOCAL_GLOBALID": "1", "SUBMITIT_LOCAL_LOCALID": "1",
            "SUBMITIT_LOCAL_JOB_ID": "31337"}
    ranks = job_ranks(task)
    assert (ranks.rank, ranks.world_size, ranks.local_rank, ranks.master_addr) == (
        1, 2, 1, "127.0.0.1")
    assert job_ranks({}) is None   # not a submitit job: nothing exported
