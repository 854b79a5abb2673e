"""The campaign's plan: its steps in order of value, their budgets, the parts a GPU visit runs them in,
the sizes (a GPU's and the CPU smoke's), and what each kind of figure's clock covers."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# In order of value: the visit's order (what no visit's file answers yet first), then the steps that
# re-answer a question a visit already answered.
STEPS = (
    "data",
    "command",
    "record_vs_airbench",
    "variants",
    "correctness",
    "environment",
    "bench",
    "seed_recipe",
    "memory_compile",
    "sweep",
    "lr_grid",
    "candidate",
)
# Seconds each step may take on one GPU; past it the step's processes are killed and it is recorded as
# failed. Each from the H200 visits' own records (benchmarks/results/nvidia-h200*/campaign.json, a step's
# `seconds`; "visit 1" is nvidia-h200/, "visit 2" nvidia-h200-visit-2/) with about 10-50% to spare:
BUDGETS_S = {
    # the betons found: 8.1 s (visit 1), 10.3 s (visit 2's second command); written: not timed (the CPU
    # smoke's synthetic source and betons, 13 s on 2 shared cores)
    "data": 30,
    # the default command cold, then warm: never run on a GPU, but visit 2's seed_recipe (80.4 s) ran it
    # as its seed 0 (range test, compile, 24 epochs) beside a FLOP count and the TTA scoring: about 65 s a run
    "command": 130,
    # visit 1's part4 took 142.65 s for 10 seeds each, of which about 45 s once (the airbench probe, the
    # process's start, our first compile 27.7 s, airbench's warm-up): 5 seeds each, about 95 s
    "record_vs_airbench": 110,
    # what the visit has left for it (the steps before and after take their budgets): on visit 2 a run
    # took its compile (whole step 27.6 s, CUDA graphs 17.8 s) and about 16-20 s more (the two in about
    # 95 s of its second command's 218.85 s, beside a FLOP count and max_autotune killed at its 120 s
    # limit; visit 1's correctness: 16 s a process), so the six take about 230 s: the record recipe's first
    "variants": 140,
    # 86.4 s on visit 1 with the forward compiled (4 s a process); now three processes compile the whole
    # step under CUDA graphs (17.8 s cold on visit 2, less with inductor's caches warm)
    "correctness": 120,
    "environment": 40,  # 28.3 s (visit 1), 30.5 s (visit 2)
    "bench": 60,  # 40.6 s (visit 1)
    "seed_recipe": 150,  # 80.4 s for 1 seed (visit 2), 96.7 s for 2 (visit 1): about 16 s a seed more; 5 seeds
    "memory_compile": 110,  # never run on a GPU: two 1-epoch runs (cold, warm) and bench's memory stage
    # never run: 5 seeds in one process, the first like the warm command (about 50 s), each other its range
    # test, 24 epochs and evaluations: 25 s a seed (visit 1's seed_recipe of 2 seeds took 16 s more than
    # visit 2's of 1)
    "sweep": 150,
    # 179.6 s for 14 runs side by side (visit 2, the pick's run from seed_recipe); alone it first runs the
    # pick's own (about 65 s, as the command's cold run)
    "lr_grid": 300,
    "candidate": 120,  # 76.5 s (visit 2)
}
# One 10-minute command each. `data` starts every part, since a part may meet a fresh machine; it does
# nothing when the betons are already written.
PARTS = {
    "part1": ("environment", "data", "correctness", "bench", "memory_compile"),
    "part2": ("data", "variants"),
    "part3": ("data", "seed_recipe"),
    "part4": ("data", "record_vs_airbench"),
    # beyond the 25-minute plan: which peak LR and defaults train best (the second H200 visit answered
    # it and the defaults changed after it), then all the winners together
    "part5": ("data", "lr_grid", "candidate"),
    # one command of at most 10 minutes, what no visit's file answers yet first: the default command
    # (and whether CUDA graphs ran), the record recipe against airbench over enough seeds for
    # intervals, the step variants of both recipes, the kernel tests and resume; then what the
    # time left allows. It runs under a total (PART_TOTAL_S, or --total-s); a step left no time is
    # skipped. tests/test_campaign.py checks that the first five get their whole budgets.
    "visit": STEPS[: STEPS.index("lr_grid")],
}
# The campaign's --total-s when it runs this part and none is given: under 9 minutes, so that with the
# process's start, the probe and the archive the command stays under the 10-minute limit
PART_TOTAL_S = {"visit": 530, "part5": 505}
MIN_STEP_S = 30  # a step left less than this by --total-s is skipped rather than started
CORE_PARTS = ("part1", "part2", "part3", "part4")

# The loop variants, each a list of trainer options laid over the campaign's base (compile on, bf16,
# channels-last, batch 512, the default optimizer): the seed net's, and the record recipe's (`record_`,
# its own net, batch, optimizer and peak LR). One that compiles for longer than VARIANT_LIMIT_S is killed
# and recorded, and the next one runs; they run in the order the size (or --variants) names them.
# `{large_batch}` is the size's doubled batch. A variant whose option the trainer does not know (exit
# status 2 naming it) is recorded as skipped; one that fell back to another mode, as fallen back.
COMPILE_MODE_OPTION = "compile_mode"
RECIPE_OPTION = "--training.recipe"
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
# the three ways of running a step, on the record recipe too: never timed on a GPU
VARIANTS.update(
    {f"record_{name}": [RECIPE_OPTION, "speedrun", *VARIANTS[name]] for name in ("eager", "whole_step", "cuda_graphs")}
)
# A GPU's, so a visit's: the record recipe's first (no visit has timed them), then the seed net's (visit 2
# did: eager 5.48 ms, whole step 3.51, CUDA graphs 3.44), each recipe's eager first (no compile: the cheapest)
STEP_MODE_VARIANTS = ("record_eager", "record_whole_step", "record_cuda_graphs", "eager", "whole_step", "cuda_graphs")
VARIANT_LIMIT_S = 120  # one variant's run, compiling included (a 4-epoch run took about 30 s on an H200)
# The defaults study (lr_grid step): each run one change away from the default recipe, as (options,
# at the default optimizer's range-test pick); not at the pick, the run takes its own range test's.
# A study change or grid factor joins the candidate defaults when its one run beat the pick's run by
# more than this (one seed each: the seed recipe's seeds differed by 0.2 points on the H200)
CANDIDATE_MARGIN = 0.002
# Each value next to a default the second H200 visit chose (Adam's weight decay 0.2, weight average
# 0.99, div factor 25: benchmarks/results/nvidia-h200-visit-2), on both sides where it was a step from
# the old one, and the near-ties of that visit again (label smoothing 0.2, annealing to zero).
STUDY_CHANGES = {
    "sgd": (["--training.optimizer", "sgd"], False),
    "no-smoothing": (["--training.label_smoothing", "0"], True),
    "smoothing-0.2": (["--training.label_smoothing", "0.2"], True),
    "weight-decay-0.05": (["--training.weight_decay", "0.05"], True),
    "weight-decay-0.5": (["--training.weight_decay", "0.5"], True),
    "no-ema": (["--training.ema", "0"], True),
    "pad-constant": (["--augment.pad_mode", "constant"], True),
    "anneal-to-zero": (["--lr.anneal_to_zero", "true"], True),
    "div-factor-10": (["--lr.div_factor", "10"], True),
}
BENCH_STAGES = "beton_to_device,augment,forward,forward_backward,optimizer_step,train_step,versus_plain,eval"
TARGET = 0.94  # the test accuracy whose time-to-reach the leaderboard reports
SMOKE_PRECISION = ["--training.precision", "fp32"]
# the smoke's trainer: a tiny net on the CPU, its precision pinned
SMOKE_TRAINER = [
    *"--training.device cpu --model.width 8 --training.batch_size 64 --training.eval_batch_size 128".split(),
    *SMOKE_PRECISION,
]
SIZES = {
    "gpu": dict(
        device="cuda",
        trainer=["--training.device", "cuda"],
        pinned=[],
        compile="on",
        bench_size="full",
        kernel_tests="cuda",
        short_epochs=8,
        short_lr=0.0034,
        variant_epochs=4,
        batch=512,
        width=64,
        seed_epochs=24,
        seeds=5,
        candidate_seeds=3,
        record_options=[],
        synthetic_images=None,
        command_options=[],
        sweep_seeds=5,
        # 5 seeds each: the fewest the leaderboard's comparison gives its 95% intervals and verdict
        # for (tests/test_campaign.py), and what the record step's budget holds
        record_seeds=5,
        lr_grid=(0.25, 0.5, 2, 4, 8),
        study=tuple(STUDY_CHANGES),
        variants=STEP_MODE_VARIANTS,
        # Until a GPU has shown CUDA graphs running, a graph inductor will not capture (a mutated
        # input, a tensor on the CPU, dynamic shapes...) fails the run instead of running quietly
        # without CUDA graphs (torch._inductor.config.triton.cudagraph_or_error). It acts only
        # where CUDA graphs are asked for, so every command of the campaign gets it
        env={"TORCHINDUCTOR_CUDAGRAPH_OR_ERROR": "1"},
        budget_scale=1,
    ),
    # the smoke's precision is pinned: `auto` would train in bf16 on a CPU with native bf16 only
    "smoke": dict(
        device="cpu",
        trainer=SMOKE_TRAINER,
        pinned=SMOKE_PRECISION,
        compile="auto",
        bench_size="small",
        kernel_tests="cuda or borders",
        short_epochs=3,
        short_lr=0.05,
        variant_epochs=1,
        batch=64,
        width=8,
        seed_epochs=1,
        seeds=2,
        candidate_seeds=2,
        record_seeds=2,
        sweep_seeds=3,
        # the default command at the smoke's size (eager, as on a CPU: minutes of compiling spared)
        command_options=SMOKE_TRAINER,
        lr_grid=(0.5, 2),
        study=("sgd", "no-smoothing"),
        record_options=["--epochs", "1"],
        synthetic_images=(256, 128),
        # one of each kind of command
        variants=("base", "nchw", "large_batch", "cuda_graphs", "record_cuda_graphs"),
        # the kernel's tests under Triton's interpreter (no CUDA graphs on a CPU)
        env={"TRITON_INTERPRET": "1"},
        # the GPU's budgets doubled: on 2 shared CPU cores the smoke's command step took 115 s of
        # its 130 and bench 57 of 60; the smoke shows every step runs, the GPU keeps to the budgets
        budget_scale=2,
    ),
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
