"""Shared test fixtures: tiny learnable CIFAR-like data, in every on-disk form a source can take.

  tiny_arrays   (session) 256 train / 128 test images whose classes differ in colour and stripes
  tiny_betons   (session) (train_path, test_path) of betons written from them by write_betons
  make_binary_archive, make_python_archive, make_image_folder: builders that write the official
                archive layouts and image folders (real PNG/JPEG files) under tmp_path

Every test runs with `auto` unable to read the CPU (`precision_is_pinned`): a test that trains sets its
precision, so that its outcome is the same on a CPU with native bf16 and on one without.
"""

import io
import pickle
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from speedrun.data.cifar import CIFAR10_CLASSES, CifarArrays
from speedrun.system import device as device_module

# write_beton.py is a script at the repository root, not part of the package: make it importable.
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


# Ten well separated colours, one per class.
PALETTE = np.array(
    [
        [230, 25, 75],
        [60, 180, 75],
        [255, 225, 25],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
        [210, 245, 60],
        [0, 0, 128],
    ]
)


def learnable_images(labels, rng):
    """Each class: its own colour and stripe direction, plus noise, so a net learns it in an epoch."""
    y, x = np.mgrid[0:32, 0:32]
    angle = labels[:, None, None] * np.pi / 10
    stripes = np.sin(0.8 * (x * np.cos(angle) + y * np.sin(angle)))
    images = 0.7 * PALETTE[labels][:, None, None, :] + 40 * stripes[..., None] + 40
    images += rng.normal(0, 12, images.shape)
    return np.clip(images, 0, 255).astype(np.uint8)


def learnable_arrays(n_train=256, n_test=128, seed=0):
    rng = np.random.default_rng(seed)
    train_labels, test_labels = (rng.permutation(np.arange(n) % 10) for n in (n_train, n_test))
    return CifarArrays(
        learnable_images(train_labels, rng),
        train_labels,
        learnable_images(test_labels, rng),
        test_labels,
        list(CIFAR10_CLASSES),
        {},
    )


def write_tar(path, files):
    """A .tar.gz holding `files` ({member name: bytes}) and nothing else."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    return path


def split_batches(arrays):
    """(name stem, images, labels) of the five train batches and the test batch."""
    parts = zip(np.array_split(arrays.train_images, 5), np.array_split(arrays.train_labels, 5))
    batches = [(f"data_batch_{i}", images, labels) for i, (images, labels) in enumerate(parts, 1)]
    return batches + [("test_batch", arrays.test_images, arrays.test_labels)]


def to_planes(images):
    return images.transpose(0, 3, 1, 2).reshape(len(images), -1)


def binary_files(arrays):
    files = {
        f"cifar-10-batches-bin/{stem}.bin": np.concatenate(
            [labels[:, None].astype(np.uint8), to_planes(images)], axis=1
        ).tobytes()
        for stem, images, labels in split_batches(arrays)
    }
    files["cifar-10-batches-bin/batches.meta.txt"] = "\n".join(CIFAR10_CLASSES).encode() + b"\n"
    return files


def python_files(arrays):
    """Pickles shaped like the official ones: protocol 2, bytes keys, labels as a list."""
    files = {
        f"cifar-10-batches-py/{stem}": pickle.dumps(
            {
                b"batch_label": stem.encode(),
                b"labels": labels.tolist(),
                b"data": to_planes(images),
                b"filenames": [b"%d.png" % i for i in range(len(labels))],
            },
            protocol=2,
        )
        for stem, images, labels in split_batches(arrays)
    }
    files["cifar-10-batches-py/batches.meta"] = pickle.dumps(
        {b"label_names": [c.encode() for c in CIFAR10_CLASSES]}, protocol=2
    )
    return files


def write_image_folder(root, arrays, suffix=".png", classes=CIFAR10_CLASSES, **save_options):
    """ROOT/{train,test}/<class>/NNNN<suffix>, one real image file per image."""
    from PIL import Image

    root = Path(root)
    for split in ("train", "test"):
        images, labels = getattr(arrays, f"{split}_images"), getattr(arrays, f"{split}_labels")
        for name in classes:
            (root / split / name).mkdir(parents=True, exist_ok=True)
        for i, (image, label) in enumerate(zip(images, labels)):
            Image.fromarray(image).save(root / split / classes[label] / f"{i:04d}{suffix}", **save_options)
    return root


def cpu_flags_unread():
    raise AssertionError(
        "precision auto read this CPU's flags in a test: set --training.precision "
        "(or mark the test reads_cpu_flags when it tests auto on flags it fakes)"
    )


@pytest.fixture(autouse=True)
def precision_is_pinned(request, monkeypatch):
    """Precision `auto` is bf16 on a CPU with native bf16 and float32 on one without: a test that left it
    to `auto` would train differently from machine to machine. So,
    in this process, `auto` on a CPU fails instead of reading the flags (tests that start processes
    pass --training.precision themselves)."""
    if request.node.get_closest_marker("reads_cpu_flags") is None:
        monkeypatch.setattr(device_module, "cpu_flags", cpu_flags_unread)


@pytest.fixture(scope="session")
def tiny_arrays():
    return learnable_arrays()


@pytest.fixture(scope="session")
def tiny_archive(tmp_path_factory, tiny_arrays):
    """A binary-version archive of tiny_arrays."""
    return write_tar(tmp_path_factory.mktemp("archive") / "cifar-10-binary.tar.gz", binary_files(tiny_arrays))


@pytest.fixture(scope="session")
def tiny_betons(tmp_path_factory, tiny_archive):
    """(train_path, test_path): betons of tiny_arrays (256 train, 128 test), written by write_betons."""
    from write_beton import write_betons

    folder = tmp_path_factory.mktemp("betons")
    train_path, test_path = str(folder / "train.beton"), str(folder / "test.beton")
    write_betons(str(tiny_archive), train_path, test_path, num_workers=1)
    return train_path, test_path


@pytest.fixture
def make_binary_archive(tmp_path):
    return lambda arrays, name="cifar-10-binary.tar.gz": write_tar(tmp_path / name, binary_files(arrays))


@pytest.fixture
def make_python_archive(tmp_path):
    return lambda arrays, name="cifar-10-python.tar.gz": write_tar(tmp_path / name, python_files(arrays))


@pytest.fixture
def make_image_folder(tmp_path):
    return lambda arrays, name="images", **options: write_image_folder(tmp_path / name, arrays, **options)
