"""The train step's structure under torchrun: 2 gloo processes on the CPU.

Each rank runs the real entry point, compiled with torch.compile's aot_eager backend (graph breaks,
guards and recompilations are dynamo's, decided before any backend), and records dynamo's counters
before and after the warm-up, the operations that would make the host wait for the device between
evaluations, and its final weights and batch-norm buffers.
"""

import json
import os
import sys

import pytest
import torch
from test_distributed import common_args, free_port, torchrun

from speedrun.system.distributed import GlobalBatchNorm


def structure_run(out, *args):
    """Run under torchrun: train through `main` and write this rank's record to <out>/rank<R>.json and .pt.

    Operations are counted in eager runs only: under a dispatch mode dynamo leaves every frame eager, so
    a counted compiled run would neither run nor recompile its graphs.
    """
    from torch._dynamo.utils import counters

    from speedrun import cli
    from speedrun import train as train_module
    from speedrun.engine import step as step_module
    from speedrun.system import device as device_module
    from speedrun.system.opcount import OpCounter

    device_module.COMPILE_BACKEND = "aot_eager"
    record, runs = {"syncs": {}, "hot_loops": 0}, []
    real_warm_up, real_run_steps, real_prepare = step_module.warm_up, train_module.run_steps, train_module.prepare

    def warm_up(run):
        seconds = real_warm_up(run)
        record["warm"] = {"frames": counters["frames"]["total"], "breaks": sum(counters["graph_break"].values())}
        return seconds

    def run_steps(run, epoch, steps, *rest):
        record["hot_loops"] += 1
        if run.policy.compile:
            return real_run_steps(run, epoch, steps, *rest)
        with OpCounter() as counted:
            real_run_steps(run, epoch, steps, *rest)
        for name, count in counted.syncs.items():
            record["syncs"][name] = record["syncs"].get(name, 0) + count

    def prepare(*prepare_args):
        runs.append(real_prepare(*prepare_args))
        return runs[-1]

    step_module.warm_up, train_module.run_steps, train_module.prepare = warm_up, run_steps, prepare
    cli.main(list(args))
    run, rank = runs[0], os.environ["RANK"]
    record.update(
        frames=counters["frames"]["total"],
        breaks=sum(counters["graph_break"].values()),
        break_reasons=list(counters["graph_break"]),
        compile_mode=run.policy.compile_mode,
        losses=[h["train_loss"] for h in run.history],
    )
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump(record, f)
    torch.save(run.model.state_dict(), os.path.join(out, f"rank{rank}.pt"))


def run_two(betons, folder, recipe, *extra):
    """A 2-epoch run of `recipe` on 2 processes (4 steps an epoch), evaluating twice an epoch; the ranks'
    records and final states, and the torchrun result."""
    args = common_args(
        betons,
        folder / "run",
        "--training.recipe",
        recipe,
        "--epochs",
        "2",
        "--lr.lr_max",
        "0.02",
        "--training.precision",
        "fp32",
        "--training.late_evals_from",
        "1",
        "--training.late_evals_per_epoch",
        "2",
        "--logging.progress",
        "false",
        "--logging.checkpoint",
        "none",
        *extra,
    )
    result = torchrun(2, str(folder), *args, module=(__file__, "structure_run"), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads((folder / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    states = [torch.load(folder / f"rank{rank}.pt") for rank in (0, 1)]
    return records, states, result


def assert_equal_on_both_ranks(states):
    """No buffer broadcast, yet every rank ends with the same weights and batch-norm statistics."""
    assert states[0].keys() == states[1].keys()
    running = [name for name in states[0] if name.endswith(("running_mean", "running_var"))]
    assert running and all(states[0][name].abs().sum() > 0 for name in running)
    for name in states[0]:
        torch.testing.assert_close(states[1][name], states[0][name], rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("recipe, mode", [("seed", "default"), ("speedrun", "whole-step")])
def test_two_processes_wait_for_nothing_break_no_graph_and_compile_nothing_after_warm_up(
    tiny_betons, tmp_path, recipe, mode
):
    """The eager run counts the operations that wait for the device; the compiled run (the forward
    inside DDP, or the whole step averaging its own gradients) counts dynamo's graph breaks and
    compilations, and computes the eager run's losses."""
    eager, eager_states, _ = run_two(tiny_betons, tmp_path / "eager", recipe, "--training.compile", "off")
    for record in eager:
        assert record["hot_loops"] == 4 and record["syncs"] == {}  # 2 epochs, 4 evaluations
    assert_equal_on_both_ranks(eager_states)

    compiled, states, result = run_two(
        tiny_betons, tmp_path / "compiled", recipe, "--training.compile", "on", "--training.compile_mode", mode
    )
    assert result.stderr.count(f"speedrun: compiling ({mode}) on warm-up batches") == 1  # rank 0 says so
    assert result.stderr.count("speedrun: compiled in ") == 1 and "falls back" not in result.stderr
    for record in compiled:
        assert record["compile_mode"] == mode and record["hot_loops"] == 4
        # synchronised batch norm, DDP and the gradient average leave the graph whole, from the start
        assert record["breaks"] == 0, record["break_reasons"]
        # everything is compiled in the warm-up; 2 epochs with 4 evaluations compile nothing more
        assert record["warm"]["frames"] > 0 and record["frames"] == record["warm"]["frames"]
    assert_equal_on_both_ranks(states)
    # as in the single-process tests: the first records within rounding, the rest within what a tiny
    # batch-norm net makes of last-bit differences
    losses = compiled[0]["losses"], eager[0]["losses"]
    assert losses[0][0] == pytest.approx(losses[1][0], rel=4e-3)
    assert losses[0] == pytest.approx(losses[1], rel=0.1)


def averaging_check(out):
    """Run under torchrun: each rank's gradients are its rank + 1 and 10 * (rank + 1); the compiled
    average (fullgraph: no break) must leave their means on every rank."""
    from speedrun.engine.step import average_gradients
    from speedrun.system import distributed

    dist = distributed.setup("cpu", 2)
    params = [torch.nn.Parameter(torch.zeros(3, 2)), torch.nn.Parameter(torch.zeros(5))]
    for scale, p in zip((1, 10), params):
        p.grad = torch.full_like(p, scale * (dist.rank + 1.0))
    torch.compile(average_gradients, backend="aot_eager", fullgraph=True)(params, dist.world)
    torch.save([p.grad for p in params], os.path.join(out, f"grads{dist.rank}.pt"))
    distributed.teardown()


def test_whole_step_gradient_average_is_the_mean_over_ranks_in_one_graph(tmp_path):
    result = torchrun(2, str(tmp_path), module=(__file__, "averaging_check"), timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    for rank in (0, 1):
        small, large = torch.load(tmp_path / f"grads{rank}.pt")
        torch.testing.assert_close(small, torch.full((3, 2), 1.5))
        torch.testing.assert_close(large, torch.full((5,), 15.0))


def test_synchronised_batch_norm_compiles_as_one_graph_forward_and_backward():
    """fullgraph=True turns any graph break into an error (torch.distributed.nn's all-reduce and SyncBatchNorm
    make one); a one-member gloo group runs the collectives."""
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        x = torch.randn(8, 4, 5, 5, requires_grad=True)
        eager, layer = GlobalBatchNorm(4), GlobalBatchNorm(4)
        torch._dynamo.reset()
        compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)  # backward: traced by aot autograd
        outputs = [norm(x) for norm in (compiled, eager)]
        grads = [torch.autograd.grad(y.square().sum(), x)[0] for y in outputs]
        torch.testing.assert_close(outputs[0], outputs[1])
        torch.testing.assert_close(grads[0], grads[1])
        torch.testing.assert_close(layer.running_var, eager.running_var)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":  # torchrun entry
    globals()[sys.argv[1]](*sys.argv[2:])
