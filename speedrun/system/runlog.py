"""The run folder: resolved config, one metrics line per evaluation, the final summary.

    runs/<name>/config.yaml  metrics.jsonl  summary.json  checkpoint.pt  *.png
Only the process that owns the run (rank 0) writes; the others get a RunLog with `folder=None`.
A folder holds one run: a new run refuses a folder that holds another, unless told to replace it.
"""

import contextlib
import importlib.metadata
import json
import os
import platform
import time

import torch
import yaml

from speedrun.system import atomic
from speedrun.system.checkpoint import LATEST, PREVIOUS

RUN_MARKERS = ("config.yaml", "metrics.jsonl", "summary.json", LATEST, PREVIOUS)
RUN_FILES = RUN_MARKERS + ("curves.png", "lr_test.json", "lr_test.png", "lr_schedule.png", "augmented.png")


class RunFolderInUse(ValueError):
    pass


def default_folder():
    return os.path.join("runs", time.strftime("%Y%m%d-%H%M%S"))


def claim_folder(folder, overwrite, owner):
    """Refuse a folder that already holds a run, unless `overwrite`: then the owner removes that run's files.

    Sharing a folder would append the new metrics to the old ones and leave the old checkpoint to be
    resumed as if it were the new run's.
    """
    found = [name for name in RUN_MARKERS if os.path.exists(os.path.join(folder, name))]
    if found and not overwrite:
        raise RunFolderInUse(
            f"{folder} already holds a run ({', '.join(found)}): continue it with --resume {folder}, "
            f"give another --logging.folder, or replace it with --logging.overwrite true"
        )
    if found and owner:
        for name in RUN_FILES:
            for path in [os.path.join(folder, name), *atomic.leftovers(folder, name)]:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)


def versions():
    """Versions of what a result depends on, for summary files and the leaderboard."""
    import numpy

    found = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "cuda": torch.version.cuda,
    }
    for name in ("triton", "ffcv"):  # installed metadata: ffcv 1.0.2's own __version__ says 0.0.3rc1
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:  # optional on this platform
            found[name] = None
    return found


def write_json(path, obj):
    """Write JSON whole or not at all (see speedrun.system.atomic)."""
    atomic.write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


class RunLog:
    def __init__(self, folder):
        self.folder = folder
        if folder:
            os.makedirs(folder, exist_ok=True)
            if not os.access(folder, os.W_OK):
                raise PermissionError(f"run folder {folder} is not writable")

    def path(self, name):
        return os.path.join(self.folder, name) if self.folder else None

    def write_config(self, config):
        if self.folder:
            with open(self.path("config.yaml"), "w") as f:
                yaml.safe_dump(config, f, sort_keys=True)

    def append_metrics(self, record):
        if self.folder:
            with open(self.path("metrics.jsonl"), "a") as f:
                f.write(json.dumps(record, sort_keys=True) + "\n")

    def rewrite_metrics(self, records):
        """Put the metrics back to `records` (a resumed run drops what it logged after its checkpoint)."""
        if self.folder:
            with open(self.path("metrics.jsonl"), "w") as f:
                f.writelines(json.dumps(record, sort_keys=True) + "\n" for record in records)

    def write_summary(self, summary):
        if self.folder:
            write_json(self.path("summary.json"), summary)
