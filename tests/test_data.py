"""speedrun.data.betons: betons load exactly into tensors, and anything else fails with a BetonError saying
what to run."""

import shutil

import numpy as np
import pytest
import torch
from conftest import learnable_arrays

from speedrun.data.betons import BetonError, CifarData, load_beton, load_cifar_betons, read_beton_index


def write_test_beton(path, fields, samples, num_workers=1):
    from ffcv.writer import DatasetWriter

    DatasetWriter(str(path), fields, num_workers=num_workers).from_indexed_dataset(samples, chunksize=100)
    return path


def cifar_fields(write_mode="raw"):
    from ffcv.fields import IntField, RGBImageField

    return {"image": RGBImageField(write_mode=write_mode), "label": IntField()}


def test_load_beton_returns_exact_contiguous_tensors(tiny_betons, tiny_arrays):
    images, labels = load_beton(tiny_betons[0], device="cpu")
    assert images.dtype == torch.uint8 and images.shape == (256, 32, 32, 3) and images.is_contiguous()
    assert labels.dtype == torch.int64 and labels.shape == (256,)
    assert images.device.type == labels.device.type == "cpu"
    np.testing.assert_array_equal(images.numpy(), tiny_arrays.train_images)
    np.testing.assert_array_equal(labels.numpy(), tiny_arrays.train_labels)


def test_load_cifar_betons_and_default_device(tiny_betons, tiny_arrays):
    data = load_cifar_betons(*tiny_betons)
    assert isinstance(data, CifarData)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert {t.device.type for t in data} == {expected}
    np.testing.assert_array_equal(data.test_labels.cpu().numpy(), tiny_arrays.test_labels)
    assert data.train_images.shape[0] == 256 and data.test_images.shape[0] == 128


def test_images_scattered_over_pages_and_workers(tmp_path):
    """Enough images to fill several 8 MiB pages, written by two interleaving workers."""
    arrays = learnable_arrays(6000, 10, seed=3)
    samples = list(zip(arrays.train_images, arrays.train_labels.tolist()))
    path = write_test_beton(tmp_path / "big.beton", cifar_fields(), samples, num_workers=2)
    pointers, _ = read_beton_index(path)
    assert (np.diff(pointers) != 32 * 32 * 3).sum() >= 3  # the layout really has several runs
    images, labels = load_beton(path, "cpu")
    np.testing.assert_array_equal(images.numpy(), arrays.train_images)
    np.testing.assert_array_equal(labels.numpy(), arrays.train_labels)


def test_missing_beton(tmp_path):
    with pytest.raises(BetonError, match="does not exist: run `python write_beton.py`"):
        load_beton(tmp_path / "nope.beton", "cpu")
    assert issubclass(BetonError, ValueError)


@pytest.mark.parametrize("keep_bytes", [10, 3000, -5000])
def test_truncated_beton(tiny_betons, tmp_path, keep_bytes):
    path = tmp_path / "cut.beton"
    shutil.copy(tiny_betons[1], path)
    size = path.stat().st_size
    with open(path, "r+b") as file:
        file.truncate(keep_bytes % size)
    with pytest.raises(BetonError, match="truncated.*python write_beton.py"):
        load_beton(path, "cpu")


def test_beton_with_other_fields(tmp_path):
    from ffcv.fields import FloatField

    image = np.zeros((32, 32, 3), np.uint8)
    path = write_test_beton(tmp_path / "extra.beton", {**cifar_fields(), "weight": FloatField()}, [(image, 1, 0.5)] * 4)
    with pytest.raises(
        BetonError,
        match=r"fields \{'image': 'RGBImageField', 'label': 'IntField', "
        r"'weight': 'FloatField'\}.*python write_beton.py",
    ):
        load_beton(path, "cpu")


def test_beton_with_jpeg_or_other_sizes_or_labels(tmp_path):
    image = np.full((32, 32, 3), 128, np.uint8)
    jpeg = write_test_beton(tmp_path / "jpeg.beton", cifar_fields("jpg"), [(image, 1)] * 4)
    with pytest.raises(BetonError, match="4 images as JPEG.*write_mode='raw'"):
        load_beton(jpeg, "cpu")
    small = write_test_beton(tmp_path / "small.beton", cifar_fields(), [(image, 1), (image[:16, :20], 1)])
    with pytest.raises(BetonError, match="1 images that are not 32x32, e.g. image 1 is 20x16"):
        load_beton(small, "cpu")
    labels = write_test_beton(tmp_path / "labels.beton", cifar_fields(), [(image, 3), (image, 10), (image, -1)])
    with pytest.raises(BetonError, match=r"2 labels outside \[0, 10\), e.g. 10"):
        load_beton(labels, "cpu")
