import pytest
import torch

from speedrun.optim.schedule import OneCycle
from speedrun.runs.config import defaults


def test_first_peak_and_last_steps():
    schedule = OneCycle(lr_max=0.4, lr_min=0.04, total_steps=240, peak_step=50)
    assert schedule(0) == pytest.approx(0.04)
    assert schedule(25) == pytest.approx(0.22)
    assert schedule(50) == pytest.approx(0.4)
    assert schedule(240) == pytest.approx(0.04)
    assert OneCycle(0.4, 0.04, 240, 50, end_lr=0.0)(240) == 0.0


def test_pieces_are_monotonic_and_linear():
    table = OneCycle(1.0, 0.1, 100, 20).lr_table()
    assert len(table) == 101
    up, down = table[:21], table[20:]
    assert all(a < b for a, b in zip(up, up[1:]))
    assert all(a > b for a, b in zip(down, down[1:]))
    steps_up = {round(b - a, 12) for a, b in zip(up, up[1:])}
    steps_down = {round(a - b, 12) for a, b in zip(down, down[1:])}
    assert len(steps_up) == 1 and len(steps_down) == 1


def test_from_epochs_default_shape():
    schedule = OneCycle.from_epochs(lr_max=0.5, lr_min=0.05, epochs=24, peak_epoch=5, steps_per_epoch=98)
    assert (schedule.total_steps, schedule.peak_step) == (24 * 98, 5 * 98)
    assert schedule(5 * 98) == pytest.approx(0.5)
    assert schedule(24 * 98) == pytest.approx(0.05)
    zero = OneCycle.from_epochs(0.5, 0.05, 24, 5, 98, anneal_to_zero=True)
    assert zero(24 * 98) == 0.0 and zero(0) == pytest.approx(0.05)
    assert OneCycle.from_epochs(0.5, 0.05, 24, 2.5, 10).peak_step == 25


def test_edge_cases_no_warmup_and_no_decay():
    no_warmup = OneCycle.from_epochs(1.0, 0.1, epochs=4, peak_epoch=0, steps_per_epoch=10)
    assert no_warmup(0) == 1.0 and no_warmup(40) == pytest.approx(0.1)
    no_decay = OneCycle.from_epochs(1.0, 0.1, epochs=4, peak_epoch=4, steps_per_epoch=10)
    assert no_decay(0) == pytest.approx(0.1) and no_decay(40) == 1.0
    assert OneCycle(1.0, 1.0, 1, 1).lr_table() == [1.0, 1.0]


def test_as_tensor_matches_table():
    schedule = OneCycle(0.3, 0.03, 50, 10, end_lr=0.0)
    lrs = schedule.as_tensor("cpu")
    assert lrs.dtype == torch.float32 and lrs.shape == (51,)
    torch.testing.assert_close(lrs, torch.tensor(schedule.lr_table(), dtype=torch.float32))


@pytest.mark.parametrize(
    "args",
    [
        dict(lr_max=0.0, lr_min=0.0, total_steps=10, peak_step=2),  # no peak
        dict(lr_max=0.1, lr_min=0.2, total_steps=10, peak_step=2),  # min above max
        dict(lr_max=0.1, lr_min=-0.1, total_steps=10, peak_step=2),
        dict(lr_max=0.1, lr_min=0.01, total_steps=0, peak_step=0),
        dict(lr_max=0.1, lr_min=0.01, total_steps=10, peak_step=11),
        dict(lr_max=0.1, lr_min=0.01, total_steps=10, peak_step=-1),
        dict(lr_max=0.1, lr_min=0.01, total_steps=10, peak_step=2.5),
        dict(lr_max=0.1, lr_min=0.01, total_steps=10, peak_step=2, end_lr=0.5),
    ],
)
def test_bad_arguments_raise(args):
    with pytest.raises(ValueError):
        OneCycle(**args)


def test_bad_steps_and_epochs_raise():
    schedule = OneCycle(0.1, 0.01, 10, 2)
    for step in (-1, 11):
        with pytest.raises(ValueError):
            schedule(step)
    with pytest.raises(ValueError):
        OneCycle.from_epochs(0.1, 0.01, epochs=4, peak_epoch=5, steps_per_epoch=10)
    with pytest.raises(ValueError):
        OneCycle.from_epochs(0.1, 0.01, epochs=4, peak_epoch=1, steps_per_epoch=0)


def test_lr_section_defaults():
    assert defaults()["lr"] == dict(lr_max=0.0, div_factor=25.0, peak_epoch=5.0, anneal_to_zero=False)
