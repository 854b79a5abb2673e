"""The training loop and its CLI on tiny betons: files written, loss falls, bad input, resume, faults."""

import json
import math
import os
import shutil
import subprocess
import sys
import time

import pytest
import torch

from speedrun import cli
from speedrun import train as train_module
from speedrun.cli import ALIASES
from speedrun.data.loader import continue_stream
from speedrun.engine import step as step_module
from speedrun.optim.lr_finder import MIN_SWEEP_STEPS, LRTestDiverged
from speedrun.runs import run_state
from speedrun.runs.config import merge, parse_args
from speedrun.system import checkpoint, runlog
from speedrun.system.clock import PARTS
from speedrun.system.device import device_policy
from speedrun.train import TrainingDiverged, train

RUN_FILES = [
    "config.yaml",
    "metrics.jsonl",
    "summary.json",
    "checkpoint.pt",
    "curves.png",
    "lr_test.png",
    "lr_test.json",
    "lr_schedule.png",
    "augmented.png",
]


def tiny_config(betons, folder, **training):
    return {
        "data": {"train_dataset": betons[0], "val_dataset": betons[1]},
        "model": {"width": 8},
        "training": {"epochs": 2, "batch_size": 64, "device": "cpu", "precision": "fp32", **training},
        "lr": {"lr_max": 0.02},
        "logging": {"folder": str(folder), "progress": False, "plots": False},
    }


def run_cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "speedrun.train", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
        timeout=600,
    )


def read_metrics(folder):
    with open(os.path.join(folder, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def without_times(records):
    return [{k: v for k, v in r.items() if "seconds" not in k} for r in records]


def test_cli_end_to_end_writes_every_file_and_loss_falls(tiny_betons, tmp_path):
    folder = tmp_path / "run"
    started = time.perf_counter()
    result = run_cli(
        "--epochs",
        "2",
        "--data.train_dataset",
        tiny_betons[0],
        "--data.val_dataset",
        tiny_betons[1],
        "--logging.folder",
        str(folder),
        "--model.width",
        "8",
        "--training.batch_size",
        "64",
        "--training.precision",
        "fp32",
    )
    wall = time.perf_counter() - started
    assert result.returncode == 0, result.stderr
    for name in RUN_FILES:
        assert (folder / name).stat().st_size > 0, name
    metrics = read_metrics(folder)
    assert [m["epoch"] for m in metrics] == [1.0, 2.0]
    assert metrics[1]["train_loss"] < metrics[0]["train_loss"]
    for key in ("epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "epoch_seconds"):
        assert key in metrics[0]
    summary = json.loads((folder / "summary.json").read_text())
    for key in ("final_test_acc", "best_test_acc", "train_seconds", "compile_seconds", "device", "versions", "seed"):
        assert key in summary
    lr_test = json.loads((folder / "lr_test.json").read_text())
    assert summary["lr_max"] == lr_test["suggested_lr"]
    assert lr_test["steps"] == MIN_SWEEP_STEPS or lr_test["stopped_early"]  # ceil(256 / 64) = 4, stretched
    assert "Test set: Average loss: " in result.stdout + result.stderr
    assert "Batch_id=" in result.stderr and "/128 (" in result.stdout + result.stderr
    assert "speedrun: training on cpu" in result.stderr and "channels-last" in result.stderr  # the policy
    assert "for the 8 steps of 2 epochs" in result.stderr  # a CPU run's estimate of its length
    assert f"suggests lr_max = {summary['lr_max']:.3g}" in result.stderr
    # every second of the command accounted for: the parts add up to the total, which is the process's
    # wall time (from its start, interpreter and imports included, to its summary) within 5%
    seconds = summary["seconds"]
    assert sorted(seconds) == sorted([*PARTS, "total"])
    assert sum(seconds[part] for part in PARTS) == pytest.approx(seconds["total"], abs=0.01)
    assert seconds["total"] == pytest.approx(wall, rel=0.05)
    assert seconds["training"] == pytest.approx(summary["train_seconds"], abs=0.01)
    assert min(seconds[part] for part in ("build", "startup", "range_test", "training", "evaluation", "plots")) > 0
    assert seconds["build"] > seconds["startup"]  # the interpreter, imports and data: the run's own start-up is less
    assert (
        f"speedrun: seconds: total {seconds['total']:.1f} = build {seconds['build']:.1f} + "
        f"startup {seconds['startup']:.1f}"
    ) in result.stderr


def test_epochs_alias_and_config_file(tmp_path):
    config_file = tmp_path / "c.yaml"
    config_file.write_text("training:\n  batch_size: 256\n")
    given = parse_args(["--epochs", "24", "--config-file", str(config_file)], aliases=ALIASES, explicit_only=True)
    assert given == {"training": {"epochs": 24, "batch_size": 256}}
    assert parse_args(["--epochs=3"], aliases=ALIASES)["training"]["epochs"] == 3


@pytest.mark.parametrize(
    "args, message",
    [
        (["--no-such-option", "1"], "unrecognized arguments"),
        (["--training.batch_size", "0"], "--training.batch_size"),
        (["--training.optimizer", "lbfgs"], "--training.optimizer"),
        (["--logging.plots", "maybe"], "--logging.plots"),
    ],
)
def test_bad_options_exit_2_with_a_clear_message(args, message):
    result = run_cli(*args)
    assert result.returncode == 2
    assert message in result.stderr


def test_missing_betons_name_the_command_that_writes_them(tmp_path):
    result = run_cli(
        "--data.train_dataset",
        str(tmp_path / "none.beton"),
        "--training.device",
        "cpu",
        "--logging.folder",
        str(tmp_path / "run"),
    )
    assert result.returncode == 1
    assert "write_beton.py" in result.stderr and "none.beton" in result.stderr


def test_lr_test_diverging_at_the_first_step(tiny_betons, tmp_path):
    config = tiny_config(tiny_betons, tmp_path)
    config["lr"]["lr_max"] = 0.0
    config["lr_test"] = {"lr_start": 1e12, "lr_end": 1e13}
    with pytest.raises(LRTestDiverged):
        train(config)


def test_nan_loss_stops_with_epoch_step_and_lr_and_keeps_the_checkpoint(tiny_betons, tmp_path, monkeypatch):
    real = step_module.make_train_step
    calls = {"n": 0}

    def poisoned(*args):
        step = real(*args)

        def wrapped(inputs, targets):
            calls["n"] += 1
            loss, correct = step(inputs, targets)
            return (loss * float("nan") if calls["n"] == 6 else loss), correct  # epoch 2, step 2

        return wrapped

    monkeypatch.setattr(step_module, "make_train_step", poisoned)
    with pytest.raises(TrainingDiverged, match=r"at epoch 2, step 2 \(lr [0-9.e-]+\)"):
        train(tiny_config(tiny_betons, tmp_path))
    state = checkpoint.load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["epoch"] == 1


def interrupt_after_epochs(monkeypatch, epochs):
    """Make the run die like a Ctrl-C right after `epochs` checkpoints."""
    real = checkpoint.save_checkpoint
    saved = {"n": 0}

    def save_then_maybe_interrupt(folder, state, **options):
        path = real(folder, state, **options)
        saved["n"] += 1
        if saved["n"] == epochs:
            raise KeyboardInterrupt
        return path

    monkeypatch.setattr(checkpoint, "save_checkpoint", save_then_maybe_interrupt)


def whole_and_cut(tmp_path, monkeypatch, config):
    """A run whole, and the same run cut after its second epoch's checkpoint (in tmp_path/cut):
    `config(name)` is the run's config for the folder tmp_path/name. Returns the whole run's summary."""

    def checkpointing(name):
        cfg = config(name)
        cfg["logging"]["checkpoint"] = "every"
        return cfg

    whole = train(checkpointing("whole"))
    with monkeypatch.context() as patch:
        interrupt_after_epochs(patch, 2)
        with pytest.raises(KeyboardInterrupt):
            train(checkpointing("cut"))
    return whole


def test_resume_after_interrupt_matches_an_uninterrupted_run_exactly(tiny_betons, tmp_path, monkeypatch):
    whole = train(tiny_config(tiny_betons, tmp_path / "whole", epochs=3))
    with monkeypatch.context() as patch:
        interrupt_after_epochs(patch, 2)
        with pytest.raises(KeyboardInterrupt):
            train(tiny_config(tiny_betons, tmp_path / "cut", epochs=3))
    assert len(read_metrics(tmp_path / "cut")) == 2
    resumed = train({"training": {"resume": str(tmp_path / "cut")}, "logging": {"progress": False}})
    assert without_times(resumed["history"]) == without_times(whole["history"])
    assert resumed["final_test_acc"] == whole["final_test_acc"]
    assert without_times(read_metrics(tmp_path / "cut")) == without_times(read_metrics(tmp_path / "whole"))
    a = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_each_precision_trains_and_resumes_exactly(tiny_betons, tmp_path, monkeypatch, precision):
    """The paths that change with the precision (batches written in bf16, autocast in the step, the
    evaluation and the range test), whatever `auto` would pick here; small, for a CPU that emulates bf16."""

    def config(name):
        return merge(
            tiny_config(tiny_betons, tmp_path / name, epochs=3, precision=precision, batch_size=32, train_subset=64),
            {"model": {"width": 4}, "lr": {"lr_max": 0}, "lr_test": {"num_steps": 16}},
            strict=False,
        )

    whole = train(config("whole"))
    assert whole["config"]["training"]["precision"] == precision
    assert all(math.isfinite(h["train_loss"]) and math.isfinite(h["test_loss"]) for h in whole["history"])
    with monkeypatch.context() as patch:
        interrupt_after_epochs(patch, 2)
        with pytest.raises(KeyboardInterrupt):
            train(config("cut"))
    resumed = train({"training": {"resume": str(tmp_path / "cut")}, "logging": {"progress": False}})
    assert resumed["lr_max"] == whole["lr_max"]
    assert without_times(resumed["history"]) == without_times(whole["history"])


def test_resume_on_another_device_type_continues_from_a_reseeded_generator(tiny_betons, tmp_path, monkeypatch, capsys):
    """A CUDA run resumed on the CPU: its 16-byte generator state cannot be loaded there (faked here)."""
    with monkeypatch.context() as patch:
        interrupt_after_epochs(patch, 1)
        with pytest.raises(KeyboardInterrupt):
            train(tiny_config(tiny_betons, tmp_path / "cut"))
    path = tmp_path / "cut" / checkpoint.LATEST
    state = torch.load(path, weights_only=True)
    state.update(generator=torch.zeros(16, dtype=torch.uint8), generator_device="cuda")
    torch.save(state, path)
    shutil.copytree(tmp_path / "cut", tmp_path / "again")
    runs = [
        train({"training": {"resume": str(tmp_path / name)}, "logging": {"progress": False}})
        for name in ("cut", "again")
    ]
    assert "resuming a cuda run on cpu: batches from epoch 2 on" in capsys.readouterr().err
    assert [h["epoch"] for h in runs[0]["history"]] == [1.0, 2.0]
    assert without_times(runs[0]["history"]) == without_times(runs[1]["history"])  # reseeded the same way


def test_generator_restore_across_device_types_in_both_directions():
    cpu_state = torch.Generator().manual_seed(5).get_state()
    cuda_state = torch.zeros(16, dtype=torch.uint8)  # what a CUDA generator's get_state() returns
    assert [run_state.generator_device({"generator": s}) for s in (cpu_state, cuda_state)] == ["cpu", "cuda"]

    def restore(state, device_type, seed=7):
        generator = torch.Generator()
        note = continue_stream(generator, state["generator"], state["generator_device"], device_type, seed, 3)
        return note, generator.get_state()

    note, restored = restore({"generator": cpu_state, "generator_device": "cpu"}, "cpu")
    assert note is None and torch.equal(restored, cpu_state)  # same device type: the stream continues
    for saved, here in (
        ({"generator": cpu_state, "generator_device": "cpu"}, "cuda"),
        ({"generator": cuda_state, "generator_device": "cuda"}, "cpu"),
    ):
        note, reseeded = restore(saved, here)
        assert f"resuming a {saved['generator_device']} run on {here}" in note and "not bit-identical" in note
        assert torch.equal(reseeded, restore(saved, here)[1])  # deterministic
        assert not torch.equal(reseeded, restore(saved, here, seed=8)[1])
        assert not torch.equal(reseeded, cpu_state)


@pytest.mark.parametrize(
    "policy, every, due",
    [("every", 1, [1, 2, 3, 4]), ("every", 3, [3, 4]), ("every", 0, [4]), ("last", 1, [4]), ("none", 1, [])],
)
def test_checkpoint_policy_says_which_epochs_write_one(policy, every, due):
    options = {"checkpoint": policy, "checkpoint_every": every}
    assert [epoch + 1 for epoch in range(4) if run_state.checkpoint_due(options, epoch, 4)] == due


def test_a_folder_holding_a_run_is_refused_unless_overwritten(tiny_betons, tmp_path, capsys):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "metrics.jsonl").write_text('{"epoch": 7.0}\n')
    (folder / checkpoint.PREVIOUS).write_bytes(b"an old run's")
    with pytest.raises(SystemExit) as stopped:
        cli.main(
            [
                "--data.train_dataset",
                tiny_betons[0],
                "--data.val_dataset",
                tiny_betons[1],
                "--logging.folder",
                str(folder),
                "--training.device",
                "cpu",
                "--training.precision",
                "fp32",
            ]
        )
    assert stopped.value.code == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert f"{folder} already holds a run" in line and f"--resume {folder}" in line
    assert "--logging.overwrite true" in line
    config = tiny_config(tiny_betons, folder, epochs=1)
    with pytest.raises(runlog.RunFolderInUse):
        train(config)
    config["logging"]["overwrite"] = True
    train(config)
    assert [m["epoch"] for m in read_metrics(folder)] == [1.0]
    assert sorted(os.listdir(folder)) == ["checkpoint.pt", "config.yaml", "metrics.jsonl", "summary.json"]


def test_a_twenty_seed_sweep_keeps_one_checkpoint_per_seed(tiny_betons, tmp_path):
    from speedrun.data.betons import CifarData, load_cifar_betons

    data = load_cifar_betons(*tiny_betons, device=torch.device("cpu"))
    data = CifarData(data.train_images[:128], data.train_labels[:128], data.test_images[:64], data.test_labels[:64])
    summaries = cli.train_seeds(tiny_config(tiny_betons, tmp_path / "sweep", epochs=1), range(20), data)
    assert [s["seed"] for s in summaries] == list(range(20))
    for seed in range(20):
        assert sorted(os.listdir(tmp_path / "sweep" / f"seed{seed}")) == [
            "checkpoint.pt",
            "config.yaml",
            "metrics.jsonl",
            "summary.json",
        ]
    total = sum(f.stat().st_size for f in (tmp_path / "sweep").rglob("*") if f.is_file())
    # docs/runs.md: under 2 MB a seed at width 8, the weights and their average (about 35 MB in all);
    # a second checkpoint kept a seed would be 3.5 MB
    assert total < 20 * 2_000_000


def test_resume_refuses_another_config_and_a_folder_without_checkpoint(tiny_betons, tmp_path):
    train(tiny_config(tiny_betons, tmp_path / "run", epochs=1))
    with pytest.raises(ValueError, match=r"training.batch_size: run has 64, given 128"):
        train({"training": {"resume": str(tmp_path / "run"), "batch_size": 128}})
    (tmp_path / "empty").mkdir()
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint"):
        train({"training": {"resume": str(tmp_path / "empty")}})


def test_same_seed_same_run_and_seed_sweep_folders(tiny_betons, tmp_path):
    a = train(tiny_config(tiny_betons, tmp_path / "a", epochs=1))
    b = train(tiny_config(tiny_betons, tmp_path / "b", epochs=1))
    assert without_times(a["history"]) == without_times(b["history"])
    summaries = cli.train_seeds(tiny_config(tiny_betons, tmp_path / "sweep", epochs=1), [3, 4])
    assert [s["seed"] for s in summaries] == [3, 4]
    assert (tmp_path / "sweep" / "seed4" / "summary.json").exists()


def test_late_evaluations_run_several_times_an_epoch(tiny_betons, tmp_path):
    summary = train(tiny_config(tiny_betons, tmp_path, late_evals_from=2, late_evals_per_epoch=2))
    assert [h["epoch"] for h in summary["history"]] == [1.0, 1.5, 2.0]
    seconds = [h["train_seconds"] for h in summary["history"]]
    assert seconds == sorted(seconds)


@pytest.mark.parametrize("optimizer,factor,expected", [("sgd", 0.0, 8.0), ("adam", 0.0, 1.0), ("sgd", 2.0, 2.0)])
def test_the_peak_lr_is_the_range_tests_pick_times_the_optimizers_measured_factor(
    tiny_betons, tmp_path, optimizer, factor, expected
):
    config = tiny_config(tiny_betons, tmp_path, optimizer=optimizer, epochs=1)
    config["lr"]["lr_max"], config["lr_test"] = 0.0, {"factor": factor}
    summary = train(config)
    lr_test = json.loads((tmp_path / "lr_test.json").read_text())
    assert lr_test["factor"] == expected and lr_test["lr_max"] == summary["lr_max"] == summary["derived"]["lr_max"]
    assert summary["lr_max"] == pytest.approx(expected * lr_test["suggested_lr"])


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_the_range_test_sweeps_without_weight_decay(tiny_betons, tmp_path, optimizer):
    """The pick must not move with --training.weight_decay: the sweep leaves decay out."""
    tests = []
    for decay in (0.0, 0.5):
        config = tiny_config(tiny_betons, tmp_path / str(decay), optimizer=optimizer, epochs=1, weight_decay=decay)
        config["lr"]["lr_max"], config["lr_test"] = 0.0, {"lr_start": 1e-3, "lr_end": 1.0}
        train(config)
        tests.append(json.loads((tmp_path / str(decay) / "lr_test.json").read_text()))
    assert tests[0]["losses"] == tests[1]["losses"] and tests[0]["suggested_lr"] == tests[1]["suggested_lr"]


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_optimizers_and_ema_train(tiny_betons, tmp_path, optimizer):
    summary = train(tiny_config(tiny_betons, tmp_path, optimizer=optimizer, ema=0.9, tta=1))
    assert summary["history"][-1]["train_loss"] < summary["history"][0]["train_loss"]
    assert 0.0 <= summary["final_test_acc"] <= 1.0


class MemoryBound(torch.nn.Module):
    """A net that 'runs out of memory' on batches above a limit, like a GPU would."""

    def __init__(self, limit):
        super().__init__()
        self.limit, self.linear = limit, torch.nn.Linear(3, 10)

    def forward(self, x):
        if len(x) > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return self.linear(x.mean((2, 3)))


def test_largest_fitting_batch_halves_until_it_fits():
    assert train_module.largest_fitting_batch(MemoryBound(100), 512, device_policy("cpu", "fp32")) == 64
    assert train_module.largest_fitting_batch(MemoryBound(0), 512, device_policy("cpu", "fp32")) == 0


def test_out_of_memory_names_the_batch_size_and_what_fits(tiny_betons, tmp_path, monkeypatch):
    real = step_module.make_train_step

    def exhausting(*args):
        step = real(*args)

        def wrapped(inputs, targets):
            if len(inputs) > 16:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
            return step(inputs, targets)

        return wrapped

    monkeypatch.setattr(step_module, "make_train_step", exhausting)
    monkeypatch.setattr(train_module, "largest_fitting_batch", lambda model, batch, policy: 16)
    with pytest.raises(train_module.OutOfMemory, match=r"at batch size 64; .* is 16: try --training.batch_size 16"):
        train(tiny_config(tiny_betons, tmp_path))


def test_record_recipe_one_epoch_smoke_run(tiny_betons, tmp_path):
    config = tiny_config(tiny_betons, tmp_path, recipe="speedrun", epochs=1)
    del config["lr"]  # the recipe's own schedule
    summary = train(config)
    cfg = summary["config"]
    assert (cfg["model"]["arch"], cfg["training"]["optimizer"], cfg["augment"]["flip_mode"]) == (
        "record",
        "muon",
        "alternate",
    )
    assert cfg["training"]["tta"] == 2 and summary["history"][0]["train_loss"] > 0
    assert 0.0 <= summary["final_test_acc"] <= 1.0


def test_train_subset_is_a_fixed_random_sample_not_the_first_images():
    from speedrun.data.betons import CifarData
    from speedrun.data.loader import Loader
    from speedrun.runs.config import defaults

    labels = torch.arange(100) // 10  # sorted by class, as image-folder betons are
    images = labels.view(-1, 1, 1, 1).expand(100, 32, 32, 3).to(torch.uint8).contiguous()
    cfg = merge(defaults(), {"training": {"train_subset": 20, "batch_size": 20}})
    seen = [
        set(Loader(CifarData(images, labels, images, labels), cfg, torch.device("cpu"))(0, 0)[1].tolist())
        for _ in range(2)
    ]
    assert len(seen[0]) > 3 and seen[0] == seen[1]


def test_ctrl_c_leaves_a_run_that_resumes_to_the_end(tiny_betons, tmp_path):
    import signal

    folder = tmp_path / "run"
    args = [
        "--data.train_dataset",
        tiny_betons[0],
        "--data.val_dataset",
        tiny_betons[1],
        "--model.width",
        "8",
        "--training.batch_size",
        "64",
        "--training.device",
        "cpu",
        "--training.precision",
        "fp32",
        "--lr.lr_max",
        "0.02",
        "--epochs",
        "40",
        "--logging.plots",
        "false",
        "--logging.progress",
        "false",
        "--logging.folder",
        str(folder),
    ]
    # as from a terminal: a suite started in the background (`cmd &` in a script) ignores SIGINT, and its
    # children inherit that, so the run would never see the Ctrl-C
    process = subprocess.Popen(
        [sys.executable, "-m", "speedrun.train", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 300
    while not (folder / "checkpoint.prev.pt").exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr
    assert "--resume" in stderr
    done = checkpoint.load_checkpoint(checkpoint.find_checkpoint(folder))["epoch"]
    assert 2 <= done < 40
    result = run_cli("--resume", str(folder), "--logging.progress", "false")
    assert result.returncode == 0, result.stderr
    assert [m["epoch"] for m in read_metrics(folder)] == [float(e) for e in range(1, 41)]


@pytest.mark.parametrize("when, levels", [("last", [0, 0, 0, 2]), ("every", [2, 2, 2, 2])])
def test_test_time_augmentation_costs_one_evaluation_unless_asked_for_every_one(tiny_betons, tmp_path, when, levels):
    summary = train(
        tiny_config(tiny_betons, tmp_path, epochs=3, tta=2, tta_when=when, late_evals_from=3, late_evals_per_epoch=2)
    )
    assert [record["tta"] for record in summary["history"]] == levels
    assert summary["final_test_acc"] == summary["history"][-1]["test_acc"]


def test_selective_test_time_augmentation_in_a_run(tiny_betons, tmp_path):
    """--training.tta_below 0: no image is unsure enough, so the last evaluation is the plain one."""
    runs = {
        name: train(tiny_config(tiny_betons, tmp_path / name, epochs=2, **options))
        for name, options in {
            "plain": {"tta": 0},
            "none_below": {"tta": 2, "tta_below": 0.0},
            "all": {"tta": 2},
        }.items()
    }
    assert runs["none_below"]["final_test_acc"] == runs["plain"]["final_test_acc"]
    assert runs["none_below"]["history"][-1]["test_loss"] == runs["plain"]["history"][-1]["test_loss"]
    assert runs["all"]["history"][-1]["test_loss"] != runs["plain"]["history"][-1]["test_loss"]
