"""Write CIFAR-10 as two FFCV betons (train and test) of raw 32x32 RGB images and labels.

    python write_beton.py                                   # download the official binary archive
    python write_beton.py --data.source cifar-10-binary.tar.gz
    python write_beton.py --data.source IMAGES --data.train_dataset train.beton --data.val_dataset test.beton

Each beton gets a JSON description beside it (source, checksum, counts); running again with the same
source and intact betons does nothing.
"""

import contextlib
import importlib.metadata
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
from multiprocessing import shared_memory
from pathlib import Path

import numpy as np

from speedrun.data.betons import IMAGE_SHAPE, import_ffcv
from speedrun.data.cifar import SourceError
from speedrun.data.sources import BINARY_MD5, BINARY_URL, file_digest, read_source, source_checksum
from speedrun.runs.config import parse_args
from speedrun.system.atomic import replacing, write_text


class OutputError(Exception):
    """A beton that cannot be written where asked."""


def write_betons(
    source="download",
    train_path="data/cifar10_train.beton",
    val_path="data/cifar10_test.beton",
    cache_dir="data/cache",
    trust_pickles=False,
    num_workers=None,
    url=BINARY_URL,
    md5=BINARY_MD5,
):
    """Write the train and test betons from `source`; False when they already hold it (nothing done)."""
    outputs = {"train": Path(train_path), "test": Path(val_path)}
    _check_outputs(list(outputs.values()))
    checksum = source_checksum(source, url, md5)
    if all(_already_written(path, checksum) for path in outputs.values()):
        print(f"skipped: {train_path} and {val_path} already hold {source} ({checksum})")
        return False
    num_workers = num_workers or os.cpu_count()
    arrays = read_source(source, cache_dir, trust_pickles, num_workers, url, md5)
    for split, path in outputs.items():
        images, labels = getattr(arrays, f"{split}_images"), getattr(arrays, f"{split}_labels")
        counts = np.bincount(labels, minlength=len(arrays.classes)).tolist()
        description = {
            "split": split,
            "count": len(labels),
            "image_size": list(IMAGE_SHAPE),
            "classes": arrays.classes,
            "class_counts": dict(zip(arrays.classes, counts)),
            "source": arrays.info,
            "ffcv_version": importlib.metadata.version("ffcv"),
        }
        write_beton(path, images, labels, description, num_workers)
        print(f"wrote {path}: {len(labels)} {split} images")
    return True


def write_beton(path, images, labels, description, num_workers=1):
    """Write one beton to a temporary name and rename it, then its JSON description beside it."""
    path = Path(path)
    _check_free_space(path, images, num_workers)
    with replacing(path) as temporary:
        _write_with_ffcv(temporary, images, labels, num_workers)
        description = {**description, "beton_sha256": file_digest(temporary, "sha256")}
    write_text(_json_path(path), json.dumps(description, indent=2) + "\n")


def _write_with_ffcv(path, images, labels, num_workers):
    ffcv_fields = import_ffcv("ffcv.fields")
    fields = {"image": ffcv_fields.RGBImageField(write_mode="raw"), "label": ffcv_fields.IntField()}
    writer = import_ffcv("ffcv.writer").DatasetWriter(str(path), fields, num_workers=num_workers)
    children = set(multiprocessing.active_children())
    try:
        # Long chunks keep each worker's images back to back in the file, which makes loading fast.
        writer.from_indexed_dataset(_Samples(images, labels), chunksize=1000)
    except BaseException:
        _stop_writer(writer, children)
        raise


def _stop_writer(writer, children_before):
    """After an error or Ctrl-C mid-write: stop ffcv's worker processes and free its shared memory."""
    for child in set(multiprocessing.active_children()) - children_before:
        child.terminate()
        child.join()
    metadata = getattr(writer, "metadata_sm", None)
    if isinstance(metadata, shared_memory.SharedMemory):
        with contextlib.suppress(OSError, BufferError):
            metadata.close()
        with contextlib.suppress(OSError):
            metadata.unlink()


class _Samples:
    """The indexable dataset ffcv's writer wants: (image HWC uint8, label int) pairs."""

    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return self.images[index], int(self.labels[index])


def _check_outputs(paths):
    """Fail before any work when the betons cannot be written."""
    if paths[0].resolve() == paths[1].resolve():
        raise OutputError(f"the train and test betons are the same file {paths[0]}; give two paths")
    for path in paths:
        if path.is_dir():
            raise OutputError(f"{path} is a folder; give a file name for the beton")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tempfile.TemporaryFile(dir=path.parent).close()
        except OSError as error:
            raise OutputError(f"cannot write betons into {path.parent}: {error.strerror}") from error


def _check_free_space(path, images, num_workers):
    # ffcv writes whole 8 MiB pages: each worker's last one is mostly padding, and one aligns the start.
    needed = images.nbytes + (num_workers + 2) * (8 << 20)
    free = shutil.disk_usage(path.parent).free
    if free < needed:
        raise OutputError(f"not enough disk space for {path}: needs about {needed >> 20} MiB, {free >> 20} MiB free")


def _already_written(path, checksum):
    """Whether `path` is intact (matches its JSON) and was written from the source with `checksum`."""
    try:
        description = json.loads(_json_path(path).read_text())
        return description["source"]["checksum"] == checksum and description["beton_sha256"] == file_digest(
            path, "sha256"
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _json_path(path):
    return path.with_name(path.name + ".json")


def main(argv=None):
    data = parse_args(argv, description=__doc__, sections=["data"])["data"]
    try:
        write_betons(
            data["source"],
            data["train_dataset"],
            data["val_dataset"],
            data["cache_dir"],
            data["trust_pickles"],
            data["num_workers"],
        )
    except (SourceError, OutputError) as error:
        sys.exit("error: " + " ".join(str(error).split()))  # one line, whatever the message holds
    except KeyboardInterrupt:
        sys.exit("interrupted: betons already complete are kept, the one being written was removed")


if __name__ == "__main__":
    main()
