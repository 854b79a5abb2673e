"""read_source: every kind of source round trips exactly, and every bad input fails with a clear SourceError."""

import hashlib
import pickle
import struct
import tarfile

import numpy as np
import pytest
from conftest import binary_files, learnable_arrays, python_files, split_batches, to_planes, write_tar
from PIL import Image

from speedrun.data import image_folder, sources
from speedrun.data.cifar import CIFAR10_CLASSES, SourceError
from speedrun.data.sources import read_source, source_checksum


@pytest.fixture(scope="module")
def small():
    """20 train / 10 test images: two per class, enough for every layout."""
    return learnable_arrays(20, 10, seed=1)


def assert_same(arrays, expected):
    for name in ("train_images", "train_labels", "test_images", "test_labels"):
        got, want = getattr(arrays, name), getattr(expected, name)
        assert got.dtype == want.dtype and got.shape == want.shape, name
        np.testing.assert_array_equal(got, want, err_msg=name)
    assert arrays.train_images.flags.c_contiguous and arrays.train_labels.dtype == np.int64


def md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def extract(archive, folder):
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")
    return folder


# --- official archives and folders --------------------------------------------------------------


def test_binary_archive_round_trip(make_binary_archive, small, tmp_path):
    archive = make_binary_archive(small)
    arrays = read_source(str(archive), tmp_path / "cache")
    assert_same(arrays, small)
    assert arrays.classes == CIFAR10_CLASSES
    assert arrays.info == {"kind": "binary-archive", "path": str(archive), "checksum": f"md5:{md5(archive)}"}
    assert source_checksum(str(archive)) == arrays.info["checksum"]


def test_binary_folder_round_trip_from_top_or_inner_folder(make_binary_archive, small, tmp_path):
    folder = extract(make_binary_archive(small), tmp_path / "extracted")
    top, inner = read_source(str(folder)), read_source(str(folder / "cifar-10-batches-bin"))
    assert_same(top, small)
    assert_same(inner, small)
    assert top.info["kind"] == "binary-folder"
    assert top.info["checksum"] == inner.info["checksum"] == source_checksum(str(folder))
    assert top.info["checksum"].startswith("sha256:")


def test_python_archive_needs_official_checksum_or_trust(make_python_archive, small, monkeypatch):
    archive = make_python_archive(small)
    with pytest.raises(SourceError, match="trust_pickles") as error:
        read_source(str(archive))
    assert md5(archive) in str(error.value) and sources.PYTHON_MD5 in str(error.value)
    arrays = read_source(str(archive), trust_pickles=True)
    assert_same(arrays, small)
    assert arrays.info["kind"] == "python-archive"
    monkeypatch.setattr(sources, "PYTHON_MD5", md5(archive))  # as if this were the official archive
    assert_same(read_source(str(archive)), small)


def python2_batch(data, labels):
    """A batch pickled the way the official files were: Python 2 strings, numpy.core names."""

    def string(b):
        return b"T" + struct.pack("<i", len(b)) + b

    return b"".join(
        [
            b"\x80\x02}(",
            string(b"data"),
            b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85",
            string(b"b"),
            b"\x87R(K\x01",
            b"J" + struct.pack("<i", len(data)),
            b"J" + struct.pack("<i", data.shape[1]),
            b"\x86",
            b"cnumpy\ndtype\n",
            string(b"u1"),
            b"K\x00K\x01\x87R(K\x03",
            string(b"|"),
            b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89",
            string(data.tobytes()),
            b"tb",
            string(b"labels"),
            b"](",
            b"".join(b"K" + bytes([label]) for label in labels),
            b"eu.",
        ]
    )


def test_python2_pickles_load(small, tmp_path):
    files = {
        f"cifar-10-batches-py/{stem}": python2_batch(to_planes(images), labels.tolist())
        for stem, images, labels in split_batches(small)
    }
    assert_same(read_source(str(write_tar(tmp_path / "py2.tar.gz", files)), trust_pickles=True), small)


def test_python_folder_needs_trust(make_python_archive, small, tmp_path):
    folder = extract(make_python_archive(small), tmp_path / "extracted")
    with pytest.raises(SourceError, match="no archive checksum"):
        read_source(str(folder))
    assert_same(read_source(str(folder), trust_pickles=True), small)


def test_trusted_pickles_still_cannot_run_code(small, tmp_path):
    class Exploit:
        def __reduce__(self):
            return (print, ("pwned",))

    files = python_files(small)
    files["cifar-10-batches-py/data_batch_3"] = pickle.dumps({b"data": Exploit()}, protocol=2)
    archive = write_tar(tmp_path / "evil.tar.gz", files)
    with pytest.raises(SourceError, match="data_batch_3 is not a CIFAR-10 python batch \\(refusing to load .*print"):
        read_source(str(archive), trust_pickles=True)


def test_corrupt_batches(small, tmp_path):
    files = binary_files(small)
    files["cifar-10-batches-bin/data_batch_2.bin"] += b"\0"
    with pytest.raises(SourceError, match="data_batch_2.bin is .* not a whole number"):
        read_source(str(write_tar(tmp_path / "a.tar.gz", files)))
    files = binary_files(small)
    batch = bytearray(files["cifar-10-batches-bin/test_batch.bin"])
    batch[0] = 12  # the first record's label
    files["cifar-10-batches-bin/test_batch.bin"] = bytes(batch)
    with pytest.raises(SourceError, match="test_batch.bin has 1 labels outside 0..9, e.g. 12"):
        read_source(str(write_tar(tmp_path / "b.tar.gz", files)))


# --- download ----------------------------------------------------------------------------------


def test_download_verifies_and_caches(make_binary_archive, small, tmp_path):
    archive = make_binary_archive(small)
    cache = tmp_path / "cache"
    arrays = read_source("download", cache, url=archive.as_uri(), md5=md5(archive))
    assert_same(arrays, small)
    assert arrays.info["kind"] == "download" and arrays.info["url"] == archive.as_uri()
    assert md5(cache / archive.name) == md5(archive)
    assert list(cache.iterdir()) == [cache / archive.name]  # no temporary left behind
    archive.unlink()  # the second read must come from the cache
    assert_same(read_source("download", cache, url=archive.as_uri(), md5=md5(cache / archive.name)), small)


def test_download_with_wrong_checksum_is_refused_and_not_cached(make_binary_archive, small, tmp_path):
    archive = make_binary_archive(small)
    cache = tmp_path / "cache"
    with pytest.raises(SourceError) as error:
        read_source("download", cache, url=archive.as_uri())  # expects the official md5
    message = str(error.value)
    assert archive.name in message and sources.BINARY_MD5 in message and md5(archive) in message
    assert list(cache.iterdir()) == []


def test_corrupt_cached_download_is_refused(make_binary_archive, small, tmp_path):
    archive = make_binary_archive(small)
    cached = tmp_path / "cache" / archive.name
    cached.parent.mkdir()
    cached.write_bytes(b"half an archive")
    with pytest.raises(SourceError, match=f"mismatch for {cached}: .*delete it"):
        read_source("download", cached.parent, url=archive.as_uri(), md5=md5(archive))


def test_download_without_network_suggests_a_local_source(tmp_path):
    with pytest.raises(SourceError, match="could not download .*--data.source"):
        read_source("download", tmp_path, url="http://127.0.0.1:9/cifar-10-binary.tar.gz")


# --- unsafe and unknown inputs -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["../escape.bin", "/tmp/absolute.bin", "cifar/../../up.bin"])
def test_archive_with_path_traversal_is_refused(small, tmp_path, name):
    files = {name: b"x", **binary_files(small)}
    archive = write_tar(tmp_path / "evil.tar.gz", files)
    with pytest.raises(SourceError, match="unsafe path"):
        read_source(str(archive))


def test_archive_in_no_cifar_format(tmp_path):
    archive = write_tar(tmp_path / "other.tar.gz", {"photos/cat.png": b"png", "readme.txt": b"hi"})
    with pytest.raises(SourceError, match="not in a CIFAR-10 format"):
        read_source(str(archive))
    (tmp_path / "notes.txt").write_text("not an archive")
    with pytest.raises(SourceError, match="not a readable tar archive") as error:
        read_source(str(tmp_path / "notes.txt"))
    assert "\n" not in str(error.value)


def test_folder_in_no_cifar_format_and_missing_path(tmp_path):
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "notes.txt").write_text("hello")
    with pytest.raises(SourceError, match="neither an extracted CIFAR-10 archive .* nor an image folder"):
        read_source(str(tmp_path / "stuff"))
    (tmp_path / "stuff" / "data_batch_1.bin").write_bytes(b"")
    with pytest.raises(SourceError, match="lacks data_batch_2.bin, .*, test_batch.bin of the binary version"):
        read_source(str(tmp_path / "stuff"))
    with pytest.raises(SourceError, match="no such file or folder"):
        read_source(str(tmp_path / "missing"))


# --- image folders -----------------------------------------------------------------------------


def test_png_folder_round_trip(make_image_folder, small):
    folder = make_image_folder(small)
    arrays = read_source(str(folder), num_workers=1)
    # Files are listed by class (then by file name), then put in a fixed mixed order: compare in that order.
    order = {split: np.argsort(getattr(small, f"{split}_labels"), kind="stable") for split in ("train", "test")}
    order = {
        split: sorted_order[image_folder.mixed_order(np.arange(len(sorted_order)))]
        for split, sorted_order in order.items()
    }
    expected = small._replace(
        **{f"{s}_{kind}": getattr(small, f"{s}_{kind}")[order[s]] for s in order for kind in ("images", "labels")}
    )
    assert_same(arrays, expected)
    assert arrays.classes == CIFAR10_CLASSES
    assert arrays.info["kind"] == "image-folder"
    assert arrays.info["checksum"] == source_checksum(str(folder))


def test_image_folder_order_is_fixed_and_mixes_the_classes(make_image_folder, small):
    folder = make_image_folder(small)
    first, again = read_source(str(folder), num_workers=1), read_source(str(folder), num_workers=1)
    np.testing.assert_array_equal(first.train_labels, again.train_labels)
    assert len(set(first.train_labels[:10].tolist())) > 1  # not one class first
    assert "permutation" in first.info["order"]


def test_jpeg_folder_matches_pil_and_decodes_the_same_in_a_pool(make_image_folder, small, monkeypatch):
    folder = make_image_folder(small, suffix=".jpg", quality=90)
    arrays = read_source(str(folder), num_workers=1)
    files = sorted((folder / "train").glob("*/*.jpg"), key=lambda p: (CIFAR10_CLASSES.index(p.parent.name), p.name))
    files = [files[i] for i in image_folder.mixed_order(np.arange(len(files)))]
    np.testing.assert_array_equal(arrays.train_images, np.stack([np.asarray(Image.open(p)) for p in files]))
    monkeypatch.setattr(image_folder, "POOL_MIN_IMAGES", 0)
    pooled = read_source(str(folder), num_workers=2)
    assert_same(pooled, arrays)
    assert pooled.info == arrays.info


def test_other_class_names_are_sorted(make_image_folder, small):
    small = small._replace(train_labels=small.train_labels % 3, test_labels=small.test_labels % 3)
    folder = make_image_folder(small, classes=["zebra", "apple", "mango"])
    arrays = read_source(str(folder))
    assert arrays.classes == ["apple", "mango", "zebra"]
    assert np.bincount(arrays.train_labels).tolist() == np.bincount(small.train_labels)[[1, 2, 0]].tolist()


def test_image_folder_with_too_many_classes(make_image_folder, small):
    folder = make_image_folder(small)
    for split in ("train", "test"):
        (folder / split / "unicorn").mkdir()
    with pytest.raises(SourceError, match="has 11 class folders"):
        read_source(str(folder))


def test_image_folder_missing_split(make_image_folder, small):
    folder = make_image_folder(small)
    for path in (folder / "test").rglob("*.png"):
        path.unlink()
    for path in (folder / "test").iterdir():
        path.rmdir()
    (folder / "test").rmdir()
    with pytest.raises(SourceError, match="has no test/ folder"):
        read_source(str(folder))


def test_image_folder_empty_class(make_image_folder, small):
    folder = make_image_folder(small)
    for path in (folder / "train" / "cat").iterdir():
        path.unlink()
    with pytest.raises(SourceError, match=r"train/cat has no \.png/\.jpg/\.jpeg images"):
        read_source(str(folder))


def test_image_folder_classes_differ(make_image_folder, small):
    folder = make_image_folder(small)
    (folder / "test" / "dog").rename(folder / "test" / "puppy")
    with pytest.raises(SourceError, match=r"only in train \['dog'\], only in test \['puppy'\]"):
        read_source(str(folder))


@pytest.mark.parametrize(
    "make_bad, problem",
    [
        (lambda: Image.new("RGB", (28, 28)), "mode RGB, 28x28"),
        (lambda: Image.new("L", (32, 32)), "mode L, 32x32"),
        (lambda: Image.new("RGBA", (32, 32)), "mode RGBA, 32x32"),
    ],
)
def test_image_folder_wrong_size_or_mode(make_image_folder, small, make_bad, problem):
    folder = make_image_folder(small)
    bad = [folder / "train" / "bird" / "extra1.png", folder / "test" / "ship" / "extra2.png"]
    for path in bad:
        make_bad().save(path)
    with pytest.raises(SourceError) as error:
        read_source(str(folder))
    message = str(error.value)
    assert "2 of 32 images" in message and f"({problem})" in message
    assert str(bad[0]) in message


def test_image_folder_undecodable_file(make_image_folder, small):
    folder = make_image_folder(small)
    (folder / "train" / "frog" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(SourceError, match="1 of 31 images .*broken.jpg \\(cannot be decoded"):
        read_source(str(folder))
