"""The reference trainer: airbench (Keller Jordan's CIFAR-10 speedruns) on exactly our data and device.

Optional extra: `pip install 'speedrun[reference]'` (airbench==0.1.8, which also imports torchvision).

airbench reads CIFAR-10 from `<path>/train.pt` and `<path>/test.pt` ({'images': uint8 NHWC, 'labels':
int64, 'classes': names}) and downloads it when they are missing. `export_for_airbench` writes those two
files from our in-memory betons, so both trainers see the same pixels and labels.

airbench's `train94`/`train96` accept our train loader, but always build their own test loader from the
relative path 'cifar10'. `run_reference` therefore exports into `<folder>/cifar10/` and trains with
`<folder>` as the working directory, so that loader reads our export and nothing is downloaded.

On a CPU (a proxy, to choose what a GPU visit should confirm) airbench runs as written but for its
few CUDA-only calls, made CPU ones for the call's duration, and its float16, which is float32 there
(`on_cpu` says why). At a `width` other
than our full net's 64, its widths are scaled alike (train94's 64/256/256 become 16/64/64 at width 16,
our record net's own shape there); with `--training.train_subset`, each seed trains on the images our
run of that seed draws (speedrun.data.loader.train_subset).

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

import argparse
import contextlib
import importlib
import inspect
import json
import os
import sys
import time
import types
from importlib import metadata

import torch

from speedrun.data.cifar import CIFAR10_CLASSES
from speedrun.data.loader import train_subset
from speedrun.system.device import device_name, synchronize, timed

# reference name -> airbench module holding that trainer and its hyperparameters `hyp`
REFERENCES = {"train94": "airbench.lib_airbench94", "train96": "airbench.lib_airbench96"}

INSTALL_HINT = "the reference trainer needs airbench: pip install 'speedrun[reference]'"
FULL_WIDTH = 64  # our nets' full `model.width`, at which airbench's widths are its own

# What each region of a reference run's clock covers (the module's docstring says how it is found).
CLOCK = (
    "airbench: build untimed (its loader and one whole untimed training call as warm-up); prepare = "
    "its net build, optimizer and whitening initialisation; loop = its epochs"
)


def export_for_airbench(data, folder):
    """Write `folder`/train.pt and `folder`/test.pt (CPU, uint8 NHWC, int64 labels) from our data."""
    os.makedirs(folder, exist_ok=True)
    splits = {"train.pt": (data.train_images, data.train_labels), "test.pt": (data.test_images, data.test_labels)}
    for filename, (images, labels) in splits.items():
        images, labels = torch.as_tensor(images).cpu(), torch.as_tensor(labels).cpu()
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected uint8 NHWC images, got {images.dtype} {tuple(images.shape)}")
        torch.save(
            {
                "images": images.contiguous(),
                "labels": labels.to(torch.int64).contiguous(),
                "classes": list(CIFAR10_CLASSES),
            },
            os.path.join(folder, filename),
        )
    return folder


def import_airbench():
    with cudnn_benchmark(torch.backends.cudnn.benchmark), torchvision_for_airbench():  # it sets benchmark on import
        try:
            return importlib.import_module("airbench")
        except ImportError as error:
            raise ImportError(f"{INSTALL_HINT} ({error})") from error


class Normalize:
    """torchvision.transforms.Normalize on a tensor: (x - mean) / std per channel, in x's dtype."""

    def __init__(self, mean, std):
        self.mean, self.std = mean, std

    def __call__(self, x):
        mean, std = (torch.as_tensor(v, dtype=x.dtype, device=x.device).view(-1, 1, 1) for v in (self.mean, self.std))
        return (x - mean) / std


@contextlib.contextmanager
def torchvision_for_airbench():
    """airbench imports torchvision for `transforms.Normalize` and for downloading CIFAR-10, which our
    export makes unneeded. Where torchvision does not import (no build of it matches a CPU build of this
    torch), the import is given a stand-in holding Normalize alone, for its duration: airbench keeps it,
    and nothing else sees it. Wherever torchvision imports, airbench gets the real one."""
    try:
        importlib.import_module("torchvision")
        importable = True
    except Exception:  # not installed, or built for another torch (its C++ operators then fail to load)
        importable = False
    if importable:
        yield
        return
    stand_in = types.ModuleType("torchvision")
    stand_in.transforms = types.ModuleType("torchvision.transforms")
    stand_in.transforms.Normalize = Normalize
    modules = {"torchvision": stand_in, "torchvision.transforms": stand_in.transforms}
    sys.modules.update(modules)
    try:
        yield
    finally:
        for name in modules:
            sys.modules.pop(name, None)


class HostEvent:
    """torch.cuda.Event's timing on the host clock, for airbench on a CPU."""

    def __init__(self, enable_timing=False):
        self.seconds = None

    def record(self, stream=None):
        self.seconds = time.perf_counter()

    def elapsed_time(self, end):
        return 1e3 * (end.seconds - self.seconds)


@contextlib.contextmanager
def on_cpu(airbench):
    """airbench on the CPU, for the block: its net's `.cuda()` leaves the net where it is, its clock's
    CUDA events read the host clock and synchronize does nothing, the test loader its training call
    builds (on GPU 0 unless told) loads to the CPU, and its float16 (`.half()`, of the net and the
    images) is float32: a float16 convolution's forward and backward took 56x float32's time on a
    CPU with native bf16 (16 channels, 16x16, batch 256: 0.47 s against 0.0084 s;
    benchmarks/results/cpu-intel-xeon-2-cores-amx-float16-conv/), and float32 only
    removes float16's rounding. Nothing else changes."""

    def unmoved(self, *args, **kwargs):
        return self

    def widened(self, *args, **kwargs):
        return self.float()

    library = sys.modules[airbench.CifarLoader.__module__]
    loader = airbench.CifarLoader
    patches = [
        (torch.Tensor, "cuda", unmoved),
        (torch.nn.Module, "cuda", unmoved),
        (torch.Tensor, "half", widened),
        (torch.nn.Module, "half", widened),
        (torch.cuda, "Event", HostEvent),
        (torch.cuda, "synchronize", lambda device=None: None),
        (library, "CifarLoader", lambda *args, gpu="cpu", **kwargs: loader(*args, gpu=gpu, **kwargs)),
    ]
    saved = [(owner, name, owner.__dict__.get(name)) for owner, name, _ in patches]
    for owner, name, value in patches:
        setattr(owner, name, value)
    try:
        yield
    finally:
        for owner, name, value in saved:
            if value is None:
                delattr(owner, name)  # inherited before (Tensor.cuda is TensorBase's)
            else:
                setattr(owner, name, value)


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


def on_device(airbench, device):
    """On CUDA, make `device` the current device, since airbench allocates on the current one; on a CPU,
    `on_cpu`."""
    if torch.device(device).type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"airbench cannot train on {device!r}: torch sees no CUDA device")
        return torch.cuda.device(device)
    if torch.device(device).type == "cpu":
        return on_cpu(airbench)
    raise RuntimeError(f"airbench trains on CUDA or, as a proxy, on a CPU, not on {device!r}")


def check_available(device):
    """airbench, once it is known to import and to have a device it trains on."""
    airbench = import_airbench()
    with on_device(airbench, device):
        pass
    return airbench


def scaled_widths(widths, width):
    """airbench's block widths scaled as our `model.width` scales our nets (width / FULL_WIDTH)."""
    return {block: max(1, round(channels * width / FULL_WIDTH)) for block, channels in widths.items()}


def net_builder(train_fn, widths=None):
    """The net build of `train_fn`'s call: its own `make_net` (None where it takes none), at `widths`."""
    make_net = inspect.signature(train_fn).parameters.get("make_net")
    if make_net is None or not callable(make_net.default):
        return None
    return make_net.default if widths is None else (lambda: make_net.default(widths=widths))


def marked_call(train_fn, loader, device, build=None):
    """(net, regions): one airbench training call on `loader` building its net with `build` (its own
    `make_net` when None), its regions timed (see the docstring): {'setup', 'prepare', 'training',
    'call'} in seconds, 'prepare' None where the call was not split."""
    marks = {}

    def mark(region):
        synchronize(device)
        marks.setdefault(region, time.perf_counter())

    options = {}
    build = build or net_builder(train_fn)
    if build is not None:

        def marked_make_net():
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
    return net, {
        "setup": marks["prepare"] - marks["call"],
        "prepare": marks["training"] - marks["prepare"],
        "training": marks["end"] - marks["training"],
        "call": call,
    }


def run_reference(name, data, folder, seed=0, device="cuda", warmup=True, width=FULL_WIDTH):
    """Train airbench's `name` ('train94' | 'train96') on our data; a summary like our trainer's.

    `warmup` first makes one untimed, whole training call (as many steps as the timed one); once per
    process is enough, so a sweep of seeds warms up before its first only. The timed call's regions are
    those of the module's docstring. At a `width` other than FULL_WIDTH the net's widths are scaled.
    """
    if name not in REFERENCES:
        raise ValueError(f"unknown reference {name!r}; known: {', '.join(REFERENCES)}")
    airbench, library = check_available(device), importlib.import_module(REFERENCES[name])
    hyp = library.hyp
    train_fn = getattr(library, name)
    widths = scaled_widths(hyp["net"]["widths"], width) if width != FULL_WIDTH else None
    build = net_builder(train_fn, widths)
    export_for_airbench(data, os.path.join(folder, "cifar10"))
    with working_directory(folder), on_device(airbench, device), cudnn_benchmark(True):  # airbench's own
        loader = airbench.CifarLoader(
            "cifar10", train=True, batch_size=hyp["opt"]["batch_size"], aug=hyp["aug"], altflip=True, gpu=device
        )
        warmup_seconds = 0.0
        if warmup:
            options = {"make_net": build} if build else {}
            _, warmup_seconds = timed(lambda: train_fn(train_loader=loader, verbose=False, **options), device)
        torch.manual_seed(seed)
        net, regions = marked_call(train_fn, loader, device, build)
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
        "versions": {"airbench": airbench_version(airbench), "torch": torch.__version__, "cuda": torch.version.cuda},
        "seed": seed,
        "config": {
            "reference": {
                "name": name,
                "hyp": hyp,
                "width": width,
                "widths": widths or hyp["net"].get("widths"),
                "train_images": len(data.train_images),
            }
        },
        "history": [{"epoch": epochs, "train_seconds": seconds, "test_acc": accuracy}],
    }


def seed_data(data, subset, seed):
    """The training data of a seed: all of it, or the `subset` our run of that seed trains on."""
    if not subset:
        return data
    images, labels = train_subset(data.train_images, data.train_labels, subset, seed)
    return data._replace(train_images=images, train_labels=labels)


def run_seeds(name, data, seeds, device, width=FULL_WIDTH, subset=0):
    """run_reference over `seeds`, warmed up before the first only, each on its seed's data."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="airbench-") as folder:
        return [
            run_reference(name, seed_data(data, subset, seed), folder, seed, device, warmup=index == 0, width=width)
            for index, seed in enumerate(seeds)
        ]


def main(argv=None):
    """python -m speedrun.reference --name train94 --seeds 0-4 [run options]: airbench's trainer over the
    seeds on the data, device, `--model.width` and `--training.train_subset` the run options give, each
    seed's summary written to <--logging.folder>/seed<N>/summary.json (other run options are ignored)."""
    from speedrun.data.betons import load_cifar_betons
    from speedrun.runs.config import parse_args, parse_seeds, resolve_config
    from speedrun.system.device import pick_device

    parser = argparse.ArgumentParser(prog="python -m speedrun.reference", description=__doc__.splitlines()[0])
    parser.add_argument("--name", choices=sorted(REFERENCES), default="train94")
    parser.add_argument("--seeds", default="0", help="'0,1,2' or '0-4'")
    args, rest = parser.parse_known_args(argv)
    try:
        cfg = resolve_config(parse_args(rest, aliases={"--recipe": "--training.recipe"}, explicit_only=True))
        device = pick_device(cfg["training"]["device"])
        data = load_cifar_betons(cfg["data"]["train_dataset"], cfg["data"]["val_dataset"], device)
        folder = cfg["logging"]["folder"] or os.path.join("runs", f"reference-{args.name}")
        summaries = run_seeds(
            args.name, data, parse_seeds(args.seeds), device, cfg["model"]["width"], cfg["training"]["train_subset"]
        )
    except (ValueError, RuntimeError, OSError, ImportError) as error:  # a bad beton is a ValueError
        print(f"speedrun.reference: error: {error}", file=sys.stderr)
        sys.exit(1)
    for summary in summaries:
        os.makedirs(os.path.join(folder, f"seed{summary['seed']}"), exist_ok=True)
        with open(os.path.join(folder, f"seed{summary['seed']}", "summary.json"), "w") as f:
            json.dump(summary, f, indent=1, default=str)
        print(
            f"{args.name} seed {summary['seed']}: test acc {summary['final_test_acc']:.4f} "
            f"({summary['test_acc_without_tta']:.4f} without tta) in {summary['train_seconds']:.2f} s",
            flush=True,
        )


if __name__ == "__main__":
    main()
