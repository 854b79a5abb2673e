"""What CIFAR-10 is, whatever it is read from: its classes, image shape and splits, the arrays a source
becomes, the error a bad source raises, and the checksum of a folder of files."""

import hashlib
from pathlib import PurePosixPath
from typing import NamedTuple

import numpy as np

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
IMAGE_SHAPE = (32, 32, 3)
IMAGE_BYTES = 32 * 32 * 3
SPLITS = ("train", "test")


class SourceError(Exception):
    """A CIFAR-10 source that cannot be read; the message says why and what to do."""


class CifarArrays(NamedTuple):
    train_images: np.ndarray  # uint8 [N, 32, 32, 3], RGB
    train_labels: np.ndarray  # int64 [N]
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: list
    info: dict  # kind, path or url, checksum ("md5:..." of an archive, "sha256:..." of a folder)


def folder_digest(names_and_hashes):
    """One sha256 over a folder's (relative name, file sha256) list, so renames count as changes."""
    digest = hashlib.sha256()
    for name, file_hash in names_and_hashes:
        digest.update(f"{PurePosixPath(name)}\0{file_hash}\n".encode())
    return "sha256:" + digest.hexdigest()
