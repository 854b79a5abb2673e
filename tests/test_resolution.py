"""The resolution curriculum (--training.resolutions): which side each epoch trains at, the curricula
refused, the batch the net sees, a run with it off computing what it always did, the whole step compiled
as one static graph per side, all of them in the warm-up, and resume and seed sweeps keeping to it."""

import re

import pytest
import torch
from test_step import compiled_run, losses, step_config
from test_train import whole_and_cut, without_times
from torch._dynamo.utils import counters

from speedrun import cli
from speedrun import train as train_module
from speedrun.data.augment import CIFAR10_MEAN, CIFAR10_STD, normalize, normalize_table
from speedrun.engine import step as step_module
from speedrun.engine.resolution import curriculum, downscale, parse_sides, side_for_epoch
from speedrun.nets.model import build_model
from speedrun.optim.optimizers import group_lr_table, param_groups
from speedrun.runs.config import RUN_SECTIONS, parse_args, resolve_config
from speedrun.system import device as device_module
from speedrun.system.device import policy_from_config
from speedrun.system.distributed import Dist
from speedrun.train import train

SIDES = "24,28,32"


@pytest.mark.parametrize(
    "text, epochs, expected",
    [
        (SIDES, 3, [24, 28, 32]),
        (SIDES, 6, [24, 24, 28, 28, 32, 32]),
        (SIDES, 4, [24, 24, 28, 32]),  # uneven: epoch e at sides[e * 3 // 4]
        (SIDES, 7, [24, 24, 24, 28, 28, 32, 32]),
        ("16,32", 3, [16, 16, 32]),
        (" 16, 24 ,32", 3, [16, 24, 32]),
        ("32", 3, [32, 32, 32]),
        ("", 3, [32, 32, 32]),  # off
    ],
)
def test_each_side_trains_an_equal_share_of_the_epochs_in_order(text, epochs, expected):
    sides = parse_sides(text)
    assert [side_for_epoch(sides, epoch, epochs) for epoch in range(epochs)] == expected


@pytest.mark.parametrize(
    "text, message",
    [
        ("24,28", "the last side must be 32"),
        ("32,24", "the last side must be 32"),
        ("7,32", r"every side must be in \[8, 32\]"),
        ("24,40,32", r"every side must be in \[8, 32\]"),
        ("24;32", "expected image sides separated by commas"),
        ("24,,32", "expected image sides separated by commas"),
        ("24.5,32", "expected image sides separated by commas"),
    ],
)
def test_a_malformed_curriculum_is_a_clear_value_error_and_a_command_line_error(text, message):
    with pytest.raises(ValueError, match=rf"--training.resolutions '{re.escape(text)}': {message}"):
        parse_sides(text)
    with pytest.raises(SystemExit) as exit_info:  # the command line checks it too: exit status 2
        parse_args(["--training.resolutions", text], sections=RUN_SECTIONS, explicit_only=True)
    assert exit_info.value.code == 2


@pytest.mark.parametrize(
    "arch, text, epochs, message",
    [
        ("record", SIDES, 2, "3 sides need at least as many epochs, the run has 2"),
        ("resnet", SIDES, 3, "the resnet net cannot take 24x24 images"),  # its MaxPool2d(4) head: 32 only
        ("record", "8,32", 2, "the record net cannot take 8x8 images"),  # three halvings after a 2x2 conv
    ],
)
def test_a_curriculum_needs_an_epoch_a_side_and_a_net_that_takes_each_side(arch, text, epochs, message):
    cfg = resolve_config({"model": {"arch": arch}, "training": {"resolutions": text, "epochs": epochs}})
    with pytest.raises(ValueError, match=message):
        curriculum(cfg)


def test_the_seed_resnet_with_a_curriculum_stops_before_its_folder_and_data(tiny_betons, tmp_path):
    config = step_config(tiny_betons, tmp_path / "run", "seed", epochs=3, resolutions=SIDES)
    with pytest.raises(ValueError, match="the resnet net cannot take 24x24 images"):
        train(config)
    assert not (tmp_path / "run").exists()
    cfg = resolve_config({"model": {"arch": "resnet"}, "training": {"resolutions": "32"}})
    assert curriculum(cfg) == (32,)  # full size only: any net


def test_downscaling_keeps_dtype_and_memory_format_and_damps_what_the_small_side_cannot_hold():
    batch = torch.rand(4, 3, 32, 32).to(memory_format=torch.channels_last)
    for dtype in (torch.float32, torch.bfloat16):  # bf16: resized in float32 (no bf16 CPU kernel)
        small = downscale(batch.to(dtype), 24)
        assert small.shape == (4, 3, 24, 24) and small.dtype == dtype
        assert small.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(downscale(torch.full((1, 3, 32, 32), 0.3), 24), torch.full((1, 3, 24, 24), 0.3))
    # stripes a pixel wide, too fine for 24 pixels: antialiased, they alias into weaker coarse stripes
    stripes = (torch.arange(32) % 2).float().expand(1, 3, 32, 32)
    plain = torch.nn.functional.interpolate(stripes, size=(24, 24), mode="bilinear", align_corners=False)
    assert (downscale(stripes, 24) - 0.5).abs().max() < 0.7 * (plain - 0.5).abs().max()


def test_the_net_trains_on_each_epochs_side_and_is_evaluated_at_32(tiny_betons, tmp_path, monkeypatch):
    real_build, real_steps, seen, now = train_module.build_model, train_module.run_steps, [], {}

    def build_model(cfg, images):
        net = real_build(cfg, images)  # the weight average's copy inherits the hook
        net.register_forward_pre_hook(
            lambda module, args: seen.append((now["epoch"], module.training, args[0].shape[-1]))
        )
        return net

    def run_steps(run, epoch, *args):
        now["epoch"] = epoch
        real_steps(run, epoch, *args)

    monkeypatch.setattr(train_module, "build_model", build_model)
    monkeypatch.setattr(train_module, "run_steps", run_steps)
    train(step_config(tiny_betons, tmp_path, "speedrun", epochs=4, resolutions="16,24,32"))
    trained = [(epoch, side) for epoch, training, side in seen if training]
    assert trained == [(0, 16)] * 4 + [(1, 16)] * 4 + [(2, 24)] * 4 + [(3, 32)] * 4  # 4 steps an epoch
    evaluated = {side for _, training, side in seen if not training}
    assert evaluated == {32}


def test_with_the_curriculum_off_a_run_computes_what_it_did_before_to_the_bit(tiny_betons, tmp_path, monkeypatch):
    """Off, and at '32' alone, the step never resizes: the run of before, to the bit."""

    def never(*args):
        raise AssertionError("a run at 32 pixels resized its batch")

    with monkeypatch.context() as patch:
        patch.setattr(step_module, "downscale", never)
        off = train(step_config(tiny_betons, tmp_path / "off", "speedrun", epochs=3))
        full = train(step_config(tiny_betons, tmp_path / "full", "speedrun", epochs=3, resolutions="32"))
    smaller = train(step_config(tiny_betons, tmp_path / "smaller", "speedrun", epochs=3, resolutions="24,32"))
    assert off["config"]["training"]["resolutions"] == ""
    assert without_times(full["history"]) == without_times(off["history"])
    assert full["final_test_acc"] == off["final_test_acc"]
    assert losses(smaller)[:2] != losses(off)[:2]  # the comparison sees a curriculum


def recording_whole_step(monkeypatch, text):
    """A record net's whole step built for the sides of `text`, compiled by a backend that records each
    graph's inputs; with a batch of 4 to call it on."""
    graphs = []

    def recording(graph, inputs):
        graphs.append(inputs)
        return graph.forward

    monkeypatch.setattr(device_module, "COMPILE_BACKEND", recording)
    torch._dynamo.reset()
    cfg = resolve_config(
        {
            "training": {
                "recipe": "speedrun",
                "batch_size": 4,
                "precision": "fp32",
                "device": "cpu",
                "compile": "on",
                "compile_mode": "whole-step",
                "resolutions": text,
            },
            "model": {"width": 8},
        }
    )
    images = torch.randint(0, 256, (64, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    policy = policy_from_config(cfg["training"], torch.device("cpu"), tell=False)
    model = policy.prepare(build_model(cfg, images))
    inputs = normalize(images[:4], normalize_table(CIFAR10_MEAN, CIFAR10_STD))
    lr_table = group_lr_table([0.01] * 16, param_groups(model, cfg), steps_per_epoch=4)
    step = step_module.build_step(cfg, policy, Dist(device=torch.device("cpu")), model, lr_table, inputs)
    return step, inputs, torch.arange(4), graphs


def test_the_whole_step_is_a_static_graph_for_each_side(monkeypatch):
    """Dynamo would make the side a symbol from the second side on (automatic dynamic shapes), one graph
    of any size; compiled static, each side is a graph of its own, and calling it again compiles nothing."""
    step, inputs, targets, graphs = recording_whole_step(monkeypatch, SIDES)
    for _ in range(2):
        for side in (24, 28, 32):
            step.train_step(inputs, targets, side)
    assert len(graphs) == 3
    symbolic = [x for inputs in graphs for x in inputs if isinstance(x, (torch.SymInt, torch.SymFloat))]
    assert not symbolic
    with pytest.raises(KeyError):  # a side the step was not built for
        step.train_step(inputs, targets, 16)


def test_the_compiled_whole_step_compiles_each_side_in_the_warm_up_and_computes_the_eager_losses(
    tiny_betons, tmp_path, monkeypatch
):
    eager = train(step_config(tiny_betons, tmp_path / "eager", "speedrun", epochs=3, resolutions=SIDES))
    real, compiled = step_module.warm_up, {}

    def warm_up(run):  # frames compiled by each side's warm-up steps
        train_step = run.train_step

        def counting(inputs, targets, side):
            before = counters["frames"]["total"]
            result = train_step(inputs, targets, side)
            compiled[side] = compiled.get(side, 0) + counters["frames"]["total"] - before
            return result

        run.train_step = counting
        try:
            return real(run)
        finally:
            run.train_step = train_step

    monkeypatch.setattr(step_module, "warm_up", warm_up)
    whole, breaks, compiled_after_warm_up = compiled_run(
        tiny_betons, tmp_path / "whole", monkeypatch, "speedrun", "whole-step", resolutions=SIDES
    )
    assert whole["compiled"] == "whole-step" and all(whole["marked_static"])
    assert compiled == {24: 1, 28: 1, 32: 1}  # a graph each, in the warm-up
    assert breaks == 0 and compiled_after_warm_up == 0
    assert losses(whole)[0] == pytest.approx(losses(eager)[0], rel=4e-3)  # test_step.py's tolerances
    assert losses(whole) == pytest.approx(losses(eager), rel=0.1)
    assert whole["final_test_acc"] == pytest.approx(eager["final_test_acc"], abs=0.15)


def test_the_compiled_forward_compiles_nothing_after_the_warm_up_either(tiny_betons, tmp_path, monkeypatch):
    """Compiling the forward alone, dynamo's automatic dynamic shapes serve the later sides."""
    _, breaks, compiled_after_warm_up = compiled_run(
        tiny_betons, tmp_path, monkeypatch, "speedrun", "default", resolutions=SIDES
    )
    assert breaks == 0 and compiled_after_warm_up == 0


def test_a_run_resumed_mid_curriculum_trains_as_the_uninterrupted_one(tiny_betons, tmp_path, monkeypatch):
    whole = whole_and_cut(
        tmp_path,
        monkeypatch,
        lambda name: step_config(
            tiny_betons, tmp_path / name, "speedrun", epochs=4, late_evals_from=0, resolutions="16,24,32"
        ),
    )  # 16, 16, 24, 32
    real, sides = train_module.run_steps, []

    def run_steps(run, epoch, *args):
        sides.append((epoch, run.side(epoch)))
        real(run, epoch, *args)

    monkeypatch.setattr(train_module, "run_steps", run_steps)
    resumed = train({"training": {"resume": str(tmp_path / "cut")}, "logging": {"progress": False}})
    assert sides == [(2, 24), (3, 32)]
    assert without_times(resumed["history"]) == without_times(whole["history"])
    assert resumed["final_test_acc"] == whole["final_test_acc"]


def test_a_seed_sweep_shares_one_step_and_each_seed_keeps_to_the_curriculum(tiny_betons, tmp_path, monkeypatch):
    built, real = [], step_module.build_step
    monkeypatch.setattr(step_module, "build_step", lambda *args: built.append(1) or real(*args))
    sweep = cli.train_seeds(
        step_config(tiny_betons, tmp_path / "sweep", "speedrun", epochs=3, resolutions=SIDES), [0, 1]
    )
    alone = train(step_config(tiny_betons, tmp_path / "alone", "speedrun", epochs=3, seed=1, resolutions=SIDES))
    assert len(built) == 2  # one for the sweep, one alone
    assert without_times(sweep[1]["history"]) == without_times(alone["history"])
    # another curriculum is another step
    other = resolve_config({"training": {"resolutions": "28,32"}})
    keys = [
        step_module.step_key(cfg, "policy", Dist(), 256, torch.zeros(13, 2))
        for cfg in (resolve_config({"training": {"resolutions": SIDES}}), other)
    ]
    assert keys[0] != keys[1]
