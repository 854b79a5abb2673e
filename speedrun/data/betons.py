"""CIFAR-10 betons into device memory: the one way training and benchmarks read data.

A beton written by write_beton.py holds raw 32x32x3 uint8 images and integer labels. Rather than
ffcv's Loader (a numba-compiled pipeline built for datasets that do not fit in memory), the whole
split is copied out of the memory-mapped file in a few large slices and sent to the device at once;
augmentation then happens on the device.
"""

import importlib
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from speedrun.data.cifar import IMAGE_BYTES, IMAGE_SHAPE
from speedrun.system.device import pick_device, torch_threads

NUM_CLASSES = 10
FIELDS = [("image", "RGBImageField"), ("label", "IntField")]  # in this order: metadata f0, f1
RAW_MODE = 1  # ffcv's RGBImageField mode for uncompressed pixels (0 is JPEG)
WRITE_HINT = "run `python write_beton.py` to write it (see --help for its options)"


class BetonError(ValueError):
    """A beton that is missing, damaged, or not a CIFAR-10 beton written by write_beton.py."""


class CifarData(NamedTuple):
    train_images: torch.Tensor  # uint8 [N, 32, 32, 3]
    train_labels: torch.Tensor  # int64 [N]
    test_images: torch.Tensor
    test_labels: torch.Tensor


def load_cifar_betons(train_path="data/cifar10_train.beton", val_path="data/cifar10_test.beton", device=None):
    """Both splits on `device` (default: cuda if available, else cpu)."""
    return CifarData(*load_beton(train_path, device), *load_beton(val_path, device))


def load_beton(path, device=None):
    """(images uint8 [N, 32, 32, 3] contiguous, labels int64 [N]) of one beton, on `device`."""
    device = pick_device(device)
    pinned = device.type == "cuda"  # page-locked memory lets the copy to the GPU run asynchronously
    pointers, labels = read_beton_index(path)
    images = torch.empty((len(labels),) + IMAGE_SHAPE, dtype=torch.uint8, pin_memory=pinned)
    gather_images(path, pointers, images.numpy())
    labels = torch.from_numpy(labels)
    return images.to(device, non_blocking=pinned), labels.to(device, non_blocking=pinned)


def import_ffcv(name):
    """Import an ffcv module on first use (ffcv takes seconds to import), keeping torch's thread
    count: ffcv's pipeline compiler sets it to one when imported."""
    with torch_threads():
        return importlib.import_module(name)


def read_beton_index(path):
    """(file offset of each image, labels int64) of a checked CIFAR-10 beton; raises BetonError."""
    Reader = import_ffcv("ffcv.reader").Reader

    path = Path(path)
    if not path.is_file():
        raise BetonError(f"beton {path} does not exist: {WRITE_HINT}")
    try:
        reader = Reader(str(path))
    except Exception as error:  # ffcv reports a damaged header in many ways
        raise BetonError(
            f"beton {path} is truncated or corrupt ({type(error).__name__}: {error}): {WRITE_HINT} again"
        ) from error
    kinds = {name: type(handler).__name__ for name, handler in reader.handlers.items()}
    if list(kinds.items()) != FIELDS:
        raise BetonError(
            f"beton {path} has fields {kinds}, expected image (RGBImageField) and label (IntField): {WRITE_HINT}"
        )
    if len(reader.metadata) != reader.num_samples or reader.num_samples == 0:
        raise BetonError(
            f"beton {path} is truncated or empty ({len(reader.metadata)} of "
            f"{reader.num_samples} image records): {WRITE_HINT} again"
        )
    images, labels = reader.metadata["f0"], reader.metadata["f1"].astype(np.int64)
    _check_images(path, images)
    _check_labels(path, labels)
    return images["data_ptr"].astype(np.int64), labels


def _check_images(path, images):
    raw = images["mode"] == RAW_MODE
    sized = (images["height"] == IMAGE_SHAPE[0]) & (images["width"] == IMAGE_SHAPE[1])
    if not raw.all():
        raise BetonError(
            f"beton {path} stores {np.sum(~raw)} images as JPEG; training needs raw pixels: "
            f"{WRITE_HINT} (it writes RGBImageField(write_mode='raw'))"
        )
    if not sized.all():
        i = np.flatnonzero(~sized)[0]
        raise BetonError(
            f"beton {path} holds {np.sum(~sized)} images that are not 32x32, e.g. image {i} "
            f"is {images['width'][i]}x{images['height'][i]}: {WRITE_HINT} from CIFAR-10"
        )
    end = int(images["data_ptr"].max()) + IMAGE_BYTES
    if end > os.path.getsize(path):
        raise BetonError(
            f"beton {path} is truncated: its images reach byte {end} but the file has "
            f"{os.path.getsize(path)}: {WRITE_HINT} again"
        )


def _check_labels(path, labels):
    outside = labels[(labels < 0) | (labels >= NUM_CLASSES)]
    if outside.size:
        raise BetonError(
            f"beton {path} has {outside.size} labels outside [0, {NUM_CLASSES}), e.g. "
            f"{outside[0]}: it is not CIFAR-10; {WRITE_HINT}"
        )


def gather_images(path, pointers, out):
    """Copy the image at each file offset into out [N, 32, 32, 3], one slice per run of neighbours.

    The writer lays images out back to back within a page, so offsets mostly step by one image; a
    run breaks only at page ends and where its worker processes interleave.
    """
    flat = out.reshape(len(pointers), IMAGE_BYTES)
    file = np.memmap(path, dtype=np.uint8, mode="r")
    breaks = np.flatnonzero(np.diff(pointers) != IMAGE_BYTES) + 1
    starts, ends = np.r_[0, breaks], np.r_[breaks, len(pointers)]
    for start, end, pointer in zip(starts.tolist(), ends.tolist(), pointers[starts].tolist()):
        flat[start:end] = file[pointer : pointer + (end - start) * IMAGE_BYTES].reshape(-1, IMAGE_BYTES)
    return out
