"""What a run keeps in its checkpoints, and how a resumed run takes it back."""

import sys
import threading

import torch

from speedrun.data.cifar import CIFAR10_CLASSES
from speedrun.optim.optimizers import load_optimizer_state
from speedrun.system import checkpoint


def checkpoint_due(options, epoch, epochs):
    """Whether the logging options' policy (every / last / none) writes a checkpoint after `epoch`."""
    every, last = options["checkpoint_every"], epoch + 1 == epochs
    if options["checkpoint"] == "every":
        return last or bool(every and (epoch + 1) % every == 0)
    return options["checkpoint"] == "last" and last


class CheckpointWriter:
    """Writes checkpoints one at a time, in `background` (a thread) or not. In the background the state
    is first copied to host memory (the live tensors train on meanwhile) and the file written while the
    next epoch runs: on a GPU the step does not wait for 100 MB to reach the disk. A write's error is
    raised by the next `write` or by `wait`, which a run calls before it ends."""

    def __init__(self, background):
        self.background, self.thread, self.error = background, None, None

    def write(self, folder, state, keep_previous):
        self.wait()
        if not self.background:
            checkpoint.save_checkpoint(folder, state, keep_previous=keep_previous)
            return
        snapshot = to_host(state)
        self.thread = threading.Thread(
            target=self._save, args=(folder, snapshot, keep_previous), name="checkpoint writer"
        )
        self.thread.start()

    def _save(self, *args):
        try:
            checkpoint.save_checkpoint(*args)
        except BaseException as error:  # handed to the run's thread, which raises it
            self.error = error

    def wait(self):
        if self.thread is not None:
            self.thread.join()
            self.thread = None
        error, self.error = self.error, None
        if error is not None:
            raise error


def to_host(value):
    """`value` (nested dicts and lists of tensors and plain values) with every tensor copied to the CPU."""
    if torch.is_tensor(value):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {key: to_host(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_host(item) for item in value)
    return value


def save_state(run, epoch):
    """After `epoch`, the checkpoint the logging options ask for. The loader's order is left out: the
    next epoch draws its own."""
    options = run.cfg["logging"]
    if run.log.folder and checkpoint_due(options, epoch, run.cfg["training"]["epochs"]):
        loader = run.batcher.state_dict()
        run.checkpoints.write(
            run.log.folder,
            {
                "signature": checkpoint.model_signature(run.model),
                "model": run.model.state_dict(),
                "optimizer": run.optimizer.state_dict(),
                "generator": loader["generator"],
                "generator_device": loader["device"],
                "average": run.average.average.state_dict() if run.average.average is not None else {},
                "lookahead": run.lookahead.state_dict(),
                "epoch": epoch + 1,
                "history": run.history,
                "config": run.cfg,
                "derived": run.derived,
                "classes": run.data_info.get("train_meta", {}).get("classes", CIFAR10_CLASSES),
            },
            options["checkpoint"] == "every",
        )


def generator_device(state):
    """The device type the saved generator state is for (older checkpoints: told by its size)."""
    if "generator_device" in state:
        return state["generator_device"]
    return "cpu" if len(state["generator"]) == len(torch.Generator().get_state()) else "cuda"


def loader_state(state):
    """The loader's state in a checkpoint: its generator, after the checkpoint's last epoch."""
    return {"generator": state["generator"], "device": generator_device(state), "epoch": state["epoch"] - 1}


def restore(run, state):
    """Put the checkpoint `state` back into `run`: weights, optimizer, average, lookahead, loader, history."""
    run.model.load_state_dict(state["model"])
    load_optimizer_state(run.optimizer, state["optimizer"])  # in place: the LR tensors a step reads stay its own
    if run.average.average is not None:
        run.average.average.load_state_dict(state["average"])
    run.lookahead.load_state_dict(state.get("lookahead", {}))  # none in a checkpoint from before lookahead
    run.start_epoch, run.history = state["epoch"], state["history"]
    note = run.batcher.load_state_dict(loader_state(state))
    if note and run.dist.is_main:
        print(note, file=sys.stderr)
    run.log.rewrite_metrics(run.history)
    run.train_seconds = run.history[-1]["train_seconds"] if run.history else 0.0
