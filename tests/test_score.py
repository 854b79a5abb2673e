"""Scoring a trained run at each level of test-time augmentation, from its checkpoint."""

import json
import subprocess
import sys

import pytest

from speedrun.score import parse_levels, parse_thresholds, score, score_run
from speedrun.train import train


@pytest.fixture(scope="module")
def trained(tiny_betons, tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    summary = train(
        {
            "data": {"train_dataset": tiny_betons[0], "val_dataset": tiny_betons[1]},
            "model": {"width": 8},
            "training": {"epochs": 2, "batch_size": 64, "device": "cpu", "precision": "fp32", "tta": 1},
            "lr": {"lr_max": 0.02},
            "logging": {"folder": str(folder), "progress": False, "plots": False, "checkpoint": "last"},
        }
    )
    return folder, summary


def score_command(folder, out, *options):
    """`python -m speedrun.score` on the CPU in float32, writing its JSON to `out`."""
    command = [sys.executable, "-m", "speedrun.score", str(folder), *options, "--device", "cpu", "--precision", "fp32"]
    return subprocess.run([*command, "--json", str(out)], capture_output=True, text=True, timeout=300)


def test_the_level_a_run_was_evaluated_with_scores_what_the_run_reported(trained):
    folder, summary = trained
    scores = score(folder)
    assert list(scores) == [0, 1, 2] and all(0 <= acc <= 1 for acc in scores.values())
    assert scores[1] == pytest.approx(summary["final_test_acc"], abs=1e-9)  # the run evaluated with flips


def test_the_command_prints_each_level_and_writes_json(trained, tmp_path):
    folder, _ = trained
    out = tmp_path / "scores.json"
    done = score_command(folder, out, "--tta", "2,0")
    assert done.returncode == 0, done.stderr
    assert "tta0 " in done.stdout and "tta2 " in done.stdout and "tta1" not in done.stdout
    assert list(json.loads(out.read_text())[str(folder)]) == ["0", "2"]


def test_selective_tta_scores_each_level_above_0_at_each_threshold(trained):
    folder, _ = trained
    scores, selective = score_run(folder, [0, 1], [0.0, 1.0])
    assert scores == score(folder, [0, 1]) and list(selective) == ["1@0", "1@1"]
    assert selective["1@0"] == {"accuracy": scores[0], "tta_fraction": 0.0}  # nothing below 0: no tta
    assert selective["1@1"] == {"accuracy": scores[1], "tta_fraction": 1.0}  # all below 1: tta everywhere


def test_the_command_prints_and_writes_selective_tta_entries(trained, tmp_path):
    folder, _ = trained
    out = tmp_path / "scores.json"
    done = score_command(folder, out, "--tta", "0,2", "--tta-below", "0.9,0.6")
    assert done.returncode == 0, done.stderr
    assert all(f"{name} " in done.stdout for name in ("tta0", "tta2", "tta2@0.6", "tta2@0.9"))
    assert "tta0@" not in done.stdout and done.stdout.count("augmented)") == 2
    written = json.loads(out.read_text())[str(folder)]
    assert list(written) == ["0", "2", "selective"]  # the levels' keys as without --tta-below
    assert list(written["selective"]) == ["2@0.6", "2@0.9"]
    for entry in written["selective"].values():
        assert set(entry) == {"accuracy", "tta_fraction"} and 0 <= entry["accuracy"] <= 1
        assert 0 <= entry["tta_fraction"] <= 1
    assert written["selective"]["2@0.6"]["tta_fraction"] <= written["selective"]["2@0.9"]["tta_fraction"]


def test_bad_thresholds_are_errors(trained):
    folder, _ = trained
    assert parse_thresholds(None) == [] and parse_thresholds("0.9, 0.5,0.9") == [0.5, 0.9]
    for text in ("1.5", "-0.1", "nan", "high"):
        with pytest.raises(ValueError, match="--tta-below takes confidence thresholds between 0 and 1"):
            parse_thresholds(text)
    for extra in (["--tta-below", "1.2"], ["--tta", "0", "--tta-below", "0.5"]):
        done = subprocess.run(
            [sys.executable, "-m", "speedrun.score", str(folder), "--device", "cpu", "--precision", "fp32", *extra],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 1 and done.stderr.startswith("speedrun.score: error: --tta-below"), done.stderr


def test_bad_levels_and_a_folder_without_a_checkpoint_are_errors(tmp_path):
    with pytest.raises(ValueError, match="--tta takes levels"):
        parse_levels("3")
    done = subprocess.run(
        [sys.executable, "-m", "speedrun.score", str(tmp_path), "--device", "cpu", "--precision", "fp32"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1 and done.stderr.startswith("speedrun.score: error:")
