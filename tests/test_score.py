"""Scoring a trained run at each level of test-time augmentation, from its checkpoint."""
import json
import subprocess
import sys

import pytest

from speedrun.score import parse_levels, score
from speedrun.train import train


@pytest.fixture(scope="module")
def trained(tiny_betons, tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    summary = train({"data": {"train_dataset": tiny_betons[0], "val_dataset": tiny_betons[1]}, "model": {"width": 8},
                     "training": {"epochs": 2, "batch_size": 64, "device": "cpu", "precision": "fp32", "tta": 1},
                     "lr": {"lr_max": 0.02},
                     "logging": {"folder": str(folder), "progress": False, "plots": False, "checkpoint": "last"}})
    return folder, summary


def test_the_level_a_run_was_evaluated_with_scores_what_the_run_reported(trained):
    folder, summary = trained
    scores = score(folder)
    assert list(scores) == [0, 1, 2] and all(0 <= acc <= 1 for acc in scores.values())
    assert scores[1] == pytest.approx(summary["final_test_acc"], abs=1e-9)  # the run evaluated with flips


def test_the_command_prints_each_level_and_writes_json(trained, tmp_path):
    folder, _ = trained
    out = tmp_path / "scores.json"
    done = subprocess.run([sys.executable, "-m", "speedrun.score", str(folder), "--tta", "2,0", "--device", "cpu",
                           "--precision", "fp32", "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "tta0 " in done.stdout and "tta2 " in done.stdout and "tta1" not in done.stdout
    assert list(json.loads(out.read_text())[str(folder)]) == ["0", "2"]


def test_bad_levels_and_a_folder_without_a_checkpoint_are_errors(tmp_path):
    with pytest.raises(ValueError, match="--tta takes levels"):
        parse_levels("3")
    done = subprocess.run([sys.executable, "-m", "speedrun.score", str(tmp_path), "--device", "cpu", "--precision", "fp32"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and done.stderr.startswith("speedrun.score: error:")
