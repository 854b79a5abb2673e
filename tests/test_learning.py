"""The trainer must learn: ten classes of coloured shapes at random places, trained end to end.

The images are made here (five shapes x two colour families, random position, size and shade, on
noise), written to betons with write_beton.py and trained by `train()` with the seed recipe's
augmentation, schedule, optimizer and evaluation, at a narrower width (16) so that it fits a CPU
minute. A broken label, augmentation, normalisation, schedule or evaluation leaves it far below the
bar; only a working trainer gets there.
"""

import numpy as np
import pytest

import write_beton
from speedrun.train import train

SHAPES = ("square", "disc", "triangle", "bar", "cross")
COLOURS = np.array([[220, 60, 40], [40, 90, 230]])  # two families; each image's shade varies
TRAIN_IMAGES, TEST_IMAGES = 1024, 500


def shape_mask(shape, dy, dx, r):
    """Pixels of `shape` around a centre, from the offsets dy, dx of every pixel, radius r."""
    ay, ax = np.abs(dy), np.abs(dx)
    if shape == "square":
        return np.maximum(ay, ax) <= r
    if shape == "disc":
        return dy**2 + dx**2 <= r**2
    if shape == "triangle":
        return (ay <= r) & (ax <= (dy + r) / 2)
    if shape == "bar":
        return (ay <= r / 3) & (ax <= r)
    return ((ay <= r / 3) & (ax <= r)) | ((ax <= r / 3) & (ay <= r))  # cross


def shapes_dataset(count, seed):
    """(uint8 [count, 32, 32, 3] images, int64 labels): label = colour family * 5 + shape."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, count)
    images = rng.integers(0, 110, (count, 32, 32, 3)).astype(np.float64)  # noisy background
    yy, xx = np.mgrid[0:32, 0:32]
    for image, label in zip(images, labels):
        cy, cx, r = rng.uniform(10, 22), rng.uniform(10, 22), rng.uniform(5, 9)
        mask = shape_mask(SHAPES[label % 5], yy - cy, xx - cx, r)
        colour = COLOURS[label // 5] * rng.uniform(0.7, 1.1) + rng.integers(-25, 25, 3)
        image[mask] = colour
    return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.int64)


@pytest.fixture(scope="module")
def shape_betons(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shapes")
    paths = {}
    for split, count, seed in (("train", TRAIN_IMAGES, 0), ("test", TEST_IMAGES, 1)):
        images, labels = shapes_dataset(count, seed)
        paths[split] = str(folder / f"{split}.beton")
        write_beton.write_beton(paths[split], images, labels, {"source": "shapes"})
    return paths


def test_the_seed_recipe_learns_coloured_shapes(shape_betons, tmp_path):
    summary = train(
        {
            "training": {"epochs": 5, "batch_size": 64, "seed": 0, "device": "cpu", "precision": "fp32"},
            "model": {"width": 16},
            "lr": {"lr_max": 0.02},
            "data": {"train_dataset": shape_betons["train"], "val_dataset": shape_betons["test"]},
            "logging": {"folder": str(tmp_path / "run"), "plots": False, "progress": False, "checkpoint_every": 0},
        }
    )
    assert summary["final_test_acc"] >= 0.95, [round(h["test_acc"], 3) for h in summary["history"]]
