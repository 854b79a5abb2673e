"""What stops a run: a loss that explodes by orders of magnitude, named with its epoch, steps and LR."""

import math

import pytest

from speedrun.runs.faults import EXPLODED_FACTOR, TrainingDiverged, check_not_exploded
from speedrun.system import checkpoint
from speedrun.train import train

LRS = [0.01 * (i + 1) for i in range(8)]  # 2 epochs of 4 steps


def test_a_loss_near_chance_or_below_passes():
    for loss in (0.1, math.log(10), 5.0, EXPLODED_FACTOR * math.log(10), float("nan")):  # NaN: check_finite's
        check_not_exploded(loss, 1, range(0, 4), LRS, 4, "no-folder", picked=False)


def test_an_exploded_loss_names_epoch_steps_lr_and_the_option(tmp_path):
    with pytest.raises(TrainingDiverged) as info:
        check_not_exploded(1.01 * EXPLODED_FACTOR * math.log(10), 1, range(2, 4), LRS, 4, str(tmp_path), picked=False)
    message = str(info.value)
    assert "exploded to 23.26" in message and "at epoch 2, steps 3-4 (lr 0.07 to 0.08)" in message
    assert "peak LR 0.08 (--lr.lr_max)" in message and "--lr.lr_max (e.g. 0.008)" in message
    assert "no checkpoint was written" in message
    (tmp_path / checkpoint.LATEST).write_bytes(b"")
    with pytest.raises(
        TrainingDiverged,
        match=r"epoch 1, steps 1-1 \(lr 0.01\).*last good checkpoint is in "
        r".*the LR range test's pick",
    ):
        check_not_exploded(1e6, 0, range(0, 1), LRS, 4, str(tmp_path), picked=True)
    with pytest.raises(TrainingDiverged, match=r"ln\(100\) = 46"):  # the reference follows the classes
        check_not_exploded(50.0, 0, range(0, 4), LRS, 4, str(tmp_path), picked=True, num_classes=100)


def tiny_adam_config(betons, folder, lr_max):
    return {
        "data": {"train_dataset": betons[0], "val_dataset": betons[1]},
        "model": {"width": 8},
        "training": {"epochs": 2, "batch_size": 64, "device": "cpu", "precision": "fp32", "optimizer": "adam"},
        "lr": {"lr_max": lr_max},
        "logging": {"folder": str(folder), "progress": False, "plots": False},
    }


def test_a_run_at_a_huge_lr_stops_and_says_why(tiny_betons, tmp_path):
    """Adam at a peak LR of 10: the first epoch's mean loss is about 190 (ln(10) = 2.3 at the start)."""
    with pytest.raises(
        TrainingDiverged,
        match=r"train loss exploded to [0-9.e+]+ .* at epoch 1, steps 1-4 "
        r"\(lr [0-9.]+ to 10\); stopping, no checkpoint was written\. "
        r"The peak LR 10 \(--lr\.lr_max\) is too high: .*--lr\.lr_max",
    ):
        train(tiny_adam_config(tiny_betons, tmp_path, 10.0))
    assert not (tmp_path / "metrics.jsonl").exists() or not (tmp_path / "metrics.jsonl").read_text()


def test_a_run_at_a_sensible_lr_trains_on(tiny_betons, tmp_path):
    summary = train(tiny_adam_config(tiny_betons, tmp_path, 0.02))
    assert [h["epoch"] for h in summary["history"]] == [1.0, 2.0]
    assert all(h["train_loss"] < math.log(10) * 1.5 for h in summary["history"])
