"""Checkpoints: atomic writes that keep the previous one, safe loading, refusal of the wrong net."""

import errno

import pytest
import torch

from speedrun.nets.model import CustomResNet
from speedrun.system import checkpoint


def state_of(model, epoch):
    return {"signature": checkpoint.model_signature(model), "model": model.state_dict(), "epoch": epoch}


def test_round_trip_keeps_the_previous_checkpoint(tmp_path):
    model = CustomResNet(width=4)
    checkpoint.save_checkpoint(tmp_path, state_of(model, 1))
    checkpoint.save_checkpoint(tmp_path, state_of(model, 2))
    latest = checkpoint.load_checkpoint(tmp_path / checkpoint.LATEST, model)
    previous = checkpoint.load_checkpoint(tmp_path / checkpoint.PREVIOUS, model)
    assert (latest["epoch"], previous["epoch"]) == (2, 1)
    assert all(torch.equal(latest["model"][k], v) for k, v in model.state_dict().items())
    assert checkpoint.find_checkpoint(tmp_path).endswith(checkpoint.LATEST)
    torch.load(tmp_path / checkpoint.LATEST, weights_only=True)  # the safe loader accepts it


def test_a_single_checkpoint_replaces_the_last_and_keeps_no_previous(tmp_path):
    model = CustomResNet(width=4)
    for epoch in (1, 2):
        checkpoint.save_checkpoint(tmp_path, state_of(model, epoch), keep_previous=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [checkpoint.LATEST]
    assert checkpoint.load_checkpoint(checkpoint.find_checkpoint(tmp_path), model)["epoch"] == 2


def test_another_net_is_refused_naming_a_tensor(tmp_path):
    checkpoint.save_checkpoint(tmp_path, state_of(CustomResNet(width=4), 1))
    with pytest.raises(checkpoint.CheckpointError, match="holds another net"):
        checkpoint.load_checkpoint(tmp_path / checkpoint.LATEST, CustomResNet(width=8))


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04broken zip"])
def test_corrupt_files_are_refused(tmp_path, content):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(content)
    with pytest.raises(checkpoint.CheckpointError, match="not a readable checkpoint"):
        checkpoint.load_checkpoint(path)


def test_a_torch_file_that_is_not_ours_is_refused(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(checkpoint.CheckpointError, match="not a speedrun checkpoint"):
        checkpoint.load_checkpoint(tmp_path / "other.pt")


def test_a_full_disk_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    model = CustomResNet(width=4)
    checkpoint.save_checkpoint(tmp_path, state_of(model, 1))
    real_save = torch.save

    def disk_full(obj, path):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="previous checkpoint is intact"):
        checkpoint.save_checkpoint(tmp_path, state_of(model, 2))
    monkeypatch.setattr(torch, "save", real_save)
    assert checkpoint.load_checkpoint(tmp_path / checkpoint.LATEST, model)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [checkpoint.LATEST]


def test_a_background_writer_saves_the_state_as_it_was_and_raises_its_error_later(tmp_path, monkeypatch):
    """How a CUDA run checkpoints (the next epoch trains while the file is written), run on the CPU."""
    from speedrun.runs.run_state import CheckpointWriter

    weights, history = torch.ones(3), [{"epoch": 1.0}]
    writer = CheckpointWriter(background=True)
    writer.write(str(tmp_path), {"model": {"w": weights}, "history": history}, True)
    weights.add_(1)  # training goes on meanwhile
    history.append({"epoch": 2.0})
    writer.wait()
    state = checkpoint.load_checkpoint(checkpoint.find_checkpoint(str(tmp_path)))
    assert torch.equal(state["model"]["w"], torch.ones(3)) and state["history"] == [{"epoch": 1.0}]

    def full_disk(*args):
        raise OSError(28, "no space left")

    monkeypatch.setattr(checkpoint, "save_checkpoint", full_disk)
    writer.write(str(tmp_path), {"model": {"w": weights}}, True)  # returns: the error comes later
    with pytest.raises(OSError, match="no space left"):
        writer.wait()
    writer.wait()  # raised once
