"""Every option, in one place: the fastargs sections a run and the package's tools read.

Importing this module (which `speedrun.runs.config` does) registers all of them, so the option set is the
same whatever else was imported. A recipe (speedrun/runs/recipes.py) lays its own values over these defaults;
`python -m speedrun.train --print-config [--training.recipe R]` prints the result for a run.

A run reads the sections in RUN_SECTIONS; `leaderboard` belongs to `python -m speedrun.leaderboard`.
"""

import os

from fastargs import Param, Section
from fastargs.validation import Checker

from speedrun.data.augment import IMAGE_SIZE
from speedrun.engine.resolution import SMALLEST, parse_sides
from speedrun.optim.lr_finder import RULES
from speedrun.runs.derive import PICK_FACTORS
from speedrun.runs.recipes import RECIPES
from speedrun.system.device import COMPILE_CHOICES, COMPILE_MODES, PRECISIONS


class Choice(Checker):
    """One of a fixed list of strings (fastargs' OneOf, with a sorted, readable help)."""

    def __init__(self, *values):
        self.values = values

    def check(self, value):
        if value not in self.values:
            raise ValueError(value)
        return value

    def help(self):
        return "one of " + "|".join(self.values)


class Number(Checker):
    """An int or float within [low, high]."""

    def __init__(self, kind=float, low=float("-inf"), high=float("inf")):
        self.kind, self.low, self.high = kind, low, high

    def check(self, value):
        value = self.kind(value)
        if not self.low <= value <= self.high:
            raise ValueError(value)
        return value

    def help(self):
        name = "an int" if self.kind is int else "a float"
        return f"{name} in [{self.low}, {self.high}]"


class Boolean(Checker):
    """true/false, yes/no, 1/0 (fastargs' own Bool takes the string 'false' as True)."""

    def check(self, value):
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ValueError(value)

    def help(self):
        return "true or false"


class Sides(Checker):
    """A resolution curriculum's image sides, as resolution.parse_sides reads them."""

    def check(self, value):
        parse_sides(str(value))
        return str(value)

    def help(self):
        return f"image sides in [{SMALLEST}, {IMAGE_SIZE}] separated by commas, the last {IMAGE_SIZE}, or ''"


RUN_SECTIONS = ("training", "logging", "data", "model", "augment", "lr", "lr_test")

Section("training", "the training loop").params(
    recipe=Param(Choice(*RECIPES), "named set of defaults (see speedrun/runs/recipes.py)", default="seed"),
    epochs=Param(Number(int, 1, 10_000), "epochs to train", default=24),
    batch_size=Param(Number(int, 1, 1 << 16), "global batch size", default=512),
    # The defaults below that say "measured" were chosen by 24-epoch runs of this recipe on the JPEG
    # copy of CIFAR-10 (NVIDIA H200; benchmarks/results/nvidia-h200-visit-2; the table in docs/evidence.md).
    # Adam, as in the seed (measured): 90.30% at its range-test pick against SGD-Nesterov's 88.16% at 8x
    # its own, the best SGD peak of an earlier grid (benchmarks/results/nvidia-h200/runs/lr_grid).
    optimizer=Param(Choice("sgd", "adam", "muon"), "sgd = SGD with Nesterov momentum", default="adam"),
    momentum=Param(Number(float, 0, 1), "momentum (SGD, Muon) or beta1 (Adam)", default=0.9),
    weight_decay=Param(
        Number(float, 0, 1),
        "weight decay: L2 for SGD, decoupled for Adam "
        "(AdamW: lr x weight_decay a step); with Muon, L2 on what its SGD "
        "half trains (not the conv filters). Default per optimizer: Adam "
        "0.2 (measured), SGD and Muon 5e-4 (speedrun/runs/recipes.py)",
        default=0.2,
    ),
    label_smoothing=Param(Number(float, 0, 1), "cross-entropy label smoothing", default=0.1),
    bias_lr_scale=Param(
        Number(float, 1e-6, 1e6),
        "LR x this for the batch-norm biases and the record net's "
        "whitening bias, their weight decay / this (the same decay a "
        "step); 1 = off (airbench94 scales its BatchNorm biases' LR by "
        "64)",
        default=1.0,
    ),
    head_lr_scale=Param(Number(float, 1e-6, 1e6), "LR x this for the linear head; 1 = off", default=1.0),
    whiten_bias_epochs=Param(
        Number(int, 0, 10_000),
        "record net: train the whitening conv's bias in the first "
        "N epochs only, frozen after (0 = the whole run; airbench94: "
        "3)",
        default=0,
    ),
    lookahead=Param(
        Number(int, 0, 10_000),
        "lookahead period K: every K steps, after the update, a slow copy s "
        "of the weights w moves toward them, s += (1 - d)(w - s) with d = "
        "0.95**K x (step / total steps)**3, and w is set to s, as it is at "
        "the last step (0 = off; airbench94: 5)",
        default=0,
    ),
    ema=Param(
        Number(float, 0, 1),
        "decay of an exponential moving average of weights evaluated instead of the weights (0 = off; 0.99 measured)",
        default=0.99,
    ),
    seed=Param(Number(int, 0, 2**63 - 1), "seed of every random draw", default=0),
    device=Param(Choice("auto", "cuda", "cpu"), "auto = cuda when present", default="auto"),
    compile=Param(Choice(*COMPILE_CHOICES), "torch.compile the steps (auto = on CUDA)", default="auto"),
    compile_mode=Param(
        Choice(*COMPILE_MODES),
        "what compiling compiles: the forward (default, max-autotune) or "
        "the whole step (whole-step, cudagraph); auto = the fastest "
        "measured: cudagraph on CUDA, whole-step elsewhere",
        default="auto",
    ),
    compile_cache=Param(
        str,
        "folder for torch's compile artifacts, one file per step shape, device and "
        "version: a later process loads them instead of compiling again ('' = none)",
        default=os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "speedrun", "compile"),
    ),
    precision=Param(
        Choice(*PRECISIONS),
        "auto = bf16 autocast on CUDA and on CPUs with native bf16, float32 elsewhere",
        default="auto",
    ),
    channels_last=Param(Boolean(), "channels-last memory format (faster on CUDA and CPUs)", default=True),
    tta=Param(Number(int, 0, 2), "test-time augmentation: 0 none, 1 flip, 2 flip + translate (2 measured)", default=2),
    tta_below=Param(
        Number(float, 0, 1),
        "test-time augmentation only for the images whose plain top "
        "probability is below this (1 = every image; below 1, one host sync "
        "a batch)",
        default=1.0,
    ),
    tta_when=Param(
        Choice("last", "every"),
        "which evaluations use --training.tta: last = the run's last only "
        "(the others without, a sixth of the forward passes at tta 2), "
        "every = all",
        default="last",
    ),
    eval_batch_size=Param(Number(int, 1, 1 << 16), "evaluation batch size", default=1000),
    late_evals_from=Param(
        Number(int, 0, 10_000), "from this epoch on, evaluate several times an epoch (0 = off)", default=0
    ),
    late_evals_per_epoch=Param(Number(int, 1, 100), "evaluations per epoch from late_evals_from", default=1),
    train_subset=Param(Number(int, 0, 10**9), "train on a fixed random N of the images (0 = all)", default=0),
    resolutions=Param(
        Sides(),
        "resolution curriculum, e.g. 24,28,32: image sides, each an equal share of the "
        "epochs in order (epoch e of E, from 0, at sides[e x len(sides) // E]), the "
        "augmented batch downscaled to it (bilinear, antialiased) before the forward pass; "
        f"each in [{SMALLEST}, {IMAGE_SIZE}], the last {IMAGE_SIZE} (the test images'), no "
        "more sides than epochs; needs a net that pools globally (--model.arch record). "
        f"'' = off: every epoch at {IMAGE_SIZE}",
        default="",
    ),
    resume=Param(str, "continue the run in this folder from its last checkpoint", default=""),
    seeds=Param(
        str,
        "independent runs for these seeds ('0,1,2' or '0-4'), spread over the torchrun "
        "processes, each in <folder>/seed<N>",
        default="",
    ),
)

Section("logging", "what a run writes and shows").params(
    folder=Param(str, "run folder (default runs/<timestamp>)", default=""),
    plots=Param(Boolean(), "write PNG plots", default=True),
    progress=Param(Boolean(), "show progress bars", default=True),
    checkpoint=Param(
        Choice("every", "last", "none"),
        "every = every checkpoint_every epochs, keeping the previous "
        "one; last = one file, at the end (the default of seed sweeps); none",
        default="every",
    ),
    checkpoint_every=Param(
        Number(int, 0, 10_000), "with checkpoint every: every N epochs (0 = only at the end)", default=1
    ),
    overwrite=Param(Boolean(), "replace the run a run folder already holds", default=False),
)

Section("data", "CIFAR-10 data: the betons, and the source write_beton.py writes them from").params(
    train_dataset=Param(str, "train split beton (written by write_beton.py)", default="data/cifar10_train.beton"),
    val_dataset=Param(str, "test split beton (written by write_beton.py)", default="data/cifar10_test.beton"),
    source=Param(
        str,
        "write_beton.py: 'download', a CIFAR-10 .tar.gz or its extracted folder, or an image "
        "folder ROOT/{train,test}/<class>/*.png|jpg",
        default="download",
    ),
    cache_dir=Param(str, "write_beton.py: where 'download' keeps the archive", default="data/cache"),
    trust_pickles=Param(
        Boolean(), "write_beton.py: read the python version's pickles even without the official checksum", default=False
    ),
    num_workers=Param(
        Number(int, 0), "write_beton.py: processes decoding images and writing betons (0 = one per CPU core)", default=0
    ),
)

Section("model", "network shape").params(
    arch=Param(
        Choice("resnet", "record"),
        "resnet = the seed's Custom ResNet; record = the record recipe's net (speedrun/nets/record_net.py)",
        default="resnet",
    ),
    width=Param(Number(int, 1), "channels of the prep layer; later layers use 2x, 4x, 8x", default=64),
)

Section("augment", "GPU data augmentation").params(
    pad=Param(Number(int, 0, IMAGE_SIZE - 1), "random-crop padding in pixels (0 = no crop)", default=4),
    pad_mode=Param(Choice("reflect", "constant"), "how the crop fills pixels beyond the border", default="reflect"),
    cutout=Param(Number(int, 0, IMAGE_SIZE), "cutout box side in pixels (0 = no cutout)", default=8),
    flip=Param(Boolean(), "random horizontal flip", default=True),
    flip_mode=Param(
        Choice("random", "alternate"),
        "random: each image flips with p=1/2 every epoch; "
        "alternate: a random half flips on even epochs, the other half on odd ones",
        default="random",
    ),
    impl=Param(
        Choice("auto", "triton", "torch"),
        "auto = the Triton kernel for CUDA tensors when triton imports, else plain torch",
        default="auto",
    ),
)

Section("lr", "one-cycle learning-rate schedule").params(
    lr_max=Param(Number(float, 0), "peak learning rate; 0 = take it from the LR range test", default=0.0),
    div_factor=Param(
        Number(float, 1), "lr_min = lr_max / div_factor (start of the warm-up; 25 measured)", default=25.0
    ),
    peak_epoch=Param(
        Number(float, 0),
        "epoch at which the LR reaches lr_max (a run of no more epochs peaks at 5/24 of its length)",
        default=5.0,
    ),
    anneal_to_zero=Param(Boolean(), "decay to 0 instead of lr_min", default=False),
)

Section("lr_test", "LR range test run before training (picks the peak LR when lr.lr_max is 0)").params(
    enabled=Param(Boolean(), "run the test when lr.lr_max is 0", default=True),
    lr_start=Param(Number(float, 1e-12), "first LR of the sweep", default=1e-5),
    lr_end=Param(Number(float, 1e-12), "last LR of the sweep", default=10.0),
    num_steps=Param(
        Number(int, 0),
        "batches in the sweep, at least 8 (what the rules read); 0 = one epoch's worth, at least 64",
        default=0,
    ),
    smoothing=Param(Number(float, 0, 0.999), "loss moving-average factor (beta)", default=0.98),
    diverge_factor=Param(Number(float, 1), "stop once the smoothed loss exceeds this x its best", default=4.0),
    factor=Param(
        Number(float, 0),
        "lr_max = the pick x this; 0 = the factor measured for the optimizer "
        f"(speedrun/runs/derive.py: {', '.join(f'{k} {v:g}' for k, v in PICK_FACTORS.items())})",
        default=0.0,
    ),
    rule=Param(
        Choice(*RULES),
        "which pick (x factor) becomes lr_max: min_loss = the LR of the lowest loss (smoothed "
        "without lag); steepest = of the smoothed loss's steepest fall",
        default="min_loss",
    ),
)

Section("leaderboard", "multi-seed runs appended to the time-to-accuracy leaderboard").params(
    seeds=Param(str, "seeds to run: a list '0,1,2', a range '0-4', or both '0-2,7'", default="0,1,2"),
    target=Param(Number(float, 0, 1), "test accuracy (fraction) whose time-to-reach is reported", default=0.94),
    recipe=Param(Choice(*RECIPES), "our recipe to run (speedrun/runs/recipes.py)", default="seed"),
    reference=Param(
        Choice("none", "train94", "train96", "both"),
        "airbench reference trained on the same data and device, for a side-by-side ratio (on "
        "a CPU, a proxy: at --model.width and on each seed's --training.train_subset)",
        default="none",
    ),
    reference_order=Param(Choice("before", "after"), "run the reference before or after our seeds", default="after"),
    require_reference=Param(
        Boolean(),
        "stop before training when the reference cannot run here (airbench "
        "missing, or a device it cannot train on); false = our seeds run alone, saying why",
        default=False,
    ),
    file=Param(str, "leaderboard JSON-lines file to append to", default="benchmarks/results/leaderboard.jsonl"),
    markdown=Param(str, "where to write the rendered table", default="benchmarks/results/leaderboard.md"),
)
