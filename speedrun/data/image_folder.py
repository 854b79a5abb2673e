"""CIFAR-10 from an image folder ROOT/{train,test}/<class>/*.{png,jpg,jpeg} of 32x32 RGB images.

The files are listed by class and name, decoded (in worker processes when there are many) and checked,
then put in a fixed random order that mixes the classes.
"""

import hashlib
import io
import multiprocessing

import numpy as np
from PIL import Image
from tqdm import tqdm

from speedrun.data.cifar import CIFAR10_CLASSES, SPLITS, CifarArrays, SourceError, folder_digest

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
POOL_MIN_IMAGES = 1000  # below this, decoding in-process beats starting worker processes


def read_image_folder(root, num_workers):
    """CifarArrays of an image folder ROOT/{train,test}/<class>/*, every image checked to be 32x32 RGB."""
    classes, entries = list_images(root)
    paths = [root / name for name, _ in entries]
    with _pool(num_workers, len(paths)) as pool:
        results = list(
            tqdm(pool.imap(_decode_image, paths, chunksize=256), total=len(paths), desc=f"decoding {root}", unit="img")
        )
    bad = [(path, problem) for path, (_, problem, _) in zip(paths, results) if problem]
    if bad:
        raise SourceError(
            f"{len(bad)} of {len(paths)} images in {root} are not 32x32 RGB, e.g. "
            f"{bad[0][0]} ({bad[0][1]}); convert them to 32x32 RGB PNG or JPEG"
        )
    checksum = folder_digest((name, file_hash) for (name, _), (_, _, file_hash) in zip(entries, results))
    images = np.stack([image for image, _, _ in results])
    labels = np.array([label for _, label in entries], dtype=np.int64)
    is_train = np.array([name.parts[0] == "train" for name, _ in entries])
    info = {"kind": "image-folder", "path": str(root), "checksum": checksum, "order": ORDER_NOTE}
    train, test = mixed_order(np.flatnonzero(is_train)), mixed_order(np.flatnonzero(~is_train))
    return CifarArrays(images[train], labels[train], images[test], labels[test], classes, info)


ORDER_NOTE = "a fixed random permutation (seed 0) of the files sorted by class and name"


def mixed_order(indices):
    """`indices` in a fixed, class-mixed order: a folder lists its images by class, and a beton in
    that order would hand "the first N images" of it to one class."""
    return indices[np.random.default_rng(0).permutation(len(indices))]


def list_images(root):
    """(classes, [(path relative to root, label)]) of every image: train first, by class, then by name."""
    classes = _image_classes(root)
    entries = []
    for split in SPLITS:
        for label, name in enumerate(classes):
            folder = root / split / name
            files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not files:
                raise SourceError(
                    f"{folder} has no .png/.jpg/.jpeg images: every class needs images in both train and test"
                )
            entries += [(p.relative_to(root), label) for p in files]
    return classes, entries


def _image_classes(root):
    """Class names: the CIFAR-10 order when the folders are exactly its ten classes, else sorted."""
    found = {}
    for split in SPLITS:
        if not (root / split).is_dir():
            raise SourceError(
                f"image folder {root} has no {split}/ folder: expected {root}/{{train,test}}/<class>/*.png|jpg"
            )
        found[split] = {p.name for p in (root / split).iterdir() if p.is_dir() and not p.name.startswith(".")}
    if found["train"] != found["test"]:
        only = {split: sorted(found[split] - found[other]) for split, other in zip(SPLITS, SPLITS[::-1])}
        raise SourceError(
            f"image folder {root} has different classes in train and test: only in train "
            f"{only['train']}, only in test {only['test']}"
        )
    if not 0 < len(found["train"]) <= len(CIFAR10_CLASSES):
        raise SourceError(
            f"image folder {root} has {len(found['train'])} class folders in train/ and "
            f"test/; CIFAR-10 training takes 1 to {len(CIFAR10_CLASSES)} classes"
        )
    return list(CIFAR10_CLASSES) if found["train"] == set(CIFAR10_CLASSES) else sorted(found["train"])


def _decode_image(path):
    """(image or None, problem or None, sha256 of the file) for one image file."""
    data = path.read_bytes()
    file_hash = hashlib.sha256(data).hexdigest()
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.mode != "RGB" or image.size != (32, 32):  # (width, height)
                return None, f"mode {image.mode}, {image.size[0]}x{image.size[1]}", file_hash
            return np.asarray(image), None, file_hash
    except (OSError, SyntaxError, ValueError) as error:
        return None, f"cannot be decoded: {error}", file_hash


class _SerialPool:
    """Pool's imap in this process: no start-up cost for a handful of images or a single worker."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def imap(self, function, items, chunksize=1):
        return map(function, items)


def _pool(num_workers, count):
    if num_workers <= 1 or count < POOL_MIN_IMAGES:
        return _SerialPool()
    return multiprocessing.Pool(num_workers)
