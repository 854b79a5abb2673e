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

from speedrun.distributed import GlobalBatchNorm


def structure_run(out, *args):
    """Run under torchrun: train through `main` and write this rank's record to <out>/rank<R>.json and .pt."""
    from torch._dynamo.utils import counters

    from speedrun import device as device_module
    from speedrun import train as train_module
    from speedrun.opcount import OpCounter

    device_module.COMPILE_BACKEND = "aot_eager"
    record, runs = {"syncs": {}, "hot_loops": 0}, []
    real_warm_up, real_run_steps, real_prepare = train_module.warm_up, train_module.run_steps, train_module.prepare

    def warm_up(run):
        seconds = real_warm_up(run)
        record["warm"] = {"frames": counters["frames"]["total"], "breaks": sum(counters["graph_break"].values())}
        return seconds

    def run_steps(run, epoch, steps, *rest):
        with OpCounter() as counted:
            real_run_steps(run, epoch, steps, *rest)
        record["hot_loops"] += 1
        for name, count in counted.syncs.items():
            record["syncs"][name] = record["syncs"].get(name, 0) + count

    def prepare(*prepare_args):
        runs.append(real_prepare(*prepare_args))
        return runs[-1]

    train_module.warm_up, train_module.run_steps, train_module.prepare = warm_up, run_steps, prepare
    train_module.main(list(args))
    run, rank = runs[0], os.environ["RANK"]
    record.update(frames=counters["frames"]["total"], breaks=sum(counters["graph_break"].values()),
                  break_reasons=list(counters["graph_break"]), compile_mode=run.policy.compile_mode)
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump(record, f)
    torch.save(run.model.state_dict(), os.path.join(out, f"rank{rank}.pt"))


def run_two(betons, folder, recipe, *extra):
    """A 2-epoch run of `recipe` on 2 processes (4 steps an epoch), evaluating twice an epoch; the ranks'
    records."""
    args = common_args(betons, folder / "run", "--training.recipe", recipe, "--epochs", "2",
                       "--training.precision", "fp32", "--training.compile", "on",
                       "--training.late_evals_from", "1", "--training.late_evals_per_epoch", "2",
                       "--logging.progress", "false", "--logging.checkpoint", "none", *extra)
    result = torchrun(2, str(folder), *args, module=(__file__, "structure_run"), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads((folder / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    states = [torch.load(folder / f"rank{rank}.pt") for rank in (0, 1)]
    return records, states, result


@pytest.mark.parametrize("recipe, mode", [("seed", "default"), ("speedrun", "whole-step")])
def test_two_processes_compile_without_graph_breaks_recompilations_or_syncs(tiny_betons, tmp_path, recipe, mode):
    """Whole-step asked for under torchrun falls back to the forward compile, saying why, once."""
    records, states, result = run_two(tiny_betons, tmp_path, recipe, "--training.compile_mode", mode)
    fell_back = "compile mode whole-step falls back to default: DDP's gradient hooks do not run inside"
    assert result.stderr.count(fell_back) == (mode == "whole-step")
    assert result.stderr.count("speedrun: compiling (default) on warm-up batches") == 1  # rank 0 says so
    assert result.stderr.count("speedrun: compiled in ") == 1
    for record in records:
        assert record["compile_mode"] == "default"
        # synchronised batch norm and DDP leave the graph whole, from the first compilation on
        assert record["breaks"] == 0, record["break_reasons"]
        # everything is compiled in the warm-up; 2 epochs with 4 evaluations compile nothing more
        assert record["warm"]["frames"] > 0 and record["frames"] == record["warm"]["frames"]
        # nothing waits for the device between evaluations (the dispatch-level count of opcount.py)
        assert record["hot_loops"] == 4 and record["syncs"] == {}
    # no buffer broadcast, yet every rank ends with the same weights and batch-norm statistics
    assert states[0].keys() == states[1].keys()
    running = [name for name in states[0] if name.endswith(("running_mean", "running_var"))]
    assert running and all(states[0][name].abs().sum() > 0 for name in running)
    for name in states[0]:
        torch.testing.assert_close(states[1][name], states[0][name], rtol=0, atol=0, msg=name)


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
