"""The optimizers' state: allocated up front, loaded back in place, and updated by plain tensor ops in
a whole step as the optimizer's own step() updates it."""

import copy

import pytest
import torch

from speedrun.optim.optimizers import (
    WeightAverage,
    build_optimizer,
    load_optimizer_state,
    load_state_in_place,
    set_lr,
    step_tensors,
    traced_update,
)
from speedrun.runs.config import defaults, merge


def small_net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 3))


def take_step(net, optimizer, update, lr=0.01, seed=1):
    set_lr(optimizer, lr)
    inputs = torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
    net(inputs).square().mean().backward()
    with torch.no_grad():
        update()
    for p in net.parameters():
        p.grad = None


def configured(optimizer, traceable=False):
    net = small_net()
    cfg = merge(defaults(), {"training": {"optimizer": optimizer}})
    return net, build_optimizer(net.parameters(), cfg, traceable=traceable)


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "muon"])
def test_state_is_loaded_back_into_the_same_tensors(optimizer):
    net, opt = configured(optimizer)
    take_step(net, opt, opt.step)
    saved, held = copy.deepcopy(opt.state_dict()), step_tensors(opt)
    before = [tensor.clone() for tensor in held]
    take_step(net, opt, opt.step, lr=0.05, seed=2)
    assert any(not torch.equal(a, b) for a, b in zip(before, step_tensors(opt)))
    load_state_in_place(opt, saved)
    after = step_tensors(opt)
    assert all(a is b for a, b in zip(after, held)) and len(after) == len(held)
    assert all(torch.equal(a, b) for a, b in zip(after, before))


def test_loading_in_place_refuses_another_layout():
    _, sgd = configured("sgd")
    _, adam = configured("adam")
    with pytest.raises(ValueError, match="in place"):
        load_state_in_place(sgd, adam.state_dict())


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "muon"])
def test_traced_update_computes_the_optimizers_own_step(optimizer):
    eager_net, eager = configured(optimizer)
    traced_net, traced = configured(optimizer, traceable=True)
    torch._dynamo.reset()
    # traced as a whole step traces it (capturable Adam runs only so on a CPU); the eager backend
    # runs the captured ops as they are
    update = torch.compile(lambda: traced_update(traced), backend="eager", fullgraph=True)
    for step in range(3):
        take_step(eager_net, eager, eager.step, seed=step)
        take_step(traced_net, traced, update, seed=step)
    for a, b in zip(eager_net.parameters(), traced_net.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_the_weight_average_warms_its_decay_up_and_loads_back_in_place():
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    average = WeightAverage(net, 0.99)
    expected = [p.detach().clone() for p in net.parameters()]
    for n in range(1, 1001):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        average.advance(torch.tensor([n]))  # the schedule's step counter: an int64 of shape (1,)
        average.update()
        decay = min(0.99, (1 + n) / (10 + n))  # 0.18 at the first update, 0.99 from the 890th on
        expected = [decay * e + (1 - decay) * p.detach() for e, p in zip(expected, net.parameters())]
    for got, want in zip(average.net().parameters(), expected):  # float32 rounding over 1,000 updates
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
    assert average.weight.item() == pytest.approx(0.01)
    saved, held = copy.deepcopy(average.average.state_dict()), average.tensors()
    average.advance(torch.tensor([1001]))
    average.update()
    average.average.load_state_dict(saved)  # as the compile warm-up puts it back
    assert all(a is b for a, b in zip(average.tensors(), held))
    for got, want in zip(average.net().parameters(), saved.values()):
        assert torch.equal(got, want)


def test_no_average_is_the_weights_themselves():
    net = torch.nn.Linear(3, 2)
    average = WeightAverage(net, 0.0)
    average.advance(torch.tensor([1]))
    average.update()
    assert average.net() is net and average.tensors() == []


@pytest.mark.parametrize("optimizer", ["adam", "sgd", "muon"])
def test_a_checkpoint_loads_into_the_tensors_a_step_reads(optimizer):
    """Resuming copies the saved state and LRs into the optimizer's own tensors (a compiled step keeps
    reading them), also from a checkpoint whose LRs are floats; one of another layout loads as torch does."""
    net, opt = configured(optimizer)
    take_step(net, opt, opt.step, lr=0.03)
    saved = copy.deepcopy(opt.state_dict())
    net, fresh = configured(optimizer)
    held = [id(tensor) for tensor in step_tensors(fresh)]
    load_optimizer_state(fresh, saved)
    assert [id(tensor) for tensor in step_tensors(fresh)] == held
    assert all(torch.equal(a, b) for a, b in zip(step_tensors(fresh), step_tensors(opt)))
    for group in saved.get("optimizers", [saved])[-1]["param_groups"]:
        group["lr"] = 0.5  # a checkpoint from before LR tensors
    load_optimizer_state(fresh, saved)
    assert [id(tensor) for tensor in step_tensors(fresh)] == held
    assert float(fresh.param_groups[-1]["lr"]) == 0.5
    if optimizer == "sgd":
        torch_layout = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)  # no state yet: another layout
        load_optimizer_state(fresh, torch_layout.state_dict())
        assert fresh.state == {} or not any(fresh.state.values())
