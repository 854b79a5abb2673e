"""Every whole step can be replayed as a CUDA graph: proven on the CPU from what the compiler is handed.

Inductor's CUDA-graph trees skip a graph that mutates an input which is not a static input ("skipping
cudagraphs due to mutated inputs"), and the step then runs as plain inductor. Whether that happens is
decided before inductor, by aot_autograd's forward metadata: which inputs are static
(`static_input_indices`: parameters, and what `torch._dynamo.mark_static_address` marked) and which the
graph mutates. A backend that reads that metadata and compiles nothing (benchmarks/graph_inputs.py, which
also writes the counts per case) shows on a CPU what a GPU would do.
"""

import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as torch_dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from graph_inputs import CASES, TINY, GraphInputs, step_graph  # noqa: E402

from speedrun.runs.config import merge  # noqa: E402
from speedrun.system import device as device_module  # noqa: E402
from speedrun.system.distributed import Dist  # noqa: E402
from speedrun.train import train  # noqa: E402


@pytest.fixture
def graph_inputs(monkeypatch):
    recorder = GraphInputs()
    monkeypatch.setattr(device_module, "COMPILE_BACKEND", recorder.backend)
    torch._dynamo.reset()
    yield recorder
    torch._dynamo.reset()


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


@pytest.mark.parametrize("overrides", list(CASES.values()), ids=list(CASES))
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
