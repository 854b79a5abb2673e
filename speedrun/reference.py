"""The reference trainer: airbench (Keller Jordan's CIFAR-10 speedruns) on exactly our data and device.

Optional extra: `pip install 'speedrun[reference]'` (airbench==0.1.8, which also imports torchvision).

airbench reads CIFAR-10 from `<path>/train.pt` and `<path>/test.pt` ({'images': uint8 NHWC, 'labels':
int64, 'classes': names}) and downloads it when they are missing. `export_for_airbench` writes those two
files from our in-memory betons, so both trainers see the same pixels and labels.

airbench's `train94`/`train96` accept our train loader, but always build their own test loader from the
relative path 'cifar10'. `run_reference` therefore exports into `<folder>/cifar10/` and trains with
`<folder>` as the working directory, so that loader reads our export and nothing is downloaded.

The result is a summary shaped like `speedrun.train.train`'s, so the leaderboard treats both alike:
'train_seconds' is the wall time of the whole airbench training call (CUDA-synchronised; it includes
what that call does besides its steps: building the net and its test loader, which reads the exported
test.pt, and initialising the whitening layer), and 'final_test_acc' is airbench's `evaluate` on our
test set with the test-time augmentation level airbench reports its headline accuracy with (also given
without it).

Before the first seed, one untimed call in airbench's own warm-up mode (`run="warmup"`, what
`airbench.warmup94` does): it builds a net and its test loader, initialises the whitening layer, takes
one training step and returns. So it is not a whole training run: it brings cuDNN's autotuning of the
training batch's shapes and the first-call costs of CUDA and airbench ahead of the clock, and anything
that first happens later in a run (the lookahead update every 5 steps, the whitening bias frozen after
its first epochs) is first met inside the first seed's clock.
"""
import contextlib
import importlib
import io
import os
from functools import partial
from importlib import metadata

import torch

from speedrun.device import device_name, timed
from speedrun.sources import CIFAR10_CLASSES

# reference name -> airbench module holding that trainer and its hyperparameters `hyp`
REFERENCES = {"train94": "airbench.lib_airbench94", "train96": "airbench.lib_airbench96"}

INSTALL_HINT = "the reference trainer needs airbench: pip install 'speedrun[reference]'"


def export_for_airbench(data, folder):
    """Write `folder`/train.pt and `folder`/test.pt (CPU, uint8 NHWC, int64 labels) from our data."""
    os.makedirs(folder, exist_ok=True)
    splits = {"train.pt": (data.train_images, data.train_labels),
              "test.pt": (data.test_images, data.test_labels)}
    for filename, (images, labels) in splits.items():
        images, labels = torch.as_tensor(images).cpu(), torch.as_tensor(labels).cpu()
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected uint8 NHWC images, got {images.dtype} {tuple(images.shape)}")
        torch.save({"images": images.contiguous(), "labels": labels.to(torch.int64).contiguous(),
                    "classes": list(CIFAR10_CLASSES)}, os.path.join(folder, filename))
    return folder


def import_airbench():
    with cudnn_benchmark(torch.backends.cudnn.benchmark):  # airbench turns it on when imported
        try:
            return importlib.import_module("airbench")
        except ImportError as error:
            raise ImportError(f"{INSTALL_HINT} ({error})") from error


@contextlib.contextmanager
def cudnn_benchmark(enabled):
    """cuDNN autotuning as given inside the block, as before after it: a reference run before ours
    must not change the backend settings our own runs are timed with."""
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous


def airbench_version(airbench):
    try:
        return metadata.version("airbench")
    except metadata.PackageNotFoundError:
        return getattr(airbench, "__version__", None)


@contextlib.contextmanager
def working_directory(folder):
    """chdir for the duration of the block (process-wide, so not for use from several threads)."""
    previous = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


def require_cuda(device):
    if torch.device(device).type != "cuda" or not torch.cuda.is_available():
        raise RuntimeError(f"airbench trains on CUDA only (device {device!r}); run the reference on a GPU")


def on_device(device):
    """Make `device` the current CUDA device, since airbench allocates on the current one."""
    return torch.cuda.device(device) if torch.device(device).type == "cuda" else contextlib.nullcontext()


def check_available(device):
    """airbench, once it is known to import and to have a CUDA device to train on."""
    airbench = import_airbench()
    require_cuda(device)
    return airbench


def run_reference(name, data, folder, seed=0, device="cuda", warmup=True):
    """Train airbench's `name` ('train94' | 'train96') on our data; a summary like our trainer's.

    `warmup` first makes one untimed call in airbench's warm-up mode, which returns after airbench's
    first training step (cuDNN autotuning of the training shapes, lazy initialisation); once per
    process is enough, so a sweep of seeds warms up before its first only.
    """
    if name not in REFERENCES:
        raise ValueError(f"unknown reference {name!r}; known: {', '.join(REFERENCES)}")
    airbench, library = check_available(device), importlib.import_module(REFERENCES[name])
    hyp = library.hyp
    export_for_airbench(data, os.path.join(folder, "cifar10"))
    with working_directory(folder), on_device(device), cudnn_benchmark(True):  # airbench's own setting
        loader = airbench.CifarLoader("cifar10", train=True, batch_size=hyp["opt"]["batch_size"],
                                      aug=hyp["aug"], altflip=True, gpu=device)
        train_fn = getattr(library, name)
        warmup_seconds = 0.0
        if warmup:
            with contextlib.redirect_stdout(io.StringIO()):  # the warm-up prints a table header
                _, warmup_seconds = timed(partial(train_fn, train_loader=loader, run="warmup", verbose=True),
                                          device)
        torch.manual_seed(seed)
        net, seconds = timed(partial(train_fn, train_loader=loader, verbose=False), device)
        test_loader = airbench.CifarLoader("cifar10", train=False, batch_size=2000, gpu=device)
        tta_level = hyp["net"]["tta_level"]
        accuracy = airbench.evaluate(net, test_loader, tta_level=tta_level)
        accuracy_plain = airbench.evaluate(net, test_loader, tta_level=0)
    epochs = hyp["opt"]["train_epochs"]
    return {
        "final_test_acc": accuracy,
        "best_test_acc": accuracy,
        "test_acc_without_tta": accuracy_plain,
        "tta_level": tta_level,
        "train_seconds": seconds,
        "compile_seconds": warmup_seconds,
        "device": device_name(device),
        "versions": {"airbench": airbench_version(airbench), "torch": torch.__version__,
                     "cuda": torch.version.cuda},
        "seed": seed,
        "config": {"reference": {"name": name, "hyp": hyp}},
        "history": [{"epoch": epochs, "train_seconds": seconds, "test_acc": accuracy}],
    }
