"""Every whole step can be replayed as a CUDA graph: proven on the CPU from what the compiler is handed.

Inductor's CUDA-graph trees skip a graph that mutates an input which is not a static input ("skipping
cudagraphs due to mutated inputs"), and the step then runs as plain inductor. Whether that happens is
decided before inductor, by aot_autograd's forward metadata: which inputs are static
(`static_input_indices`: parameters, and what `torch._dynamo.mark_static_address` marked) and which the
graph mutates. A backend that reads that metadata and compiles nothing shows on a CPU what a GPU would do.
"""

import pytest
import torch
import torch.distributed as torch_dist
from torch._dynamo.backends.common import aot_autograd
from torch._guards import TracingContext

from speedrun.engine.resolution import parse_sides
from speedrun.engine.step import build_step
from speedrun.nets.model import build_model
from speedrun.optim.optimizers import group_lr_table, param_groups
from speedrun.runs.config import merge, resolve_config
from speedrun.system import device as device_module
from speedrun.system.device import policy_from_config
from speedrun.system.distributed import Dist
from speedrun.train import train

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


@pytest.fixture
def graph_inputs(monkeypatch):
    recorder = GraphInputs()
    monkeypatch.setattr(device_module, "COMPILE_BACKEND", recorder.backend)
    torch._dynamo.reset()
    yield recorder
    torch._dynamo.reset()


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


def test_the_default_command_mutates_only_static_inputs(graph_inputs, tiny_betons, tmp_path):
    """The default command (Adam, weight average 0.99) through train(): the step, then evaluation. Before
    the weight average paired its copy with the parameters themselves, with state_dict()'s detached
    aliases of them, the step's graph had 0 static inputs of 174, 170 of them mutated."""
    config = merge(
        TINY,
        {
            "data": {"train_dataset": tiny_betons[0], "val_dataset": tiny_betons[1]},
            "training": {"epochs": 1, "batch_size": 64, "tta": 0},
            "lr": {"lr_max": 0.02},
            "logging": {"folder": str(tmp_path), "progress": False, "plots": False, "checkpoint": "none"},
        },
        strict=False,
    )
    train(config)
    step_graph_record = max(graph_inputs.graphs, key=lambda graph: len(graph["mutated"]))
    assert len(step_graph_record["mutated"]) > 100  # parameters, Adam's moments and step counts, the average
    assert graph_inputs.unpinned() == [[] for _ in graph_inputs.graphs]


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({}, id="adam-weight-average"),
        pytest.param({"training": {"lookahead": 2}}, id="lookahead"),
        pytest.param({"training": {"lookahead": 2, "ema": 0.9, "optimizer": "sgd"}}, id="sgd-lookahead-average"),
        pytest.param({"training": {"recipe": "speedrun", "batch_size": 16}}, id="speedrun-recipe"),
        pytest.param(
            {"training": {"recipe": "speedrun", "batch_size": 16, "whiten_bias_epochs": 1, "lookahead": 2}},
            id="speedrun-recipe-lookahead",
        ),
        pytest.param(
            {"training": {"recipe": "speedrun", "batch_size": 16, "resolutions": "24,32", "epochs": 2}},
            id="resolution-curriculum",
        ),
    ],
)
def test_every_whole_step_mutates_only_static_inputs(graph_inputs, overrides):
    step_graph(overrides)
    sides = len(str(overrides.get("training", {}).get("resolutions", "32")).split(","))
    assert len(graph_inputs.graphs) == sides  # one graph a side, nothing else compiled
    assert all(graph["mutated"] for graph in graph_inputs.graphs)
    assert graph_inputs.unpinned() == [[] for _ in range(sides)]


@pytest.fixture
def one_process_group(tmp_path):
    """A gloo process group of this process alone: the torchrun step's gradient averaging traces its
    collective into the graph the same way whatever the group's size."""
    torch_dist.init_process_group("gloo", rank=0, world_size=1, init_method=f"file://{tmp_path / 'rendezvous'}")
    yield
    torch_dist.destroy_process_group()


@pytest.mark.parametrize("recipe", ["seed", "speedrun"])
def test_the_torchrun_step_mutates_only_static_inputs(graph_inputs, one_process_group, recipe):
    step_graph({"training": {"recipe": recipe, "batch_size": 16}}, Dist(rank=0, world=2, device=torch.device("cpu")))
    assert [graph["all_reduce"] for graph in graph_inputs.graphs] == [True]  # the gradients averaged in the graph
    assert graph_inputs.unpinned() == [[]]
