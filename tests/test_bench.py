"""The benchmark command: a small smoke run writes every key and times every stage; bad input is refused.

Each case runs in a subprocess: the command registers its own config section, which should not leak
into the other tests' configs. No assertion is about speed.
"""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks" / "bench.py"
STAGES = ["ceilings", "write_beton", "beton_to_device", "augment", "forward", "forward_backward",
          "optimizer_step", "train_step", "versus_plain", "step_modes", "host_overhead", "memory", "eval", "epoch", "train_24"]
REQUIRED_KEYS = ["device", "torch", "triton", "measured_peak_tflops", "measured_copy_gbps", "stages",
                 "train_step_peak_fraction", "augment_bandwidth_fraction", "train_24_epochs_s", "compile_s",
                 "test_accuracy", "command", "size", "timestamp"]
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
    table = done.stdout[done.stdout.index("stage"):]
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
    code = ("import sys; sys.path.insert(0, 'benchmarks'); import bench; from speedrun.model import CustomResNet; "
            "from speedrun.summary import forward_flops; "
            "print(forward_flops(CustomResNet(width=64)), bench.slugify('NVIDIA H100 80GB HBM3'))")
    done = run(code=code)
    assert done.returncode == 0, done.stderr[-3000:]
    flops, slug = done.stdout.split()
    assert round(int(flops) / 1e9, 3) == 0.759
    assert slug == "nvidia-h100-80gb-hbm3"


def test_the_benchmark_prints_its_stacks_on_the_signal(tmp_path):
    """The campaign sends it before killing a benchmark that ran past its limit (see test_campaign)."""
    done = run(code="import faulthandler, sys; sys.path.insert(0, 'benchmarks'); import bench; "
                    "from speedrun.stacks import STACKS_SIGNAL; "
                    f"bench.main(['--stages', 'ceilings', '--size', 'small', '--out', {str(tmp_path)!r}, *{PINNED!r}]); "
                    "print('registered', faulthandler.unregister(STACKS_SIGNAL))")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[-1] == "registered True"
