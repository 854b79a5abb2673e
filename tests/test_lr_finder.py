import json
import math

import pytest
import torch
from torch import nn

from speedrun.optim.lr_finder import (
    FALLBACK,
    MIN_RULE_STEPS,
    MIN_SWEEP_STEPS,
    RULES,
    LRTestDiverged,
    LRTestResult,
    loss_limits,
    lr_range_test,
    num_test_steps,
    suggest_lr,
)
from speedrun.runs import derive
from speedrun.runs.config import defaults, resolve_config
from speedrun.system import runlog

# Least squares y = x @ w + noise with x ~ N(0, scale^2 I): the loss Hessian is scale^2 I, so plain SGD
# converges fastest at lr = 1 / scale^2 and diverges above 2 / scale^2. The steepest-descent pick
# should land in the decade just below the optimum, [0.1, 1) / scale^2, and the lowest loss (smoothed
# without lag) between the fastest LR and divergence, [0.5, 2] / scale^2.


def regression_batches(scale, dim=10, batch=256, seed=0, noise=0.1):
    generator = torch.Generator().manual_seed(seed)
    w_true = torch.randn(dim, 1, generator=generator, dtype=torch.float64)

    def next_batch(i):
        x = scale * torch.randn(batch, dim, generator=generator, dtype=torch.float64)
        return x, x @ w_true + noise * torch.randn(batch, 1, generator=generator, dtype=torch.float64)

    return next_batch


def half_mse(outputs, targets):
    return 0.5 * ((outputs - targets) ** 2).mean()


def sgd(model, lr):
    return torch.optim.SGD(model.parameters(), lr=lr)


def linear_model(dim=10):
    model = nn.Linear(dim, 1, bias=False).double()
    nn.init.zeros_(model.weight)
    return model


@pytest.mark.parametrize("scale", [1.0, 10.0])
def test_suggestion_in_the_right_decade(scale):
    curvature = scale**2
    result = lr_range_test(
        linear_model(),
        sgd,
        regression_batches(scale),
        half_mse,
        lr_start=1e-4 / curvature,
        lr_end=100 / curvature,
        num_steps=100,
        rule="steepest",
    )
    assert 0.1 / curvature <= result.suggested_lr < 1 / curvature
    assert result.rule.startswith("steepest")
    assert 0.5 / curvature <= result.suggestions["min_loss"] <= 2 / curvature
    assert result.suggestions["steepest"] == result.suggested_lr
    assert result.stopped_early  # the sweep to 100 / curvature must blow up past 2 / curvature
    assert 2 / curvature < result.lrs[-1] < 100 / curvature
    assert result.steps == len(result.lrs) == len(result.losses) == len(result.smoothed) < 100
    assert all(math.isfinite(v) for v in result.smoothed)


def test_exponential_sweep_and_untouched_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 1)).double()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = lr_range_test(model, sgd, regression_batches(1.0), half_mse, lr_start=1e-4, lr_end=1e-2, num_steps=11)
    assert result.steps == 11 and not result.stopped_early
    assert result.lrs == pytest.approx([1e-4 * 10 ** (i / 5) for i in range(11)])
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_tensor_lr_and_custom_step_fn():
    calls = []

    def step_fn(model, optimizer, inputs, targets):
        calls.append(float(optimizer.param_groups[0]["lr"]))
        optimizer.zero_grad()
        loss = half_mse(model(inputs), targets)
        loss.backward()
        optimizer.step()
        return loss.detach()

    def make_optimizer(model, lr):
        return torch.optim.SGD(model.parameters(), lr=torch.tensor(lr, dtype=torch.float64))

    result = lr_range_test(
        linear_model(),
        make_optimizer,
        regression_batches(1.0),
        None,
        lr_start=1e-3,
        lr_end=1e-1,
        num_steps=3,
        step_fn=step_fn,
    )
    assert calls == pytest.approx([1e-3, 1e-2, 1e-1]) == result.lrs


def test_first_step_divergence_raises():
    # lr_start = 10 with curvature 1: the first update multiplies the error by 9
    with pytest.raises(LRTestDiverged) as info:
        lr_range_test(linear_model(), sgd, regression_batches(1.0), half_mse, lr_start=10.0, lr_end=100.0, num_steps=20)
    assert info.value.lr > 10.0 and info.value.loss > 0

    def nan_loss(outputs, targets):
        return half_mse(outputs, targets) * float("nan")

    with pytest.raises(LRTestDiverged, match="lr=1e-05"):
        lr_range_test(linear_model(), sgd, regression_batches(1.0), nan_loss, lr_start=1e-5, lr_end=1.0, num_steps=20)


def test_bad_arguments_raise():
    args = (linear_model(), sgd, regression_batches(1.0), half_mse)
    for kwargs in (
        dict(),
        dict(num_steps=1),
        dict(num_steps=10, lr_start=1.0, lr_end=0.1),
        dict(num_steps=10, smoothing=1.0),
        dict(num_steps=10, diverge_factor=1.0),
    ):
        with pytest.raises(ValueError):
            lr_range_test(*args, **kwargs)


def test_fallback_rule_on_short_curve():
    for rule in ("min_loss", "steepest"):
        lr, how = suggest_lr([0.01, 0.1, 1.0], [3.0, 2.0, 2.5], rule)
        assert lr == pytest.approx(0.01) and "fallback" in how
    lrs = [10 ** (i / 4 - 3) for i in range(20)]
    lr, how = suggest_lr(lrs, [1.0 + i for i in range(20)], "steepest")  # loss only rises
    assert lr == pytest.approx(1e-4) and "fallback" in how


def test_min_loss_rule_ignores_the_first_fast_fall():
    """The shape the seed net's sweep has: the loss falls fastest in the first steps (an untrained
    net's transient), keeps falling to a minimum, then rises; min_loss picks the minimum."""
    lrs = [10 ** (i / 10 - 5) for i in range(50)]
    curve = [4.4 - 1.5 * (1 - 0.7**i) - 0.02 * i if i < 35 else 2.2 + 0.3 * (i - 35) for i in range(50)]
    assert suggest_lr(lrs, curve, "min_loss")[0] == pytest.approx(lrs[35])
    assert lrs[35] / 2 <= suggest_lr(lrs, curve, "min_loss", losses=curve)[0] <= lrs[35]  # light smoothing
    assert suggest_lr(lrs, curve, "steepest")[0] < lrs[10]


def test_json_and_plot(tmp_path):
    result = lr_range_test(
        linear_model(), sgd, regression_batches(1.0), half_mse, lr_start=1e-3, lr_end=10.0, num_steps=40
    )
    result.to_json(tmp_path / "lr_test.json")
    saved = json.loads((tmp_path / "lr_test.json").read_text())
    assert saved["suggested_lr"] == result.suggested_lr and saved["lrs"] == result.lrs
    assert set(saved) == {"lrs", "losses", "smoothed", "suggested_lr", "rule", "stopped_early", "steps", "suggestions"}
    assert saved["suggestions"]["min_loss"] == result.suggested_lr
    result.plot(tmp_path / "lr_test.png")
    png = (tmp_path / "lr_test.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 1000


def test_config_defaults():
    config = defaults()["lr_test"]
    assert config == dict(
        enabled=True,
        lr_start=1e-5,
        lr_end=10.0,
        num_steps=0,
        smoothing=0.98,
        diverge_factor=4.0,
        rule="min_loss",
        factor=0.0,
    )
    assert num_test_steps(config["num_steps"], steps_per_epoch=98) == 98
    assert num_test_steps(50, steps_per_epoch=98) == 50


def test_a_short_epoch_sweeps_the_minimum_and_a_too_short_sweep_is_refused():
    assert MIN_RULE_STEPS <= MIN_SWEEP_STEPS <= 98  # a CIFAR-10 epoch at batch 512 keeps its own length
    assert num_test_steps(0, steps_per_epoch=2) == MIN_SWEEP_STEPS  # 1024 images at batch 512
    assert num_test_steps(MIN_RULE_STEPS, steps_per_epoch=2) == MIN_RULE_STEPS  # given: taken as given
    for too_short in (1, 2, MIN_RULE_STEPS - 1):
        with pytest.raises(ValueError, match=r"--lr_test\.num_steps .*--lr\.lr_max"):
            num_test_steps(too_short, steps_per_epoch=98)
    # MIN_RULE_STEPS is the shortest curve both rules read; one point fewer falls back
    lrs = [10 ** (i / 4 - 3) for i in range(MIN_RULE_STEPS)]
    falling = [3.0 - 0.1 * i**1.5 for i in range(MIN_RULE_STEPS)]
    for rule in RULES:
        assert suggest_lr(lrs, falling, rule)[1] != FALLBACK
        assert suggest_lr(lrs[:-1], falling[:-1], rule)[1] == FALLBACK


def test_loss_limits_keep_the_explosion_off_the_axis():
    start, low = 2.3, 1.5
    smoothed = [start - (start - low) * i / 30 for i in range(31)] + [low * 1.3**i for i in range(1, 18)]
    assert smoothed[-1] > 80
    bottom, top = loss_limits(smoothed)
    assert start < top <= start + 0.2 * (start - low) and low - 0.2 * (start - low) <= bottom < low
    assert loss_limits(smoothed, [start, 1.2, 90.0])[0] < 1.2  # every curve's lowest point is shown
    flat = loss_limits([2.0] * 5 + [3.0, 9.0])  # never falls: a span of 20% of the start loss
    assert flat == pytest.approx((2.0 - 0.08, 2.0 + 0.08))


def test_plot_clips_the_loss_axis_near_the_start_loss(tmp_path):
    lrs = [10 ** (i / 8 - 5) for i in range(48)]
    losses = [2.3 - 0.02 * i for i in range(40)] + [1.5 * 2**i for i in range(1, 9)]  # ends at 384
    result = LRTestResult(lrs, losses, losses, lrs[39], "test", True, 48, {"min_loss": lrs[39]})
    figure = result.plot(tmp_path / "lr_test.png", lr_max=lrs[39] * 8)
    bottom, top = figure.axes[0].get_ylim()
    assert top <= 1.2 * losses[0] and bottom <= min(losses) and bottom >= 0.8 * min(losses)
    assert (tmp_path / "lr_test.png").read_bytes().startswith(b"\x89PNG")
    # a real sweep that explodes
    result = lr_range_test(
        linear_model(), sgd, regression_batches(1.0), half_mse, lr_start=1e-3, lr_end=10.0, num_steps=40
    )
    assert result.stopped_early and max(result.losses) > 2 * result.losses[0]
    bottom, top = result.plot(tmp_path / "sweep.png").axes[0].get_ylim()
    assert top <= 1.2 * result.smoothed[0] and bottom <= min(result.smoothed)


class Batches:
    num_images, steps_per_epoch = 1024, 2


def fallback_messages(monkeypatch, capsys, steps, rule):
    def sweep(*args, **kwargs):
        lrs = [10 ** (i - 5) for i in range(steps)]
        return LRTestResult(
            lrs,
            [2.3] * steps,
            [2.3] * steps,
            lrs[0] / 10,
            rule,
            steps < MIN_RULE_STEPS,
            steps,
            {"min_loss": lrs[0] / 10, "steepest": lrs[0] / 10},
        )

    monkeypatch.setattr(derive, "lr_range_test", sweep)
    cfg = resolve_config({"training": {"batch_size": 512}, "logging": {"plots": False, "progress": False}})
    lr_max = derive.run_lr_test(None, Batches(), cfg, runlog.RunLog(None), None)
    return lr_max, capsys.readouterr().err


def test_the_fallback_is_never_silent(monkeypatch, capsys):
    lr_max, err = fallback_messages(monkeypatch, capsys, 5, FALLBACK)
    assert lr_max == pytest.approx(1e-6)
    assert "warning" in err and "fallback" in err and "5 points" in err and "--lr.lr_max" in err
    _, err = fallback_messages(monkeypatch, capsys, MIN_SWEEP_STEPS, FALLBACK)
    assert "warning" in err and "never fell" in err
    _, err = fallback_messages(monkeypatch, capsys, MIN_SWEEP_STEPS, "lowest loss, smoothed without lag")
    assert "warning" not in err and "suggests lr_max" in err


def test_an_epoch_of_two_batches_sweeps_the_minimum_number_of_steps(tiny_betons, tmp_path, capsys):
    """256 images at batch 128: two batches an epoch, as 1024 images at batch 512. The sweep cycles
    through the data for MIN_SWEEP_STEPS steps on the exponential grid of that length."""
    from speedrun.train import train

    config = {
        "data": {"train_dataset": tiny_betons[0], "val_dataset": tiny_betons[1]},
        "model": {"width": 8},
        "training": {"epochs": 1, "batch_size": 128, "device": "cpu", "precision": "fp32"},
        "lr": {"lr_max": 0.0},
        "logging": {"folder": str(tmp_path), "progress": False, "plots": False},
    }
    summary = train(config)
    sweep = json.loads((tmp_path / "lr_test.json").read_text())
    assert sweep["steps"] == MIN_SWEEP_STEPS or sweep["stopped_early"]
    assert sweep["steps"] > MIN_SWEEP_STEPS // 2
    assert sweep["lrs"] == pytest.approx([1e-5 * 1e6 ** (i / (MIN_SWEEP_STEPS - 1)) for i in range(sweep["steps"])])
    assert sweep["rule"] != FALLBACK and summary["lr_max"] == sweep["lr_max"]
    assert f"LR range test over {sweep['steps']} steps" in capsys.readouterr().err


def test_an_explicit_sweep_too_short_to_read_is_refused(tiny_betons, tmp_path):
    from speedrun.train import train

    config = {
        "data": {"train_dataset": tiny_betons[0], "val_dataset": tiny_betons[1]},
        "model": {"width": 8},
        "training": {"epochs": 1, "batch_size": 128, "device": "cpu", "precision": "fp32"},
        "lr": {"lr_max": 0.0},
        "lr_test": {"num_steps": 4},
        "logging": {"folder": str(tmp_path), "progress": False, "plots": False},
    }
    with pytest.raises(ValueError, match=r"--lr_test\.num_steps 4 .*--lr\.lr_max"):
        train(config)
    assert not (tmp_path / "lr_test.json").exists()
