"""The reference trainer: airbench (Keller Jordan's CIFAR-10 speedruns) on exactly our data and device.

Optional extra: `pip install 'speedrun[reference]'` (airbench==0.1.8, which also imports torchvision).

airbench reads CIFAR-10 from `<path>/train.pt` and `<path>/test.pt` ({'images': uint8 NHWC, 'labels':
int64, 'classes': names}) and downloads it when they are missing. `export_for_airbench` writes those two
files from our in-memory betons, so both trainers see the same pixels and labels.

airbench's `train94`/`train96` accept our train loader, but always build their own test loader from the
relative path 'cifar10'. `run_reference` therefore exports into `<folder>/cifar10/` and trains with
`<folder>` as the working directory, so that loader reads our export and nothing is downloaded.

The result is a summary shaped like `speedrun.train.train`'s, so the leaderboard treats both alike,
'final_test_acc' being airbench's `evaluate` on our test set with the test-time augmentation level
airbench reports its headline accuracy with (also given without it).

The clock (CLOCK), over the same regions as ours (speedrun/leaderboard.py):
  build, untimed, once per process: the import, the export, the train loader, and a warm-up that is one
      whole training call (`warmup`: as many steps as a timed run, so cuDNN's autotuning, CUDA's and
      airbench's first-call costs, the lookahead updates and the whitening bias's freezing are all met
      before the first timed seed), as ours compiles its step on warm-up batches before its clock;
  prepare, charged ('prepare_seconds'): from the start of the call's net build (airbench's `make_net`,
      given to the training call wrapped) to the start of its loop: the fresh net's allocation and
      initialisation, the optimizer and the whitening layer's initialisation from 5,000 train images;
  loop ('train_seconds'): from there to the call's return, CUDA-synchronised: the epochs, as airbench's
      own clock times them (with `verbose=False` it evaluates nothing in between).
The loop's start is the train loader's second `normalize` of the call: airbench normalizes once for the
whitening and once when its first epoch starts. What the call does before its net build (reading the
exported test.pt into a test loader, building the LR schedule) is left out of both, as 'setup_seconds':
we hold our test set in memory from the start. 'total_seconds' = prepare + loop. Where a call cannot be
split so (another airbench whose training call takes no `make_net`, or normalizes otherwise), the whole
call is the loop and the total, and 'clock_split' is False.
"""
import contextlib
import importlib
import inspect
import os
import time
from importlib import metadata

import torch

from speedrun.device import device_name, synchronize, timed
from speedrun.sources import CIFAR10_CLASSES

# reference name -> airbench module holding that trainer and its hyperparameters `hyp`
REFERENCES = {"train94": "airbench.lib_airbench94", "train96": "airbench.lib_airbench96"}

INSTALL_HINT = "the reference trainer needs airbench: pip install 'speedrun[reference]'"

# What each region of a reference run's clock covers (the module's docstring says how it is found).
CLOCK = ("airbench: build untimed (its loader and one whole untimed training call as warm-up); prepare = "
         "its net build, optimizer and whitening initialisation; loop = its epochs")


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


def marked_call(train_fn, loader, device):
    """(net, regions): one airbench training call on `loader`, its regions timed (see the docstring):
    {'setup', 'prepare', 'training', 'call'} in seconds, 'prepare' None where the call was not split."""
    marks = {}

    def mark(region):
        synchronize(device)
        marks.setdefault(region, time.perf_counter())

    options = {}
    make_net = inspect.signature(train_fn).parameters.get("make_net")
    if make_net is not None and callable(make_net.default):
        def marked_make_net(build=make_net.default):
            mark("prepare")
            return build()
        options["make_net"] = marked_make_net
    normalize, normalized = loader.normalize, []

    def marked_normalize(images):
        normalized.append(len(images))
        if len(normalized) == 2:  # the first epoch starts (the first normalize was the whitening's)
            mark("training")
        return normalize(images)

    loader.normalize = marked_normalize
    try:
        mark("call")
        net = train_fn(train_loader=loader, verbose=False, **options)
        mark("end")
    finally:
        loader.normalize = normalize
    call = marks["end"] - marks["call"]
    if "prepare" not in marks or "training" not in marks or marks["training"] < marks["prepare"]:
        return net, {"setup": 0.0, "prepare": None, "training": call, "call": call}
    return net, {"setup": marks["prepare"] - marks["call"], "prepare": marks["training"] - marks["prepare"],
                 "training": marks["end"] - marks["training"], "call": call}


def run_reference(name, data, folder, seed=0, device="cuda", warmup=True):
    """Train airbench's `name` ('train94' | 'train96') on our data; a summary like our trainer's.

    `warmup` first makes one untimed, whole training call (as many steps as the timed one); once per
    process is enough, so a sweep of seeds warms up before its first only. The timed call's regions are
    those of the module's docstring.
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
            _, warmup_seconds = timed(lambda: train_fn(train_loader=loader, verbose=False), device)
        torch.manual_seed(seed)
        net, regions = marked_call(train_fn, loader, device)
        test_loader = airbench.CifarLoader("cifar10", train=False, batch_size=2000, gpu=device)
        tta_level = hyp["net"]["tta_level"]
        accuracy = airbench.evaluate(net, test_loader, tta_level=tta_level)
        accuracy_plain = airbench.evaluate(net, test_loader, tta_level=0)
    epochs, seconds, split = hyp["opt"]["train_epochs"], regions["training"], regions["prepare"] is not None
    return {
        "final_test_acc": accuracy,
        "best_test_acc": accuracy,
        "test_acc_without_tta": accuracy_plain,
        "tta_level": tta_level,
        "train_seconds": seconds,
        "prepare_seconds": regions["prepare"],
        "total_seconds": regions["prepare"] + seconds if split else seconds,
        "setup_seconds": regions["setup"],
        "clock_split": split,
        "compile_seconds": warmup_seconds,
        "device": device_name(device),
        "versions": {"airbench": airbench_version(airbench), "torch": torch.__version__,
                     "cuda": torch.version.cuda},
        "seed": seed,
        "config": {"reference": {"name": name, "hyp": hyp}},
        "history": [{"epoch": epochs, "train_seconds": seconds, "test_acc": accuracy}],
    }
