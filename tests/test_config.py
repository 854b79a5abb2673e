"""The option registry, `--print-config`, and a config that stays as resolved."""

import copy
import json
import os
import subprocess
import sys

import pytest
import yaml

from speedrun.runs.config import RUN_SECTIONS, resolve_config
from speedrun.system import checkpoint
from speedrun.train import train


def python(code, cwd=None):
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )


def test_every_option_is_registered_by_the_config_module_alone():
    code = (
        "import json, sys\n"
        "from speedrun.runs.config import defaults, resolve_config\n"
        "config = resolve_config({'data': {'cache_dir': 'elsewhere', 'source': 'x.tar.gz'}})\n"
        "alone = defaults()\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('speedrun.train', 'speedrun.leaderboard', "
        "'speedrun.cli', 'write_beton')))\n"
        "sys.path.insert(0, '.'); import write_beton, speedrun.cli, speedrun.leaderboard  # noqa\n"
        "print(json.dumps([config['data'], loaded, alone == defaults()]))"
    )
    result = python(code)
    assert result.returncode == 0, result.stderr
    data, loaded, unchanged = json.loads(result.stdout)
    assert data["cache_dir"] == "elsewhere" and data["source"] == "x.tar.gz"
    assert data["train_dataset"] == "data/cifar10_train.beton"
    assert loaded == []  # nothing but the config module was needed
    assert unchanged  # importing every command line adds no option


def test_a_run_config_holds_the_run_sections_and_unknown_keys_are_refused():
    assert sorted(resolve_config()) == sorted(RUN_SECTIONS)
    with pytest.raises(KeyError, match="unknown config key"):
        resolve_config({"leaderboard": {"seeds": "0"}})


@pytest.mark.parametrize(
    "overrides, weight_decay",
    [
        ({}, 0.2),  # Adam, the default optimizer: decoupled decay, its measured default
        ({"training": {"optimizer": "sgd"}}, 5e-4),  # L2: the seed's value, not Adam's
        ({"training": {"optimizer": "muon"}}, 5e-4),
        ({"training": {"recipe": "speedrun"}}, 5e-4),  # the recipe's own value
        ({"training": {"optimizer": "sgd", "weight_decay": 0.01}}, 0.01),  # given: kept
        ({"training": {"recipe": "speedrun", "optimizer": "adam"}}, 5e-4),  # a recipe's value beats the optimizer's
    ],
)
def test_weight_decay_defaults_to_the_value_of_the_optimizer_in_use(overrides, weight_decay):
    assert resolve_config(overrides)["training"]["weight_decay"] == weight_decay


def print_config(*args, cwd):
    result = subprocess.run(
        [sys.executable, "-m", "speedrun.train", "--print-config", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize(
    "args, recipe, epochs, peak",
    [
        ([], "seed", 24, 5.0),
        (["--epochs", "3"], "seed", 3, 0.625),  # a short run peaks at 5/24 of its length
        (["--training.recipe", "speedrun"], "speedrun", 10, 2),
        (["--recipe", "speedrun", "--epochs", "2"], "speedrun", 2, 0.4167),
    ],
)
def test_print_config_prints_the_resolved_values_and_exits(tmp_path, args, recipe, epochs, peak):
    text = print_config(*args, "--logging.folder", "runs/x", cwd=tmp_path)
    printed = yaml.safe_load(text)
    overrides = {"training": {"recipe": recipe, "epochs": epochs}, "logging": {"folder": "runs/x"}}
    assert printed == resolve_config(overrides)
    assert printed["model"]["arch"] == ("record" if recipe == "speedrun" else "resnet")
    assert printed["lr"]["peak_epoch"] == (5.0 if recipe == "seed" else 2)  # as resolved, not as derived
    lr = "the LR range test's pick (min_loss)" if recipe == "seed" else "0.2 (lr.lr_max)"
    assert "# derived when the run starts" in text and f"#   lr_max: {lr}\n" in text
    assert f"#   peak_epoch: {peak}\n" in text
    assert os.listdir(tmp_path) == []  # nothing written, nothing run


def test_an_optimizer_chosen_in_a_config_file_brings_its_weight_decay(tmp_path):
    (tmp_path / "sgd.yaml").write_text("training:\n  optimizer: sgd\n")
    printed = yaml.safe_load(print_config("--config-file", "sgd.yaml", cwd=tmp_path))
    assert printed["training"]["optimizer"] == "sgd" and printed["training"]["weight_decay"] == 5e-4


def test_the_command_line_prints_its_stacks_on_the_signal():
    """`kill -USR1 <pid>` on a run shows where it is (the campaign sends it before killing a hung run)."""
    result = python(
        "import faulthandler, io, contextlib; from speedrun.cli import main; "
        "from speedrun.system.stacks import STACKS_SIGNAL\n"
        "with contextlib.redirect_stdout(io.StringIO()): main(['--print-config'])\n"
        "print(faulthandler.unregister(STACKS_SIGNAL))"
    )
    assert result.returncode == 0 and result.stdout.strip() == "True", result.stderr


def test_the_stack_dump_registers_when_stderr_has_no_descriptor(monkeypatch):
    """A notebook's or pytest's stderr has no file descriptor: the dump goes to the process's own."""
    import faulthandler
    import io

    from speedrun.system.stacks import STACKS_SIGNAL, dump_stacks_on_signal

    monkeypatch.setattr(sys, "stderr", io.StringIO())
    dump_stacks_on_signal()
    assert faulthandler.unregister(STACKS_SIGNAL)


def test_print_config_of_a_run_to_resume_shows_its_saved_config(tiny_betons, tmp_path):
    folder = tmp_path / "run"
    config = {
        "data": {"train_dataset": tiny_betons[0], "val_dataset": tiny_betons[1]},
        "model": {"width": 8},
        "training": {"epochs": 1, "batch_size": 64, "device": "cpu", "precision": "fp32"},
        "lr": {"lr_max": 0.02},
        "logging": {"folder": str(folder), "progress": False, "plots": False},
    }
    summary = train(config)
    printed = yaml.safe_load(print_config("--resume", str(folder), cwd=tmp_path))
    assert printed == {**summary["config"], "training": {**summary["config"]["training"], "resume": str(folder)}}


def test_the_config_is_not_changed_by_the_run_and_derived_values_are_recorded(tiny_betons, tmp_path, capsys):
    folder = tmp_path / "run"
    overrides = {
        "data": {"train_dataset": tiny_betons[0], "val_dataset": tiny_betons[1]},
        "model": {"width": 8},
        "training": {"epochs": 2, "batch_size": 64, "device": "cpu", "precision": "fp32"},
        "logging": {"folder": str(folder), "progress": False, "plots": False},
    }
    given = copy.deepcopy(overrides)
    summary = train(given)
    assert given == overrides  # the caller's dict is left alone
    resolved = resolve_config(overrides)
    assert summary["config"] == resolved  # lr_max 0 and peak_epoch 5 as resolved, for a 2-epoch run
    assert resolved["lr"]["lr_max"] == 0.0 and resolved["lr"]["peak_epoch"] == 5.0
    assert yaml.safe_load((folder / "config.yaml").read_text()) == resolved
    picked = json.loads((folder / "lr_test.json").read_text())["suggested_lr"]
    assert summary["derived"] == {"lr_max": picked, "peak_epoch": round(2 * 5 / 24, 4)}
    assert summary["lr_max"] == picked
    state = checkpoint.load_checkpoint(checkpoint.find_checkpoint(folder))
    assert state["config"] == resolved and state["derived"] == summary["derived"]

    capsys.readouterr()
    resumed = train({"training": {"resume": str(folder)}, "logging": {"progress": False}})
    assert "LR range test" not in capsys.readouterr().err  # a resumed run keeps the LR its start derived
    assert resumed["derived"] == summary["derived"]
    assert resumed["config"] == {**resolved, "training": {**resolved["training"], "resume": str(folder)}}
