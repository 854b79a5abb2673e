"""The CPU proxy's bookkeeping: arms read from their summaries, each against the first with Welch's
interval, airbench's accuracy without test-time augmentation, and the paired test-time augmentation table."""

import argparse
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import proxy  # noqa: E402

from speedrun.runs.leaderboard_entries import welch_interval  # noqa: E402

ARMS = {"base": [0.70, 0.71, 0.72], "lookahead-5": [0.72, 0.73, 0.73]}


def write_summaries(out, arm, accuracies, **extra):
    for seed, accuracy in enumerate(accuracies):
        folder = out / arm / f"seed{seed}"
        folder.mkdir(parents=True)
        summary = {"final_test_acc": accuracy, "train_seconds": 30.0 + seed, "device": "cpu test", **extra}
        (folder / "summary.json").write_text(json.dumps(summary))


def test_arms_already_run_are_read_and_compared_with_the_first(tmp_path, monkeypatch):
    for arm, accuracies in ARMS.items():
        write_summaries(tmp_path, arm, accuracies)
    # airbench reports its accuracy with and without test-time augmentation: the proxy takes the latter
    write_summaries(tmp_path, "airbench-train94", [0.90, 0.90, 0.90], test_acc_without_tta=0.69)
    monkeypatch.setattr(proxy.subprocess, "run", lambda *a, **k: pytest.fail("nothing is left to run"))
    proxy.main(
        [
            "--data",
            "unused",
            "--out",
            str(tmp_path),
            "--seeds",
            "0-2",
            "--arm",
            "base=",
            "--arm",
            "lookahead-5=--training.lookahead 5",
            "--arm",
            "airbench-train94=train94",
        ]
    )
    saved = json.loads((tmp_path / "proxy.json").read_text())
    lookahead = saved["arms"]["lookahead-5"]
    expected = welch_interval([100 * a for a in ARMS["lookahead-5"]], [100 * a for a in ARMS["base"]])
    assert lookahead["minus_base"]["difference"] == pytest.approx(expected["difference"])
    assert lookahead["minus_base"]["low"] == pytest.approx(expected["low"])
    assert lookahead["paired_minus_base"] == [2.0, 2.0, 1.0] and "minus_base" not in saved["arms"]["base"]
    assert saved["arms"]["airbench-train94"]["accuracy"] == [0.69] * 3
    table = (tmp_path / "proxy.md").read_text()
    assert "| lookahead-5 | `--training.lookahead 5` | 72.00, 73.00, 73.00% |" in table


def test_commands_of_our_arms_and_of_airbench():
    args = argparse.Namespace(data="D", out="O", precision="bf16", checkpoint="last")
    ours = proxy.arm_command(args, "la", "--training.lookahead 5", "0,1")
    assert ours[1:3] == ["-m", "speedrun.train"] and ours[-2:] == ["--training.lookahead", "5"]
    assert "--seeds" in ours and "--logging.checkpoint" in ours and "O/la" in ours
    airbench = proxy.arm_command(args, "ab", "train94", "0,1")
    assert airbench[1:5] == ["-m", "speedrun.reference", "--name", "train94"] and "--model.width" in airbench
    with pytest.raises(argparse.ArgumentTypeError):
        proxy.parse_arm("no-equals/sign")


def test_test_time_augmentation_is_compared_on_the_same_nets():
    scores = [
        {"0": 0.70, "1": 0.71, "2": 0.72, "selective": {"2@0.5": {"accuracy": 0.715, "tta_fraction": 0.5}}},
        {"0": 0.60, "1": 0.62, "2": 0.63, "selective": {"2@0.5": {"accuracy": 0.63, "tta_fraction": 0.4}}},
    ]
    table = proxy.paired_tta(scores)
    assert table["2"]["minus_tta0"]["difference"] == pytest.approx(2.5)
    assert table["2@0.5"]["tta_fraction"] == pytest.approx(0.45) and table["0"]["tta_fraction"] == 0
    assert table["2@0.5"]["minus_tta2"]["difference"] == pytest.approx(-0.25)
    assert "| 2@0.5 | 45.0% |" in proxy.tta_markdown(table)
