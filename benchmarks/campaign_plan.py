"""The campaign's plan: its steps in order of value, their budgets, the parts a GPU visit runs them in,
the sizes (a GPU's and the CPU smoke's), and what each kind of figure's clock covers."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STEPS = ("environment", "data", "command", "seed_recipe", "lr_grid", "candidate", "variants", "bench", "correctness", "memory_compile",
         "record_vs_airbench")
# Seconds each step may take on one H100; past it the step's processes are killed and it is recorded
# as failed. The parts' budgets add up to under 9 minutes each and under 25 minutes in all.
BUDGETS_S = {"environment": 60, "data": 35, "command": 200, "correctness": 180, "bench": 120, "memory_compile": 110,
             "variants": 360, "seed_recipe": 190, "lr_grid": 480, "candidate": 150, "record_vs_airbench": 320}
# One 10-minute command each. `data` starts every part, since a part may meet a fresh machine; it does
# nothing when the betons are already written.
PARTS = {"part1": ("environment", "data", "correctness", "bench", "memory_compile"),
         "part2": ("data", "variants"),
         "part3": ("data", "seed_recipe"),
         "part4": ("data", "record_vs_airbench"),
         # beyond the 25-minute plan: which peak LR and defaults train best, then all the winners together
         "part5": ("data", "lr_grid", "candidate"),
         # one visit of about ten minutes, the accuracy evidence first: its budgets add up to more, so
         # it runs under a total (PART_TOTAL_S, or --total-s) and the steps left no time are skipped
         "visit": ("environment", "data", "command", "seed_recipe", "lr_grid", "candidate", "variants", "bench",
                   "correctness", "record_vs_airbench")}
PART_TOTAL_S = {"visit": 505, "part5": 505}  # the campaign's --total-s when it runs this part and none is given
MIN_STEP_S = 30  # a step left less than this by --total-s is skipped rather than started
CORE_PARTS = ("part1", "part2", "part3", "part4")

# The loop variants on the seed net, each a list of trainer options laid over the campaign's base
# (compile on, bf16, channels-last, batch 512, the default optimizer), the whole-step ones last: one
# that compiles for longer than VARIANT_LIMIT_S is killed and recorded, and the next one runs.
# `{large_batch}` is the size's doubled batch. A variant whose option the trainer does not know (exit
# status 2 naming it) is recorded as skipped; one that fell back to another mode, as fallen back.
COMPILE_MODE_OPTION = "compile_mode"
VARIANTS = {
    "base": [],  # the trainer's defaults: on CUDA the whole step under CUDA graphs (compile mode auto)
    "eager": ["--training.compile", "off"],
    "forward": [f"--training.{COMPILE_MODE_OPTION}", "default"],  # the net's forward alone compiled
    "nchw": ["--training.channels_last", "false"],
    "large_batch": ["--training.batch_size", "{large_batch}"],
    "max_autotune": [f"--training.{COMPILE_MODE_OPTION}", "max-autotune"],
    "whole_step": [f"--training.{COMPILE_MODE_OPTION}", "whole-step"],
    "cuda_graphs": [f"--training.{COMPILE_MODE_OPTION}", "cudagraph"],
}
VARIANT_LIMIT_S = 120  # one variant's run, compiling included (a 4-epoch run took about 30 s on an H200)
# The defaults study (lr_grid step): each run one change away from the default recipe, as (options,
# at the default optimizer's range-test pick); not at the pick, the run takes its own range test's.
# A study change or grid factor joins the candidate defaults when its one run beat the pick's run by
# more than this (one seed each: the seed recipe's seeds differed by 0.2 points on the H200)
CANDIDATE_MARGIN = 0.002
# Each value next to a default the second H200 visit chose (Adam's weight decay 0.2, weight average
# 0.99, div factor 25: benchmarks/results/nvidia-h200-visit-2), on both sides where it was a step from
# the old one, and the near-ties of that visit again (label smoothing 0.2, annealing to zero).
STUDY_CHANGES = {"sgd": (["--training.optimizer", "sgd"], False),
                 "no-smoothing": (["--training.label_smoothing", "0"], True),
                 "smoothing-0.2": (["--training.label_smoothing", "0.2"], True),
                 "weight-decay-0.05": (["--training.weight_decay", "0.05"], True),
                 "weight-decay-0.5": (["--training.weight_decay", "0.5"], True),
                 "no-ema": (["--training.ema", "0"], True),
                 "pad-constant": (["--augment.pad_mode", "constant"], True),
                 "anneal-to-zero": (["--lr.anneal_to_zero", "true"], True),
                 "div-factor-10": (["--lr.div_factor", "10"], True)}
BENCH_STAGES = "beton_to_device,augment,forward,forward_backward,optimizer_step,train_step,versus_plain,eval"
TARGET = 0.94  # the test accuracy whose time-to-reach the leaderboard reports
SMOKE_PRECISION = ["--training.precision", "fp32"]
SIZES = {
    "gpu": dict(device="cuda", trainer=["--training.device", "cuda"], pinned=[], compile="on", bench_size="full", kernel_tests="cuda",
                short_epochs=8, short_lr=0.0034, variant_epochs=4, batch=512, width=64, seed_epochs=24,
                seeds=5, candidate_seeds=3, record_seeds=10, record_options=[], synthetic_images=None,
                command_options=[], sweep_seeds=5,
                lr_grid=(0.25, 0.5, 2, 4, 8), study=tuple(STUDY_CHANGES), variants=tuple(VARIANTS)),
    # the smoke's precision is pinned: `auto` would train in bf16 on a CPU with native bf16 only
    "smoke": dict(device="cpu", trainer=["--training.device", "cpu", "--model.width", "8", "--training.batch_size", "64",
                           "--training.eval_batch_size", "128", *SMOKE_PRECISION], pinned=SMOKE_PRECISION,
                  compile="auto", bench_size="small", kernel_tests="cuda or borders", short_epochs=3,
                  short_lr=0.05, variant_epochs=1, batch=64, width=8, seed_epochs=1, seeds=2, candidate_seeds=2,
                  record_seeds=2, sweep_seeds=3,
                  # the default command at the smoke's size (eager, as on a CPU: minutes of compiling spared)
                  command_options=["--training.device", "cpu", "--model.width", "8", "--training.batch_size", "64",
                                   "--training.eval_batch_size", "128", *SMOKE_PRECISION],
                  lr_grid=(0.5, 2), study=("sgd", "no-smoothing"),
                  record_options=["--epochs", "1"], synthetic_images=(256, 128),
                  variants=("base", "nchw", "large_batch", "cuda_graphs")),  # one of each kind of command
}
TAIL_LINES = 25  # of a failed command's output, kept in the record
STACKS_WAIT_S = 3  # for a timed-out command to print its stacks before it is killed
POLL_S = 0.05  # how often the resume check looks for the checkpoint it kills the run after
ARCHIVE = "runs.tar.gz"
LEFT_OUT_OF_ARCHIVE = (".pt", ".beton", ".beton.json", ".tmp")  # checkpoints (52 MB each) and the data
README_MARKERS = ("<!-- campaign results: start -->", "<!-- campaign results: end -->")

# What is inside and outside the timed region of each kind of figure.
TIMED = {
    "train": "training seconds of our runs: every step (batch drawn and augmented on the device, forward, "
             "backward, optimizer) and the host sync before each evaluation; outside: the compile warm-up, "
             "the LR range test, evaluation, checkpoints, loading the betons. cuDNN autotuning on.",
    "step": "median seconds of an epoch after the first, divided by its steps (the `train` region, per step)",
    "airbench": "airbench's train94, per seed, in two regions on the host's clock between CUDA synchronisations: "
                "prepare (its net build, optimizer and whitening init) and loop (its epochs); total = prepare + "
                "loop. Outside: exporting our betons to airbench's files, its test loader (recorded apart as "
                "setup), the warm-up before the first seed (one whole untimed train94 run, as ours compiles "
                "before its clock) and the evaluation after each call. cuDNN autotuning on (airbench's own "
                "setting). Same betons, device and process as our seeds (speedrun/reference.py).",
    "device": "CUDA events around `calls` back-to-back calls after an untimed warm-up (compiling included "
              "there); median of the repeats (benchmarks/bench.py)",
    "compile": "the trainer's warm-up before its clock starts: 3 compiled train steps and an evaluation",
    "host": "the host's wall clock around the whole command, process start included",
}


def select_steps(text):
    """'all', or step and part names separated by commas -> step names, each once, in campaign order."""
    names = []
    for word in [w.strip() for w in text.split(",") if w.strip()] or ["all"]:
        if word == "all":
            names += STEPS
        elif word in PARTS:
            names += PARTS[word]
        elif word in STEPS:
            names.append(word)
        else:
            raise ValueError(f"unknown step {word!r}; steps: {', '.join(STEPS)}; parts: {', '.join(PARTS)}; or all")
    return [name for name in STEPS if name in names]
