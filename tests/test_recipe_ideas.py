"""The record recipe's optional ideas, each off by default: per-group LRs (batch-norm and whitening biases,
the linear head), the whitening bias trained for the first epochs only, and lookahead. Which parameter
lands in which group, what each computes against a plain reference, that the whole step stays one graph
with them on, that a checkpoint keeps them, and that a run with them off computes what it always did."""

import pytest
import torch
from test_step import compiled_run, losses, step_config
from test_train import whole_and_cut, without_times

from speedrun import cli
from speedrun import train as train_module
from speedrun.engine import step as step_module
from speedrun.nets.model import build_model
from speedrun.optim.optimizers import Lookahead, build_optimizer, group_lr_table, param_groups, set_lr
from speedrun.runs.config import resolve_config
from speedrun.train import train

IDEAS = {"bias_lr_scale": 4.0, "head_lr_scale": 2.0, "whiten_bias_epochs": 1, "lookahead": 2}
OFF = {"bias_lr_scale": 1.0, "head_lr_scale": 1.0}  # the record recipe sets both: these tests turn them off
BIASES = [
    "layers.0.norm1.bias",
    "layers.0.norm2.bias",
    "layers.1.norm1.bias",
    "layers.1.norm2.bias",
    "layers.2.norm1.bias",
    "layers.2.norm2.bias",
]
FILTERS = [f"layers.{i}.conv{j}.weight" for i in range(3) for j in (1, 2)]


def record_net(**training):
    cfg = resolve_config({"training": {"recipe": "speedrun", **training}, "model": {"width": 8}})
    images = torch.randint(0, 256, (64, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return build_model(cfg, images), cfg


def described(net, cfg):
    """Each group of the configured optimizer as (parameter names, lr_scale, weight_decay, lr_epochs)."""
    names = {p: name for name, p in net.named_parameters()}
    return [
        ([names[p] for p in group["params"]], group["lr_scale"], group["weight_decay"], group["lr_epochs"])
        for group in param_groups(net, cfg)
    ]


def test_without_the_options_the_record_net_keeps_its_two_groups():
    net, cfg = record_net(**OFF)
    assert described(net, cfg) == [(FILTERS, 1.0, 0.0, 0), (["whiten.bias", *BIASES, "head.weight"], 1.0, 5e-4, 0)]


def test_the_record_recipe_trains_its_biases_at_64x_and_its_head_at_8x():
    net, cfg = record_net()
    assert described(net, cfg) == [
        (FILTERS, 1.0, 0.0, 0),
        (["whiten.bias", *BIASES], 64.0, 5e-4 / 64, 0),
        (["head.weight"], 8.0, 5e-4, 0),
    ]


def test_biases_and_head_get_their_own_groups_with_the_decay_a_step_kept():
    net, cfg = record_net(bias_lr_scale=64.0, head_lr_scale=2.0, whiten_bias_epochs=3)
    assert described(net, cfg) == [
        (FILTERS, 1.0, 0.0, 0),
        (["whiten.bias"], 64.0, 5e-4 / 64, 3),
        (BIASES, 64.0, 5e-4 / 64, 0),
        (["head.weight"], 2.0, 5e-4, 0),
    ]
    optimizer = build_optimizer(net, cfg, lr=0.1)
    groups = optimizer.param_groups
    assert [group["lr"].item() for group in groups] == pytest.approx([0.1, 6.4, 6.4, 0.2])
    assert [group["lr"].item() * group["weight_decay"] for group in groups[1:]] == pytest.approx(
        [0.1 * 5e-4, 0.1 * 5e-4, 0.2 * 5e-4]
    )  # the biases' decay a step is the others'
    assert len({id(group["lr"]) for group in groups}) == 4  # an LR tensor each, written apart
    # a range test's LR (a float) is scaled per group; a row of the run's table is taken as it is
    set_lr(optimizer, 0.5)
    assert [group["lr"].item() for group in groups] == pytest.approx([0.5, 32.0, 32.0, 1.0])
    set_lr(optimizer, torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert [group["lr"].item() for group in groups] == [1.0, 2.0, 3.0, 4.0]
    with pytest.raises(ValueError, match="4 param groups"):
        set_lr(optimizer, torch.tensor([1.0, 2.0]))


def test_the_lr_table_scales_each_group_and_stops_the_whitening_bias_after_its_epochs():
    net, cfg = record_net(bias_lr_scale=64.0, head_lr_scale=2.0, whiten_bias_epochs=1)
    lrs = [0.1, 0.2, 0.3, 0.2, 0.1]  # 2 epochs of 2 steps, and the end point
    table = group_lr_table(lrs, param_groups(net, cfg), steps_per_epoch=2)
    assert table.shape == (5, 4) and table.dtype == torch.float32
    expected = [[lr, 64 * lr if step < 2 else 0.0, 64 * lr, 2 * lr] for step, lr in enumerate(lrs)]
    torch.testing.assert_close(table, torch.tensor(expected))


def test_adam_and_sgd_take_the_groups_too_and_the_resnet_has_no_whitening_bias():
    net, cfg = record_net(optimizer="adam", bias_lr_scale=8.0, head_lr_scale=1.0)
    names = described(net, cfg)
    decay = cfg["training"]["weight_decay"]  # decoupled: lr x weight_decay a step, kept as well
    assert [(scale, weight_decay) for _, scale, weight_decay, _ in names] == [(8.0, decay / 8), (1.0, decay)]
    assert names[0][0] == ["whiten.bias", *BIASES] and names[1][0] == [*FILTERS, "head.weight"]
    resnet = resolve_config({"training": {"optimizer": "sgd", "bias_lr_scale": 8.0, "head_lr_scale": 3.0}})
    net = build_model(resnet)
    kinds = {p: type(module).__name__ for module in net.modules() for p in module.parameters(recurse=False)}
    groups = param_groups(net, resnet)
    assert [{kinds[p] for p in group["params"]} for group in groups] == [
        {"Conv2d", "BatchNorm2d"},
        {"BatchNorm2d"},
        {"Linear"},
    ]  # BN weights stay; BN biases, the head apart
    assert [group["lr_scale"] for group in groups] == [1.0, 8.0, 3.0]
    with pytest.raises(ValueError, match="record"):
        param_groups(net, resolve_config({"training": {"whiten_bias_epochs": 2}}))


def tiny_run(betons, folder, monkeypatch, **training):
    """A tiny record run (3 epochs of 4 steps), with its parameters after each epoch and its Run."""
    real_epoch, real_summary, kept = train_module.train_epoch, train_module.summarise, {"after": []}

    def train_epoch(run, epoch, *args):
        if not kept["after"]:
            kept["after"].append({n: p.detach().clone() for n, p in run.model.named_parameters()})
        real_epoch(run, epoch, *args)
        kept["after"].append({n: p.detach().clone() for n, p in run.model.named_parameters()})

    def summarise(run):
        kept["run"] = run
        return real_summary(run)

    monkeypatch.setattr(train_module, "train_epoch", train_epoch)
    monkeypatch.setattr(train_module, "summarise", summarise)
    summary = train(step_config(betons, folder, "speedrun", epochs=3, late_evals_from=0, **training))
    return summary, kept["after"], kept["run"]


def test_the_whitening_bias_is_trained_in_its_epochs_only(tiny_betons, tmp_path, monkeypatch):
    _, after, _ = tiny_run(tiny_betons, tmp_path, monkeypatch, whiten_bias_epochs=1, bias_lr_scale=4.0)
    start, first, second, third = after
    assert not torch.equal(start["whiten.bias"], first["whiten.bias"])
    # zero LR from epoch 2 on: not a bit changes, though its momentum and weight decay are not zero
    assert torch.equal(first["whiten.bias"], second["whiten.bias"]) and torch.equal(
        second["whiten.bias"], third["whiten.bias"]
    )
    for name in ("layers.0.norm1.bias", "head.weight", "layers.1.conv1.weight"):
        assert not torch.equal(first[name], second[name]) and not torch.equal(second[name], third[name]), name


def reference_lookahead(weights, updates, period, total):
    """The formula in float64: after each update, every `period`-th step s <- s + (1 - d)(w - s), w <- s,
    d = 0.95**period * (step / total)**3; at the last step w <- s."""
    slow, weights, history = [w.double() for w in weights], [w.double() for w in weights], []
    for step, update in enumerate(updates, 1):
        weights = [w + u.double() for w, u in zip(weights, update)]
        if step % period == 0:
            d = 0.95**period * (step / total) ** 3
            slow = [s + (1 - d) * (w - s) for s, w in zip(slow, weights)]
            weights = list(slow)
        if step == total:
            weights = list(slow)
        history.append(weights)
    return history, slow


@pytest.mark.parametrize("period, total", [(2, 7), (3, 9)])
def test_lookahead_follows_its_formula_and_ends_on_the_slow_copy(period, total):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    net(torch.randn(8, 4))  # running statistics away from their start, and a batch count
    tensors = [t for t in net.state_dict().values() if t.is_floating_point()]
    count = net[1].num_batches_tracked.clone()
    lookahead = Lookahead(net, period, total)
    generator = torch.Generator().manual_seed(1)
    updates = [[torch.randn(t.shape, generator=generator) for t in tensors] for _ in range(total)]
    expected, slow = reference_lookahead([t.clone() for t in tensors], updates, period, total)
    for step, update in enumerate(updates, 1):
        with torch.no_grad():  # what an optimizer step (and batch norm's statistics) did
            torch._foreach_add_(tensors, update)
        before = [t.clone() for t in tensors]
        lookahead.advance(torch.tensor([step]))  # the schedule's step counter: an int64 of shape (1,)
        lookahead.update()
        for got, want in zip(tensors, expected[step - 1]):
            torch.testing.assert_close(got, want.float(), rtol=1e-5, atol=1e-5)
        if step % period and step != total:  # not due: the weights are not touched, to the bit
            assert all(torch.equal(a, b) for a, b in zip(tensors, before))
    slow_tensors = [t for t in lookahead.state_dict().values() if t.is_floating_point()]
    for got, want in zip(slow_tensors, slow):
        torch.testing.assert_close(got, want.float(), rtol=1e-5, atol=1e-5)
    assert all(torch.equal(w, s) for w, s in zip(tensors, slow_tensors))  # the run ends on the slow copy
    assert torch.equal(net[1].num_batches_tracked, count)


def test_lookahead_off_has_no_copy_and_changes_nothing():
    net = torch.nn.Linear(3, 2)
    before = [p.detach().clone() for p in net.parameters()]
    lookahead = Lookahead(net, 0, 10)
    lookahead.advance(torch.tensor([10]))
    lookahead.update()
    assert lookahead.slow is None and lookahead.tensors() == [] and lookahead.state_dict() == {}
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), before))


def test_a_run_with_lookahead_ends_on_its_slow_copy(tiny_betons, tmp_path, monkeypatch):
    summary, after, run = tiny_run(tiny_betons, tmp_path, monkeypatch, lookahead=5)  # 12 steps: the last not due
    slow = run.lookahead.state_dict()
    weights = {name: value for name, value in run.model.state_dict().items() if value.is_floating_point()}
    assert len(weights) > 10 and all(torch.equal(value, slow[name]) for name, value in weights.items())
    assert not torch.equal(after[0]["head.weight"], after[-1]["head.weight"])
    assert summary["final_test_acc"] > 0


def test_with_every_idea_on_the_whole_step_is_one_graph_and_computes_the_eager_losses(
    tiny_betons, tmp_path, monkeypatch
):
    eager = train(step_config(tiny_betons, tmp_path / "eager", "speedrun", epochs=3, **IDEAS))
    real, runs = step_module.warm_up, []

    def warm_up(run):  # its 3 steps move the slow copy (lookahead 2): it must be put back
        before = {name: value.clone() for name, value in run.lookahead.state_dict().items()}
        seconds = real(run)
        runs.append((run, all(torch.equal(before[name], value) for name, value in run.lookahead.state_dict().items())))
        return seconds

    monkeypatch.setattr(step_module, "warm_up", warm_up)
    whole, breaks, compiled_after_warm_up = compiled_run(
        tiny_betons, tmp_path / "whole", monkeypatch, "speedrun", "whole-step", **IDEAS
    )
    assert (eager["compiled"], whole["compiled"]) == ("no", "whole-step")
    assert len(whole["marked_static"]) > 10 and all(whole["marked_static"])
    run, restored = runs[0]
    held = run.lookahead.tensors()
    assert restored
    assert len(held) > 10 and all(hasattr(tensor, "_dynamo_static_input_type") for tensor in held)
    assert breaks == 0 and compiled_after_warm_up == 0
    assert losses(whole)[0] == pytest.approx(losses(eager)[0], rel=4e-3)  # test_step.py's tolerances
    assert losses(whole) == pytest.approx(losses(eager), rel=0.1)
    assert whole["final_test_acc"] == pytest.approx(eager["final_test_acc"], abs=0.15)


def test_a_run_with_every_idea_on_resumes_exactly(tiny_betons, tmp_path, monkeypatch):
    # lookahead due at steps 3, 6, 9 and 12: at the cut (step 8) the slow copy is not the weights
    whole = whole_and_cut(
        tmp_path,
        monkeypatch,
        lambda name: step_config(
            tiny_betons, tmp_path / name, "speedrun", epochs=3, late_evals_from=0, **{**IDEAS, "lookahead": 3}
        ),
    )
    resumed = train({"training": {"resume": str(tmp_path / "cut")}, "logging": {"progress": False}})
    assert without_times(resumed["history"]) == without_times(whole["history"])
    assert resumed["final_test_acc"] == whole["final_test_acc"]


def test_a_seed_sweep_with_every_idea_on_starts_each_seed_afresh(tiny_betons, tmp_path, monkeypatch):
    """Seeds share one step (step.reuse): the second starts with its own slow copy, not the first's."""
    built, real = [], step_module.build_step
    monkeypatch.setattr(step_module, "build_step", lambda *args: built.append(1) or real(*args))
    sweep = cli.train_seeds(step_config(tiny_betons, tmp_path / "sweep", "speedrun", epochs=2, **IDEAS), [0, 1])
    alone = train(step_config(tiny_betons, tmp_path / "alone", "speedrun", epochs=2, seed=1, **IDEAS))
    assert len(built) == 2  # one for the sweep, one alone
    assert without_times(sweep[1]["history"]) == without_times(alone["history"])


def test_a_checkpoint_from_before_the_options_resumes_as_it_would_have(tiny_betons, tmp_path, monkeypatch):
    """A checkpoint written before these options: none in its config, no lookahead state, no group scales."""
    whole = whole_and_cut(
        tmp_path,
        monkeypatch,
        lambda name: step_config(  # as the recipe was before them
            tiny_betons, tmp_path / name, "speedrun", epochs=3, late_evals_from=0, **OFF
        ),
    )
    path = tmp_path / "cut" / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    for option in IDEAS:
        del state["config"]["training"][option]
    del state["lookahead"]
    for part in state["optimizer"]["optimizers"]:
        for group in part["param_groups"]:
            del group["lr_scale"], group["lr_epochs"]
    torch.save(state, path)
    resumed = train({"training": {"resume": str(tmp_path / "cut")}, "logging": {"progress": False}})
    assert without_times(resumed["history"]) == without_times(whole["history"])


def test_with_the_options_off_a_run_computes_what_it_did_before_to_the_bit(tiny_betons, tmp_path, monkeypatch):
    """Before the options, a run's LR table had one column, written into every param group; the record
    optimizer had one SGD group. Now: one column a group, and groups split only where an option is set."""
    default = train(step_config(tiny_betons, tmp_path / "default", "speedrun", epochs=3, **OFF))
    # the whitening bias in a group of its own, trained to the end: the same numbers from two SGD groups
    split = train(step_config(tiny_betons, tmp_path / "split", "speedrun", epochs=3, **OFF, whiten_bias_epochs=3))
    with monkeypatch.context() as patch:  # the one-column table of before
        patch.setattr(
            train_module,
            "group_lr_table",
            lambda lrs, groups, steps_per_epoch, device: torch.tensor(lrs, device=device),
        )
        before = train(step_config(tiny_betons, tmp_path / "before", "speedrun", epochs=3, **OFF))
    for run in (split, before):
        assert without_times(run["history"]) == without_times(default["history"])
        assert run["final_test_acc"] == default["final_test_acc"]
