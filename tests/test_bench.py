"""The benchmark command: a small smoke run writes every key and times every stage; bad input is refused.

Each case of the command runs in a subprocess: the command registers its own config section, which
should not leak into the other tests' configs. The model stages' workload is tested in this process. No
assertion is about speed.
"""

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import speedrun.system.device
from speedrun.engine.step import Step
from speedrun.optim.optimizers import step_tensors

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks" / "bench.py"


def bench_stages():
    """bench.py's STAGES, read from its source: importing it would register its config section here."""
    [stages] = [
        node.value
        for node in ast.parse(BENCH.read_text()).body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "STAGES"
    ]
    return list(ast.literal_eval(stages))


STAGES = bench_stages()
REQUIRED_KEYS = [
    "device",
    "torch",
    "triton",
    "measured_peak_tflops",
    "measured_copy_gbps",
    "stages",
    "train_step_peak_fraction",
    "augment_bandwidth_fraction",
    "train_24_epochs_s",
    "compile_s",
    "test_accuracy",
    "command",
    "size",
    "timestamp",
]
PINNED = ["--training.precision", "fp32"]  # the same precision (and so compile choice) on every CPU


def run(*args, code=None):
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-c", code] if code else [sys.executable, str(BENCH), *args, *PINNED]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


def test_small_run_writes_every_key_and_times_every_stage(tiny_betons, tmp_path):
    out = tmp_path / "results"
    done = run("--size", "small", "--out", str(out), "--train-beton", tiny_betons[0], "--val-beton", tiny_betons[1])
    assert done.returncode == 0, done.stderr[-3000:]
    [path] = out.glob("*.json")
    report = json.loads(path.read_text())
    assert path.name == re.sub(r"[^a-z0-9]+", "-", report["device"].lower()).strip("-") + ".json"
    assert path.name.startswith("cpu-")
    assert not [key for key in REQUIRED_KEYS if key not in report]
    assert sorted(report["stages"]) == sorted(STAGES)
    assert all(record["median_s"] > 0 for record in report["stages"].values()), report["stages"]
    assert report["size"] == "small" and report["command"][1:3] == ["--size", "small"]
    table = done.stdout[done.stdout.index("stage") :]
    rows = [line.split()[0] for line in table.splitlines()[2:] if line and not line.startswith("wrote")]
    assert rows == STAGES

    augment = report["stages"]["augment"]
    assert augment["impls"]["triton"]["matches_reference"] and augment["impls"]["torch"]["gbps"] > 0
    assert augment["large_batch"]["torch"]["batch_size"] == augment["batch_size"] == 256  # the headline's batch
    train_24 = report["stages"]["train_24"]
    assert train_24["epochs"] == 1 and train_24["betons_from"] == "given"
    assert report["train_24_epochs_s"] is None  # a 1-epoch run is no 24-epoch time
    assert 0 <= report["test_accuracy"] <= 1 and report["test_accuracy"] == train_24["test_accuracy"]
    assert report["stages"]["beton_to_device"]["images"] == 256
    assert report["stages"]["write_beton"]["images"] == 256 + 128  # the synthetic source, train + test
    assert report["measured_peak_tflops"] == report["stages"]["ceilings"]["tflops"] > 0


def test_stages_without_betons_are_skipped_and_unknown_stages_refused(tmp_path):
    done = run("--stages", "beton_to_device,ceilings", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    [path] = tmp_path.glob("*.json")
    stages = json.loads(path.read_text())["stages"]
    assert sorted(stages) == ["beton_to_device", "ceilings"]
    assert done.stdout.index("\nceilings ") < done.stdout.index("\nbeton_to_device ")  # pipeline order
    assert stages["beton_to_device"]["median_s"] is None and "--train-beton" in stages["beton_to_device"]["skipped"]
    assert json.loads(path.read_text())["train_step_peak_fraction"] is None  # not measured: null

    refused = run("--stages", "ceilings,warp_drive", "--out", str(tmp_path / "no"))
    assert refused.returncode == 2 and "warp_drive" in refused.stderr and "train_step" in refused.stderr
    assert not (tmp_path / "no").exists()


def test_flop_counter_finds_the_seed_nets_0_759_gflop():
    code = (
        "import sys; sys.path.insert(0, 'benchmarks'); import bench; from speedrun.nets.model import CustomResNet; "
        "from speedrun.summary import forward_flops; "
        "print(forward_flops(CustomResNet(width=64)), bench.slugify('NVIDIA H100 80GB HBM3'))"
    )
    done = run(code=code)
    assert done.returncode == 0, done.stderr[-3000:]
    flops, slug = done.stdout.split()
    assert round(int(flops) / 1e9, 3) == 0.759
    assert slug == "nvidia-h100-80gb-hbm3"


def test_the_benchmark_prints_its_stacks_on_the_signal(tmp_path):
    """The campaign sends it before killing a benchmark that ran past its limit (see test_campaign)."""
    done = run(
        code="import faulthandler, sys; sys.path.insert(0, 'benchmarks'); import bench; "
        "from speedrun.system.stacks import STACKS_SIGNAL; "
        f"bench.main(['--stages', 'ceilings', '--size', 'small', '--out', {str(tmp_path)!r}, *{PINNED!r}]); "
        "print('registered', faulthandler.unregister(STACKS_SIGNAL))"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[-1] == "registered True"


# ----------------------------------------------------------------------------------------------
# The model stages' workload, in this process: only bench.py registers a config section, and these
# import bench_common alone.


def bench_workload(monkeypatch, tmp_path, training, policy=None):
    """(bench_common, a Workload of a small Bench on the CPU in float32 with `training` options, under
    `policy` or else the Bench's own, the Steps that build_step made for it)."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import bench_common

    built, real = [], bench_common.build_step
    monkeypatch.setattr(bench_common, "build_step", lambda *args: built.append(real(*args)) or built[-1])
    given = {"training": {"precision": "fp32", "device": "cpu", **training}}
    bench = bench_common.Bench(given, "small", torch.device("cpu"), tmp_path)
    return bench_common, bench_common.Workload(bench, policy or bench.policy), built


def test_the_workload_times_the_step_build_step_made(monkeypatch, tmp_path):
    """Its step is the trainer's Step, built once by build_step with the model, optimizer and weight average
    it is timed with, over a constant LR table of the trainer's shape: a column a param group (the biases'
    at 64x here), a row a call."""
    common, w, built = bench_workload(monkeypatch, tmp_path, {"bias_lr_scale": 64.0})
    assert built == [w.step] and isinstance(w.step, Step)
    assert w.model is w.step.model and w.optimizer is w.step.optimizer
    assert w.step.batch_buffer is w.batcher.out and w.step.average.average is not None  # ema 0.99 by default
    scales = torch.tensor([group["lr_scale"] for group in w.optimizer.param_groups])
    assert w.step.schedule.table.shape == (common.BENCH_STEPS, 2)
    assert torch.allclose(w.step.schedule.table, (common.BENCH_LR * scales).expand(common.BENCH_STEPS, 2))
    w.loop_step()
    assert w.step.schedule.position.item() == 1  # the Step's own train_step ran, and read the table's first row
    lrs = [group["lr"].item() for group in w.optimizer.param_groups]
    assert lrs == pytest.approx((common.BENCH_LR * scales).tolist())


def test_a_whole_step_workload_is_pinned_before_its_first_call(monkeypatch, tmp_path):
    """As in a run, the tensors a whole-step graph updates in place (the optimizer's state and LRs, the
    weight average's and lookahead's, the batch buffer) are static addresses before the step is first
    called: under CUDA graphs, a step that mutates an unmarked input runs without its graph."""
    monkeypatch.setattr(speedrun.system.device, "COMPILE_BACKEND", "aot_eager")  # compiles in seconds
    torch._dynamo.reset()
    policy = speedrun.system.device.device_policy(torch.device("cpu"), "fp32", "on", compile_mode="whole-step")
    _, w, _ = bench_workload(monkeypatch, tmp_path, {"lookahead": 5}, policy)
    pinned = [w.batcher.out, *step_tensors(w.optimizer), *w.step.average.tensors(), *w.step.lookahead.tensors()]
    assert w.step.average.tensors() and w.step.lookahead.tensors() and w.inputs is w.batcher.out
    assert all(hasattr(tensor, "_dynamo_static_input_type") for tensor in pinned)
    loss, _ = w.loop_step()
    assert torch.isfinite(loss)
