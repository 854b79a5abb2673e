"""Checkpoints: written atomically, loaded with `weights_only=True`, checked against the net they are for.

A checkpoint holds only tensors, numbers, strings, lists and dicts (so the safe loader accepts it):
the model, every optimizer, the epoch and step reached, the state of every random generator, the
metrics so far and the resolved config. `checkpoint.pt` is the newest; a run that checkpoints every
epoch keeps the one before it as `checkpoint.prev.pt`, so a crash while writing can never leave it
without a good checkpoint. A run that writes one checkpoint, at its end, keeps just that file (a
sweep of hundreds of seeds would otherwise keep twice the disk it needs).
"""

import errno
import os

import torch

from speedrun.system.atomic import replacing

FORMAT = "speedrun-checkpoint-1"
LATEST, PREVIOUS = "checkpoint.pt", "checkpoint.prev.pt"


class CheckpointError(ValueError):
    pass


def model_signature(model):
    """Parameter and buffer names with their shapes: two nets match when these do."""
    return {name: list(t.shape) for name, t in model.state_dict().items()}


def save_checkpoint(folder, state, keep_previous=True):
    """Write `state` to folder/checkpoint.pt via a temporary file; keep the previous one if asked."""
    path = os.path.join(folder, LATEST)
    try:
        with replacing(path) as temporary:
            torch.save({"format": FORMAT, **state}, temporary)
            if keep_previous and os.path.exists(path):
                os.replace(path, os.path.join(folder, PREVIOUS))
    except OSError as error:  # the temporary is gone, the old checkpoints are as they were
        if error.errno == errno.ENOSPC:
            raise OSError(
                errno.ENOSPC, f"no space left to write a checkpoint in {folder}; the previous checkpoint is intact"
            ) from error
        raise
    return path


def find_checkpoint(folder):
    """The newest readable checkpoint path in a run folder, or a clear error."""
    for name in (LATEST, PREVIOUS):
        path = os.path.join(folder, name)
        if os.path.exists(path):
            return path
    raise CheckpointError(
        f"no checkpoint in {folder} (expected {LATEST}); was it started with this trainer and did it finish an epoch?"
    )


def load_checkpoint(path, model=None, map_location="cpu"):
    """Load safely; refuse corrupt files and checkpoints of another net."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(error).__name__}: {error})") from error
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a speedrun checkpoint")
    if model is not None:
        expected, found = model_signature(model), state["signature"]
        if expected != found:
            differ = sorted(k for k in set(expected) | set(found) if expected.get(k) != found.get(k))
            raise CheckpointError(
                f"{path} holds another net ({len(differ)} tensors differ, e.g. "
                f"{differ[0]}: checkpoint {found.get(differ[0])}, "
                f"model {expected.get(differ[0])})"
            )
    return state
