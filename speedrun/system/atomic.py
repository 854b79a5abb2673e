"""Files written whole or not at all: to a temporary name beside the target, then renamed over it.

A reader never sees half a file, and a write cut short (a full disk, Ctrl-C, a failed check) leaves
the file that was there before. The temporary is hidden and named after the writing process, so two
processes writing the same file never write into one temporary.
"""

import contextlib
import glob
import os
from pathlib import Path


def temporary_path(path):
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


@contextlib.contextmanager
def replacing(path):
    """A temporary path to write `path`'s new content to: renamed to `path` when the block completes,
    removed when it raises."""
    temporary = temporary_path(path)
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_text(path, text):
    with replacing(path) as temporary:
        temporary.write_text(text)


def leftovers(folder, name):
    """The temporaries of `name` in `folder` that a killed process left behind."""
    return glob.glob(os.path.join(glob.escape(str(folder)), f".{glob.escape(name)}.*.tmp"))
