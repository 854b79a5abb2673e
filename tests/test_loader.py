"""The on-device loader's state: saved and restored through one method, across loaders and devices."""

import copy

import pytest
import torch

from speedrun.data.betons import CifarData
from speedrun.data.loader import Loader
from speedrun.runs.config import defaults, merge


def tiny_loader(seed=0, **augment):
    labels = torch.arange(96) % 10
    images = torch.randint(0, 256, (96, 32, 32, 3), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    cfg = merge(defaults(), {"training": {"batch_size": 32, "seed": seed}, "augment": {"impl": "torch", **augment}})
    return Loader(CifarData(images, labels, images[:10], labels[:10]), cfg, torch.device("cpu"))


def draw(loader, steps):
    return [tuple(t.clone() for t in loader(epoch, step)) for epoch, step in steps]


def same(a, b):
    return all(torch.equal(x, y) for pair_a, pair_b in zip(a, b) for x, y in zip(pair_a, pair_b))


@pytest.mark.parametrize("flip_mode", ["random", "alternate"])
def test_loader_state_round_trip(flip_mode):
    loader = tiny_loader(flip_mode=flip_mode)
    fresh = loader.state_dict()
    assert fresh["epoch"] is None and fresh["order"] is None and fresh["device"] == "cpu"
    first = draw(loader, [(0, 0), (0, 1)])
    middle = copy.deepcopy(loader.state_dict())  # mid-epoch: epoch 0 and its order
    assert middle["epoch"] == 0 and sorted(middle["order"].tolist()) == list(range(96))
    rest = draw(loader, [(0, 2), (1, 0), (1, 1)])

    assert loader.load_state_dict(middle) is None
    assert same(draw(loader, [(0, 2), (1, 0), (1, 1)]), rest)  # the same batches again
    loader.load_state_dict(fresh)
    assert same(draw(loader, [(0, 0), (0, 1)]), first)

    other = tiny_loader(flip_mode=flip_mode)  # another loader takes the state over
    other.load_state_dict(middle)
    assert same(draw(other, [(0, 2), (1, 0), (1, 1)]), rest)


def test_a_checkpoints_loader_state_without_the_order_continues_at_the_next_epoch():
    loader = tiny_loader()
    draw(loader, [(0, 0), (0, 1), (0, 2)])
    state = {key: value for key, value in loader.state_dict().items() if key != "order"}  # an epoch's end
    following = draw(loader, [(1, 0), (1, 2)])
    resumed = tiny_loader()
    assert resumed.load_state_dict(state) is None
    assert same(draw(resumed, [(1, 0), (1, 2)]), following)


def test_a_state_from_another_device_type_reseeds_and_says_so():
    loader = tiny_loader(seed=3)
    draw(loader, [(0, 0)])
    state = {**loader.state_dict(), "device": "cuda", "generator": torch.zeros(16, dtype=torch.uint8)}
    note = loader.load_state_dict(state)
    assert "resuming a cuda run on cpu: batches from epoch 2 on" in note
    again = tiny_loader(seed=3)
    again.load_state_dict(state)
    assert same(draw(loader, [(1, 0)]), draw(again, [(1, 0)]))  # reseeded the same way


def test_a_step_outside_the_epoch_is_an_error_and_batches_come_in_one_buffer():
    loader = tiny_loader()  # 96 images, batch 32: steps 0-2
    first, _ = loader(0, 0)
    second, _ = loader(0, 2)
    assert second is first is loader.out  # a compiled step reads its inputs from one static buffer
    for step in (3, -1):
        with pytest.raises(IndexError, match="outside an epoch of 3 steps"):
            loader(0, step)
