"""What inductor is handed for each whole step: every graph's inputs, the static ones and the mutated ones.

    python benchmarks/graph_inputs.py --out benchmarks/results/<device>-graph-inputs/graph_inputs.json

CUDA-graph trees skip a graph that mutates an input which is not static ("skipping cudagraphs due to
mutated inputs"), and the step then runs without CUDA graphs while a run asked for them. aot_autograd's
forward metadata decides it before inductor, so a backend that reads it and compiles nothing shows on a
CPU what a GPU would do. Each case builds a tiny step the way the trainer does (build_step, Step.pin) and
calls it once at each of its image sides; tests/test_graphable.py asserts on the same cases.
"""

import argparse
import json
import os
import sys

import torch
from torch._dynamo.backends.common import aot_autograd
from torch._guards import TracingContext

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from speedrun.engine.resolution import parse_sides  # noqa: E402
from speedrun.engine.step import build_step  # noqa: E402
from speedrun.nets.model import build_model  # noqa: E402
from speedrun.optim.optimizers import group_lr_table, param_groups  # noqa: E402
from speedrun.runs.config import merge, resolve_config  # noqa: E402
from speedrun.system import device as device_module  # noqa: E402
from speedrun.system.device import device_name, policy_from_config  # noqa: E402
from speedrun.system.distributed import Dist  # noqa: E402

TINY = {
    "model": {"width": 8},
    "training": {
        "batch_size": 16,
        "device": "cpu",
        "precision": "fp32",
        "compile": "on",
        "compile_mode": "whole-step",
        "compile_cache": "",
    },
}
# every recipe and option that changes the step's state, laid over TINY
CASES = {
    "adam-weight-average": {},  # the default command's optimizer and weight average
    "lookahead": {"training": {"lookahead": 2}},
    "sgd-lookahead-average": {"training": {"lookahead": 2, "ema": 0.9, "optimizer": "sgd"}},
    "speedrun-recipe": {"training": {"recipe": "speedrun", "batch_size": 16}},
    "speedrun-recipe-lookahead": {
        "training": {"recipe": "speedrun", "batch_size": 16, "whiten_bias_epochs": 1, "lookahead": 2}
    },
    "resolution-curriculum": {
        "training": {"recipe": "speedrun", "batch_size": 16, "resolutions": "24,32", "epochs": 2}
    },
}


class GraphInputs:
    """A torch.compile backend that records, for each graph, its inputs' count, the static ones and the
    mutated ones, as inductor would receive them, and runs the graph eagerly."""

    def __init__(self):
        self.graphs = []
        self.backend = aot_autograd(fw_compiler=self.forward)

    def forward(self, graph, inputs):
        meta = TracingContext.try_get().fw_metadata
        mutated = {i for i, info in enumerate(meta.input_info) if info.mutates_data or info.mutates_metadata}
        self.graphs.append(
            {
                "inputs": len(inputs),
                "static": set(meta.static_input_indices),
                "mutated": mutated,
                "all_reduce": "all_reduce" in graph.code,
            }
        )
        return graph

    def unpinned(self):
        """Per graph, the inputs it mutates that are not static: what would make CUDA graphs skip it."""
        return [sorted(graph["mutated"] - graph["static"]) for graph in self.graphs]

    def counts(self):
        """Per graph: inputs, static, mutated, and mutated but not static."""
        return [
            {"inputs": g["inputs"], "static": len(g["static"]), "mutated": len(g["mutated"]), "unpinned": len(u)}
            for g, u in zip(self.graphs, self.unpinned())
        ]


def step_graph(overrides, dist=None):
    """Build a run's step the way the trainer does (build_step, then Step.pin) and call it once at each
    of the run's image sides."""
    cfg = resolve_config(merge(TINY, overrides, strict=False))
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 32, 32, 3), dtype=torch.uint8, generator=generator)
    policy = policy_from_config(cfg["training"], torch.device("cpu"), tell=False)
    torch.manual_seed(0)
    model = policy.prepare(build_model(cfg, images))
    lr_table = group_lr_table([0.01] * 16, param_groups(model, cfg), steps_per_epoch=4)
    inputs = torch.randn(16, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    step = build_step(cfg, policy, dist or Dist(device=torch.device("cpu")), model, lr_table, inputs)
    step.pin(policy)
    for side in parse_sides(cfg["training"]["resolutions"]):
        step.train_step(inputs, torch.arange(16) % 10, side)
    return step


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the JSON file to write")
    args = parser.parse_args(argv)
    results = {}
    for name, overrides in CASES.items():
        recorder = GraphInputs()
        device_module.COMPILE_BACKEND = recorder.backend
        torch._dynamo.reset()
        step_graph(overrides)
        results[name] = recorder.counts()
        print(name, results[name])
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    document = {
        "device": device_name("cpu"),
        "torch": torch.__version__,
        "command": " ".join(["python", *sys.argv]),
        "cases": results,
    }
    with open(args.out, "w") as f:
        json.dump(document, f, indent=1)


if __name__ == "__main__":
    main()
