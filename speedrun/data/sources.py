"""Reading CIFAR-10 into numpy arrays, from wherever a user has it.

A source is one of:
  - "download": the official binary archive, fetched once into a cache folder and md5-checked;
  - an official archive, binary (cifar-10-binary.tar.gz) or Python (cifar-10-python.tar.gz) version;
  - the folder either archive extracts to;
  - an image folder ROOT/{train,test}/<class>/*.{png,jpg,jpeg} of 32x32 RGB images (read by
    speedrun/data/image_folder.py).

`read_source` returns NHWC uint8 images and int64 labels for both splits, plus a description of the
source with its checksum, which `source_checksum` computes without decoding anything. Every bad input
raises `SourceError` with a message saying what is wrong and what to do about it.
"""

import hashlib
import io
import os
import pickle
import tarfile
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

import numpy as np
from tqdm import tqdm

from speedrun.data.cifar import CIFAR10_CLASSES, IMAGE_BYTES, SPLITS, CifarArrays, SourceError, folder_digest
from speedrun.data.image_folder import list_images, read_image_folder
from speedrun.system.atomic import replacing

BINARY_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
BINARY_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
PYTHON_MD5 = "c58f30108f718f92721af3b95e74349a"

# File names of each official layout: five train batches, then the test batch.
LAYOUTS = {
    "binary": [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"],
    "python": [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"],
}
# Folder names inside the official archives.
BATCH_FOLDERS = ("cifar-10-batches-bin", "cifar-10-batches-py")
SOURCE_HELP = (
    "--data.source takes 'download', a CIFAR-10 archive (cifar-10-binary.tar.gz or "
    "cifar-10-python.tar.gz), the folder it extracts to, or an image folder "
    "ROOT/{train,test}/<class>/*.png|jpg"
)


def read_source(
    source="download", cache_dir="data/cache", trust_pickles=False, num_workers=None, url=BINARY_URL, md5=BINARY_MD5
):
    """Read CIFAR-10 from `source` (see the module docstring) into a CifarArrays.

    The Python version's pickles can run code when loaded, so they are read only from the archive
    with the official md5, or when `trust_pickles` is set.
    """
    if source == "download":
        archive = download(url, cache_dir, md5)
        arrays = _read_archive(archive, trust_pickles, md5)
        return arrays._replace(info={**arrays.info, "kind": "download", "url": url})
    path = Path(source).expanduser()
    if path.is_file():
        return _read_archive(path, trust_pickles, file_digest(path, "md5"))
    if path.is_dir():
        root, layout = _folder_layout(path)
        if layout == "images":
            return read_image_folder(root, num_workers or os.cpu_count())
        return _read_batch_folder(root, layout, trust_pickles)
    raise SourceError(f"{source}: no such file or folder. {SOURCE_HELP}")


def source_checksum(source, url=BINARY_URL, md5=BINARY_MD5):
    """The checksum `read_source(source).info` would carry, computed without decoding anything."""
    if source == "download":
        return f"md5:{md5}"  # whatever is used has been verified to have it
    path = Path(source).expanduser()
    if path.is_file():
        return "md5:" + file_digest(path, "md5")
    if path.is_dir():
        root, layout = _folder_layout(path)
        if layout == "images":
            names = [p for p, _ in list_images(root)[1]]
        else:
            names = LAYOUTS[layout]
        return folder_digest((name, file_digest(root / name, "sha256")) for name in names)
    raise SourceError(f"{source}: no such file or folder. {SOURCE_HELP}")


# --- download --------------------------------------------------------------------------------


def download(url=BINARY_URL, cache_dir="data/cache", md5=BINARY_MD5):
    """The path of the archive at `url` in `cache_dir`, downloaded once and md5-verified."""
    target = Path(cache_dir) / _file_name(url)
    if target.exists():
        _check_md5(target, target, md5, remedy="delete it to download it again")
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SourceError(f"cannot create the download cache folder {target.parent}: {error.strerror}") from error
    # A temporary name, so an interrupted or corrupt download never looks like a cached archive.
    with replacing(target) as partial:
        _fetch(url, partial)
        _check_md5(
            partial,
            f"{target.name} downloaded from {url}",
            md5,
            remedy="the download is corrupt or is not the official archive",
        )
    return target


def _file_name(url):
    return PurePosixPath(urlparse(url).path).name


def _fetch(url, destination):
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(destination, "wb") as file:
            size = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=size, unit="B", unit_scale=True, desc=f"downloading {url}") as progress:
                while chunk := response.read(1 << 20):
                    file.write(chunk)
                    progress.update(len(chunk))
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", None) or error
        raise SourceError(
            f"could not download {url} ({reason}). Without network access, fetch "
            f"{_file_name(url)} elsewhere, or use any local copy of CIFAR-10: {SOURCE_HELP}"
        ) from error


def _check_md5(path, shown_name, expected, remedy):
    actual = file_digest(path, "md5")
    if actual != expected:
        raise SourceError(f"checksum mismatch for {shown_name}: expected md5 {expected}, got {actual}; {remedy}")


def file_digest(path, algorithm):
    """Hex digest of a file's contents, read in chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as file:
        while chunk := file.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


# --- official archives and their extracted folders -------------------------------------------


def _read_archive(path, trust_pickles, md5):
    """Read an official archive's batches straight from the tar stream: nothing is extracted."""
    try:
        with tarfile.open(path, "r:*") as tar:
            members = _safe_members(tar, path)
            layout = _detect_layout(members, path)
            _check_pickle_trust(
                layout, path, trust_pickles or md5 == PYTHON_MD5, why=f"its md5 {md5} is not the official {PYTHON_MD5}"
            )
            # In archive order: a gzip stream only reads forwards without starting over.
            in_order = sorted(LAYOUTS[layout], key=lambda name: members[name].offset)
            blobs = {name: tar.extractfile(members[name]).read() for name in in_order}
    except (tarfile.TarError, EOFError, OSError) as error:
        reason = " ".join(str(error).split())  # tarfile lists each method it tried on its own line
        raise SourceError(f"{path} is not a readable tar archive ({reason}). {SOURCE_HELP}") from error
    info = {"kind": f"{layout}-archive", "path": str(path), "checksum": f"md5:{md5}"}
    return _parse_batches(layout, [blobs[name] for name in LAYOUTS[layout]], path, info)


def _safe_members(tar, path):
    """Regular files by base name, after refusing any member that would land outside the archive."""
    members = tar.getmembers()
    for member in members:
        name = PurePosixPath(member.name)
        if name.is_absolute() or ".." in name.parts:
            raise SourceError(
                f"{path} holds a member with an unsafe path {member.name!r} "
                f"(absolute or with '..'); refusing to read it"
            )
    return {PurePosixPath(m.name).name: m for m in members if m.isfile()}


def _read_batch_folder(root, layout, trust_pickles):
    _check_pickle_trust(layout, root, trust_pickles, why="an extracted folder has no archive checksum")
    blobs = [(root / name).read_bytes() for name in LAYOUTS[layout]]
    checksum = folder_digest((name, hashlib.sha256(blob).hexdigest()) for name, blob in zip(LAYOUTS[layout], blobs))
    info = {"kind": f"{layout}-folder", "path": str(root), "checksum": checksum}
    return _parse_batches(layout, blobs, root, info)


def _folder_layout(path):
    """(root, layout) of a folder: 'binary' or 'python' batches (maybe one level down), or 'images'."""
    for root in [path] + [path / name for name in BATCH_FOLDERS]:
        if root.is_dir():
            found = {p.name for p in root.iterdir() if p.is_file()}
            if any(set(names) & found for names in LAYOUTS.values()):
                return root, _detect_layout(found, root)
    if any((path / split).is_dir() for split in SPLITS):
        return path, "images"
    raise SourceError(
        f"{path} is neither an extracted CIFAR-10 archive (no data_batch_* files) nor an "
        f"image folder (no train/ or test/ folder). {SOURCE_HELP}"
    )


def _detect_layout(names, where):
    """'binary' or 'python' from the file names present; otherwise an error naming what is missing."""
    for layout, expected in LAYOUTS.items():
        if set(expected) <= set(names):
            return layout
    partial = [
        (layout, [n for n in expected if n not in names])
        for layout, expected in LAYOUTS.items()
        if set(expected) & set(names)
    ]
    lacking = f" (it lacks {', '.join(partial[0][1])} of the {partial[0][0]} version)" if partial else ""
    raise SourceError(
        f"{where} is not in a CIFAR-10 format{lacking}: expected data_batch_1.bin.."
        f"data_batch_5.bin and test_batch.bin (binary version) or data_batch_1..data_batch_5 "
        f"and test_batch (python version). {SOURCE_HELP}"
    )


def _check_pickle_trust(layout, where, trusted, why):
    if layout == "python" and not trusted:
        raise SourceError(
            f"{where} is the python version of CIFAR-10, whose pickles can run code when "
            f"loaded, and {why}. Use the binary version, or pass --data.trust_pickles true "
            f"(trust_pickles=True) if you trust where it came from"
        )


def _parse_batches(layout, blobs, where, info):
    parse = _parse_binary_batch if layout == "binary" else _parse_python_batch
    batches = [parse(blob, f"{where}: {name}") for blob, name in zip(blobs, LAYOUTS[layout])]
    train_images, train_labels = (np.concatenate(parts) for parts in zip(*batches[:-1]))
    test_images, test_labels = batches[-1]
    return CifarArrays(train_images, train_labels, test_images, test_labels, list(CIFAR10_CLASSES), info)


def _parse_binary_batch(blob, where):
    """Records of one label byte and the image as three 32x32 planes (R, G, B)."""
    if len(blob) == 0 or len(blob) % (IMAGE_BYTES + 1):
        raise SourceError(
            f"{where} is {len(blob)} bytes, not a whole number of "
            f"{IMAGE_BYTES + 1}-byte CIFAR-10 records: the file is truncated or corrupt"
        )
    records = np.frombuffer(blob, np.uint8).reshape(-1, IMAGE_BYTES + 1)
    return _planes_to_images(records[:, 1:]), _checked_labels(records[:, 0], where)


def _parse_python_batch(blob, where):
    """A pickled dict holding b'data' (uint8 [N, 3072], planes as above) and b'labels'."""
    try:
        # latin1 is how numpy arrays pickled by Python 2 (the official files) load in Python 3.
        batch = _RestrictedUnpickler(io.BytesIO(blob), encoding="latin1").load()
        data, labels = _get(batch, "data"), _get(batch, "labels")
    except Exception as error:
        raise SourceError(f"{where} is not a CIFAR-10 python batch ({error})") from error
    data = np.asarray(data)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != IMAGE_BYTES or len(data) != len(labels):
        raise SourceError(
            f"{where} holds data of shape {data.shape} ({data.dtype}) with {len(labels)} "
            f"labels, expected uint8 [N, {IMAGE_BYTES}] and N labels"
        )
    return _planes_to_images(data), _checked_labels(np.asarray(labels), where)


def _get(batch, key):
    return batch[key] if key in batch else batch[key.encode()]  # keys are str or bytes


def _planes_to_images(rows):
    return np.ascontiguousarray(rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))


def _checked_labels(labels, where):
    outside = labels[(labels < 0) | (labels >= len(CIFAR10_CLASSES))]
    if outside.size:
        raise SourceError(f"{where} has {outside.size} labels outside 0..9, e.g. {outside[0]}")
    return labels.astype(np.int64)


class _RestrictedUnpickler(pickle.Unpickler):
    """Builds only what a CIFAR-10 batch holds: dicts, lists, ints, bytes and numpy arrays."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }  # how protocol 2 spells bytes

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)
