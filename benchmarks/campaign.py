"""One GPU campaign: every open GPU check and measurement, as named steps of one command.

    python benchmarks/campaign.py --source CIFAR10 --out OUT/part1 --steps part1    # on a GPU, one part
    python benchmarks/campaign.py --smoke --out OUT                                  # every step, tiny, on a CPU
    python benchmarks/campaign.py report OUT/part1 OUT/part2 ...                     # the parts as one answer

Each step runs its work in processes of their own under the step's time budget. A step that fails,
crashes or runs past its budget is recorded (failed, with its output's last lines; skipped, with why)
and the next step runs. After every step OUT/campaign.json, OUT/campaign.md and OUT/runs.tar.gz (run
folders and logs, without checkpoints or betons) are rewritten, so a campaign cut short still reports.
`report` merges the parts into benchmarks/results/<device>/ and regenerates the results section of
benchmarks/README.md and the leaderboard table from them.
"""
import argparse
import datetime
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from speedrun import leaderboard  # noqa: E402  (no torch: the campaign itself never touches the device)
from speedrun.atomic import replacing  # noqa: E402

# ----------------------------------------------------------------------------------------------
# the plan: steps in order of value, their budgets, the parts a GPU visit runs them in, the sizes

STEPS = ("environment", "data", "seed_recipe", "lr_grid", "bench", "correctness", "memory_compile", "variants",
         "record_vs_airbench")
# Seconds each step may take on one H100; past it the step's processes are killed and it is recorded
# as failed. The parts' budgets add up to under 9 minutes each and under 25 minutes in all.
BUDGETS_S = {"environment": 60, "data": 35, "correctness": 180, "bench": 120, "memory_compile": 110,
             "variants": 360, "seed_recipe": 190, "lr_grid": 480, "record_vs_airbench": 320}
# One 10-minute command each. `data` starts every part, since a part may meet a fresh machine; it does
# nothing when the betons are already written.
PARTS = {"part1": ("environment", "data", "correctness", "bench", "memory_compile"),
         "part2": ("data", "variants"),
         "part3": ("data", "seed_recipe"),
         "part4": ("data", "record_vs_airbench"),
         "part5": ("data", "lr_grid"),  # beyond the 25-minute plan: which peak LR trains best
         # one visit of about ten minutes, the accuracy evidence first; run it with --total-s and the
         # steps that find no time left are recorded as skipped
         "visit": ("environment", "data", "seed_recipe", "lr_grid", "bench", "correctness", "variants",
                   "record_vs_airbench")}
MIN_STEP_S = 30  # a step left less than this by --total-s is skipped rather than started
CORE_PARTS = ("part1", "part2", "part3", "part4")

# The loop variants on the seed net, each a list of trainer options laid over the campaign's base
# (compile on, bf16, channels-last, batch 512). `{large_batch}` is the size's doubled batch. A variant
# whose option the trainer does not know (exit status 2 naming it) is recorded as skipped.
COMPILE_MODE_OPTION = "compile_mode"
VARIANTS = {
    "base": [],
    "eager": ["--training.compile", "off"],
    "nchw": ["--training.channels_last", "false"],
    "large_batch": ["--training.batch_size", "{large_batch}"],
    "whole_step": [f"--training.{COMPILE_MODE_OPTION}", "whole-step"],
    "cuda_graphs": [f"--training.{COMPILE_MODE_OPTION}", "cudagraph"],
    "max_autotune": [f"--training.{COMPILE_MODE_OPTION}", "max-autotune"],
}
BENCH_STAGES = "beton_to_device,augment,forward,forward_backward,optimizer_step,train_step,versus_plain,eval"
TARGET = 0.94  # the test accuracy whose time-to-reach the leaderboard reports
SIZES = {
    "gpu": dict(trainer=["--training.device", "cuda"], compile="on", bench_size="full", kernel_tests="cuda",
                short_epochs=8, short_lr=0.0034, variant_epochs=4, batch=512, width=64, seed_epochs=24,
                seeds=5, record_seeds=10, record_options=[], synthetic_images=None,
                lr_grid=(0.5, 2, 4, 8, 16), variants=tuple(VARIANTS)),
    "smoke": dict(trainer=["--training.device", "cpu", "--model.width", "8", "--training.batch_size", "64",
                           "--training.eval_batch_size", "128"],
                  compile="auto", bench_size="small", kernel_tests="cuda or borders", short_epochs=3,
                  short_lr=0.05, variant_epochs=1, batch=64, width=8, seed_epochs=1, seeds=2, record_seeds=2,
                  lr_grid=(0.5, 2),
                  record_options=["--epochs", "1"], synthetic_images=(256, 128),
                  variants=("base", "nchw", "large_batch", "cuda_graphs")),  # one of each kind of command
}
TAIL_LINES = 25  # of a failed command's output, kept in the record
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
    "airbench": "airbench's whole train94 call (its whitening init and every step), CUDA-synchronised; "
                "outside: one untimed warm-up run per campaign, loading data, the final evaluation. cuDNN "
                "autotuning on (airbench's own setting). Same betons, device and process as our seeds.",
    "device": "CUDA events around `calls` back-to-back calls after an untimed warm-up (compiling included "
              "there); median of the repeats (benchmarks/bench.py)",
    "compile": "the trainer's warm-up before its clock starts: 3 compiled train steps and an evaluation",
    "host": "the host's wall clock around the whole command, process start included",
}


class Skip(Exception):
    """A step or part that cannot run here; the message says why."""


class StepError(Exception):
    """A failed step or part: the message, the last lines of the output behind it, what was measured."""

    def __init__(self, message, tail="", result=None):
        super().__init__(message)
        self.tail, self.result = tail, result


class StepTimeout(StepError):
    pass


class BudgetSpent(Skip):
    """No time left in the step for the next command: that part is skipped, the step has failed."""


# ----------------------------------------------------------------------------------------------
# running commands under a step's budget


@dataclass
class Context:
    """What the steps share: sizes, folders, the children's environment, the current step's deadline."""
    size_name: str
    work: Path
    source: str
    env: dict
    python: str = sys.executable
    step: str = ""
    deadline: float = float("inf")
    campaign_deadline: float = float("inf")
    overrides: dict = field(default_factory=dict)
    cache: dict = field(default_factory=dict)

    @property
    def size(self):
        return {**SIZES[self.size_name], **self.overrides}

    @property
    def folder(self):
        return self.work / self.step

    @property
    def betons(self):
        return self.work / "data" / "train.beton", self.work / "data" / "test.beton"


@dataclass
class Done:
    returncode: int
    output: str
    command: str


def display(ctx, argv):
    """A command as a reader would type it: `python`, paths relative to the work folder."""
    words = ["python" if word == ctx.python else str(word).replace(str(ctx.work), "WORK") for word in argv]
    return shlex.join(words)


def tail(text, lines=TAIL_LINES):
    return "\n".join(text.rstrip().splitlines()[-lines:])


def start(ctx, label, argv, env=None):
    """Start `argv` in a process group of its own (so a timeout kills all it started), output to
    <step folder>/<label>.log."""
    if time.monotonic() >= ctx.deadline:
        raise BudgetSpent(f"{label}: the step's budget was spent before it could start")
    log = ctx.folder / f"{label}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as handle:
        process = subprocess.Popen([str(word) for word in argv], cwd=ROOT, env={**ctx.env, **(env or {})},
                                   stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    process.label, process.log, process.command = label, log, display(ctx, argv)
    return process


def kill(process):
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def finish(ctx, process, check=True):
    """Wait for `process` until the step's deadline; raise on a timeout, or on failure with `check`."""
    try:
        returncode = process.wait(timeout=max(0.0, ctx.deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        kill(process)
        raise StepTimeout(f"timeout: {process.label} was still running at the end of the step's budget "
                          f"({BUDGETS_S.get(ctx.step, '?')} s) and was killed",
                          tail(process.log.read_text(errors="replace"))) from None
    output = process.log.read_text(errors="replace")
    if check and returncode:
        raise StepError(f"{process.label} exited with status {returncode}: {process.command}", tail(output))
    return Done(returncode, output, process.command)


def run(ctx, label, argv, env=None, check=True):
    return finish(ctx, start(ctx, label, argv, env), check)


def run_parts(parts, results=None):
    """Run each named part in order, recording its result, skip or failure into `results` as it goes (a
    part may read those before it), so that one failing part leaves the others their turn; returns
    (results, names of the failed parts)."""
    results, failed = {} if results is None else results, []
    for name, part in parts.items():
        try:
            results[name] = {"status": "passed", **part()}
        except Skip as why:
            results[name] = {"status": "skipped", "reason": str(why)}
        except StepError as error:
            results[name] = {"status": "failed", "error": str(error), "tail": error.tail, **(error.result or {})}
            failed.append(name)
    return results, failed


def fail_if_any(failed, result, what):
    if failed:
        raise StepError(f"{what} failed: {', '.join(failed)}", result=result)
    return result


# ----------------------------------------------------------------------------------------------
# the commands the steps run


def data_options(ctx):
    train, test = ctx.betons
    return ["--data.train_dataset", train, "--data.val_dataset", test]


def train_command(ctx, folder, *options, epochs=None, lr=None, checkpoint="none"):
    """`python -m speedrun.train` on the campaign's betons and base options, one run folder, no plots
    (the curves are in campaign.json and metrics.jsonl) and no progress bars; `lr` None runs the LR
    range test."""
    argv = [ctx.python, "-m", "speedrun.train", *ctx.size["trainer"], "--training.compile", ctx.size["compile"],
            *data_options(ctx), "--logging.folder", folder, "--logging.checkpoint", checkpoint,
            "--logging.plots", "false", "--logging.progress", "false"]
    argv += ["--epochs", epochs] if epochs else []
    argv += ["--lr.lr_max", lr] if lr else []
    return argv + list(options)


def bench_command(ctx, stages, out, *options):
    return [ctx.python, "benchmarks/bench.py", "--size", ctx.size["bench_size"], "--stages", stages,
            "--out", out, *options]


def read_summary(folder):
    return json.loads((Path(folder) / "summary.json").read_text())


def read_bench(folder):
    [path] = Path(folder).glob("*.json")
    return json.loads(path.read_text())


def forward_flops(ctx):
    """Forward FLOPs per image of the seed net at the campaign's width, counted once per campaign."""
    if "flops" not in ctx.cache:
        code = ("import sys; from speedrun.model import CustomResNet; from speedrun.summary import forward_flops; "
                "print(forward_flops(CustomResNet(width=int(sys.argv[1]))))")
        done = run(ctx, "flops", [ctx.python, "-c", code, ctx.size["width"]])
        ctx.cache["flops"] = int(done.output.split()[-1])
    return ctx.cache["flops"]


def step_time(summary):
    """Median seconds per training step over the epochs after the first (all of them if only one)."""
    epochs = {}
    for record in summary["history"]:  # several records an epoch when late evaluations are on
        epoch = int(-(-record["epoch"] // 1))
        epochs[epoch] = epochs.get(epoch, 0.0) + record["epoch_seconds"]
    seconds = [value for epoch, value in sorted(epochs.items())][1:] or list(epochs.values())
    return statistics.median(seconds) / summary["steps_per_epoch"]


def figure(name, text, *, value=None, timed=None, command=None, accuracy=None, tflops=None, gbps=None):
    """One reported number: its text, the value behind it, what the clock covered, the command that
    measured it, the accuracy that came with it and the rate compared with a measured ceiling."""
    return {"name": name, "text": text, "value": value, "timed": timed, "command": command,
            "accuracy": accuracy, "tflops": tflops, "gbps": gbps}


def pct(value):
    return f"{100 * value:.2f}%"


def mean_std(values, form="{:.2f}"):
    stats = leaderboard.seed_stats(values)
    return f"{form.format(stats['mean'])} ± {form.format(stats['std'])} (n={stats['n']})", stats["mean"]


# ----------------------------------------------------------------------------------------------
# the steps


def step_environment(ctx):
    """Device, driver, torch, triton, clocks; the measured bf16 matrix-product and copy ceilings."""
    done = run(ctx, "ceilings", bench_command(ctx, "ceilings", ctx.folder / "bench"))
    report = read_bench(ctx.folder / "bench")
    ceilings = report["stages"]["ceilings"]
    if "error" in ceilings:
        raise StepError(f"ceilings: {ceilings['error']}", tail(done.output))
    gpu = nvidia_smi(ctx, "name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,clocks.max.mem,"
                          "power.limit,temperature.gpu,persistence_mode")
    figures = [figure("bf16 matrix product", f"{ceilings['bf16_tflops']:.4g} TFLOP/s", value=ceilings["bf16_tflops"],
                      timed="device", command=done.command),
               figure("fp32 matrix product", f"{ceilings['fp32_tflops']:.4g} TFLOP/s", value=ceilings["fp32_tflops"],
                      timed="device", command=done.command),
               figure("device copy (read + write)", f"{ceilings['gbps']:.4g} GB/s", value=ceilings["gbps"],
                      timed="device", command=done.command)]
    return {"device": report["device"], "versions": report["versions"], "policy": report["policy"],
            "nvidia_smi": gpu, "tflops": ceilings["tflops"], "bf16_tflops": ceilings["bf16_tflops"],
            "fp32_tflops": ceilings["fp32_tflops"], "gbps": ceilings["gbps"], "matmul_size": ceilings["matmul_size"],
            "figures": figures}


def nvidia_smi(ctx, fields):
    """`nvidia-smi --query-gpu` as a dict, or a note saying why there is none."""
    if not shutil.which("nvidia-smi"):
        return {"note": "nvidia-smi not found (no NVIDIA driver here)"}
    done = run(ctx, "nvidia-smi", ["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader"], check=False)
    values = [value.strip() for value in done.output.splitlines()[0].split(",")] if done.output else []
    return dict(zip(fields.split(","), values)) if not done.returncode else {"note": tail(done.output, 3)}


def step_data(ctx):
    """The train and test betons, written once from the CIFAR-10 source (a synthetic one in the smoke)."""
    train, test = ctx.betons
    source = ctx.source
    if ctx.size["synthetic_images"]:
        source = ctx.work / "synthetic-source"
        if not source.exists():
            code = ("import sys; from pathlib import Path; sys.path.insert(0, 'benchmarks'); "
                    "from bench_data import write_synthetic_source; "
                    "write_synthetic_source(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))")
            run(ctx, "synthetic-source", [ctx.python, "-c", code, source, *ctx.size["synthetic_images"]])
    if not source:
        if train.exists() and test.exists():
            return {"betons": "kept", "figures": []}
        raise StepError("no CIFAR-10 source: give --source (an archive, its folder or an image folder)")
    started = time.perf_counter()
    done = run(ctx, "write_beton", [ctx.python, "write_beton.py", "--data.source", source, "--data.train_dataset",
                                    train, "--data.val_dataset", test, "--data.num_workers", os.cpu_count()])
    seconds = time.perf_counter() - started
    images = sum(json.loads(Path(f"{path}.json").read_text())["count"] for path in (train, test))
    if "skipped:" in done.output:
        return {"betons": "already written", "images": images, "figures": []}
    return {"betons": "written", "images": images, "seconds": seconds, "figures": [
        figure("write_betons, train + test", f"{images / seconds:,.0f} images/s ({seconds:.1f} s)",
               value=images / seconds, timed="host", command=done.command)]}


def step_correctness(ctx):
    """On the device: the kernel's bit-exact tests against the torch reference, one short compiled
    training run, and a run killed after its second checkpoint, resumed, and compared with it."""
    short, results = ctx.folder / "short", {}
    parts = {"kernel": lambda: kernel_tests(ctx),
             "short_run": lambda: short_run(ctx, short),
             "resume_after_kill": lambda: resume_after_kill(ctx, ctx.folder / "killed", results.get("short_run"))}
    _, failed = run_parts(parts, results)
    figures = [fig for record in results.values() for fig in record.pop("figures", [])]
    return fail_if_any(failed, {"checks": results, "figures": figures}, "checks")


def kernel_tests(ctx):
    done = run(ctx, "kernel-tests", [ctx.python, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                     "tests/test_augment.py", "-k", ctx.size["kernel_tests"]], check=False)
    counts = {kind: int(number) for number, kind in re.findall(r"(\d+) (passed|failed|skipped|errors?)", done.output)}
    if done.returncode or not counts.get("passed"):
        raise StepError(f"kernel tests: exit status {done.returncode}, {counts or 'nothing ran'}", tail(done.output))
    return {"tests": counts, "figures": [figure("kernel bit-exact tests", f"{counts['passed']} passed, "
                                                f"{counts.get('skipped', 0)} skipped", command=done.command)]}


def short_run(ctx, folder):
    epochs = ctx.size["short_epochs"]
    done = run(ctx, "short-run", train_command(ctx, folder, epochs=epochs, lr=ctx.size["short_lr"],
                                               checkpoint="every"))
    summary = read_summary(folder)
    return {"epochs": epochs, "final_test_acc": summary["final_test_acc"], "train_seconds": summary["train_seconds"],
            "compile_seconds": summary["compile_seconds"], "figures": [
                figure(f"short compiled run, {epochs} epochs", f"{summary['train_seconds']:.2f} s, "
                       f"compile {summary['compile_seconds']:.1f} s", value=summary["train_seconds"], timed="train",
                       command=done.command, accuracy=summary["final_test_acc"])]}


def resume_after_kill(ctx, folder, uninterrupted):
    """The short run again, killed (SIGKILL) once its second checkpoint is on disk, then resumed: it must
    finish every epoch once; its accuracy is compared with the uninterrupted run's."""
    epochs = ctx.size["short_epochs"]
    process = start(ctx, "killed", train_command(ctx, folder, epochs=epochs, lr=ctx.size["short_lr"],
                                                 checkpoint="every"))
    while process.poll() is None and not (folder / "checkpoint.prev.pt").exists():
        if time.monotonic() >= ctx.deadline:
            kill(process)
            raise StepTimeout("timeout: no second checkpoint before the end of the step's budget")
        time.sleep(POLL_S)
    if process.poll() is not None:
        raise StepError(f"the run ended (status {process.returncode}) before it could be killed: give it more "
                        f"epochs", tail(process.log.read_text(errors="replace")))
    kill(process)
    killed_after = len((folder / "metrics.jsonl").read_text().splitlines())
    done = run(ctx, "resumed", [ctx.python, "-m", "speedrun.train", "--resume", folder, "--logging.progress", "false"])
    summary = read_summary(folder)
    seen = [record["epoch"] for record in summary["history"]]
    if seen != [float(epoch) for epoch in range(1, epochs + 1)]:
        raise StepError(f"the resumed run's evaluations are at epochs {seen}, not 1..{epochs} once each",
                        tail(done.output))
    reference = (uninterrupted or {}).get("final_test_acc")
    return {"killed_after_epochs": killed_after, "final_test_acc": summary["final_test_acc"],
            "uninterrupted_test_acc": reference,
            "matches_uninterrupted": reference == summary["final_test_acc"] if reference is not None else None,
            "figures": [figure("resume after kill", f"killed after {killed_after} epochs, resumed to {epochs}; "
                               f"accuracy {'same as' if reference == summary['final_test_acc'] else 'vs'} "
                               f"the uninterrupted run's" + (f" {pct(reference)}" if reference is not None else ""),
                               command=done.command, accuracy=summary["final_test_acc"])]}


def step_bench(ctx):
    """The per-stage benchmark on the betons; the augmentation kernel also on a batch large enough not
    to be launch-bound."""
    train, test = ctx.betons
    done = run(ctx, "bench", bench_command(ctx, BENCH_STAGES, ctx.folder / "bench", "--train-beton", train,
                                           "--val-beton", test), check=False)
    report = read_bench(ctx.folder / "bench")
    stages = report["stages"]
    figures = [bench_figure(name, stages[name], done.command) for name in BENCH_STAGES.split(",") if name in stages]
    result = {"policy": report["policy"], "stages": stages, "figures": figures}
    errors = [name for name, record in stages.items() if "error" in record]
    if errors or done.returncode:
        raise StepError(f"stages failed: {', '.join(errors) or 'the command'}", tail(done.output), result)
    return result


BENCH_NOTES = (("images_per_s", "{images_per_s:,.0f} images/s"),
               ("gbps", "{gbps:.4g} GB/s at {batch_size} images ({impl})"),
               ("tflops", "{tflops:.4g} TFLOP/s"),
               ("speedup_over_torch", "{speedup_over_torch:.2f}x torch"),
               ("speedup_over_plain", "{speedup_over_plain:.2f}x the plain step"),
               ("seconds_per_50k", "{seconds_per_50k:.3f} s per 50k"))


def bench_figure(name, record, command):
    """A bench stage as one figure: its headline rate."""
    if "skipped" in record or "error" in record:
        return figure(name, f"{'skipped' if 'skipped' in record else 'error'}: "
                            f"{record.get('skipped') or record.get('error')}", command=command)
    parts = [f"{record['median_s'] * 1e3:.3f} ms"]
    parts += [form.format(**record) for key, form in BENCH_NOTES if record.get(key)]
    timed = "host" if name == "beton_to_device" else "device"
    return figure(name, ", ".join(parts), value=record["median_s"], timed=timed, command=command,
                  tflops=record.get("tflops"), gbps=record.get("gbps"))


def step_memory_compile(ctx):
    """Cold and warm compile time (a 1-epoch run with empty compile caches, then again with them
    filled) and the peak device memory of train steps."""
    caches = ctx.folder / "caches"
    env = {"TORCHINDUCTOR_CACHE_DIR": str(caches / "inductor"), "TRITON_CACHE_DIR": str(caches / "triton")}
    figures, result = [], {}
    for label in ("cold", "warm"):
        done = run(ctx, f"compile-{label}", train_command(ctx, ctx.folder / label, epochs=1, lr=ctx.size["short_lr"]),
                   env=env)
        seconds = read_summary(ctx.folder / label)["compile_seconds"]
        result[f"compile_{label}_s"] = seconds
        figures.append(figure(f"compile, {label} caches", f"{seconds:.1f} s", value=seconds, timed="compile",
                              command=done.command))
    done = run(ctx, "memory", bench_command(ctx, "memory", ctx.folder / "bench"), env=env)
    memory = read_bench(ctx.folder / "bench")["stages"]["memory"]
    peak = memory.get("peak_memory_gib")
    result["peak_memory_gib"] = peak
    figures.append(figure("peak memory of train steps", f"{peak:.2f} GiB" if peak is not None else
                          f"not measured on this device ({memory.get('error', 'no CUDA memory counters')})",
                          value=peak, command=done.command))
    if ctx.size["compile"] != "on":
        result["note"] = "compile is off on this device: compile times are the trainer's eager warm-up (0)"
    return {**result, "figures": figures}


def step_variants(ctx):
    """The seed net's loop variants: each one's train step time (with its share of the bf16 peak) and a
    short run's accuracy."""
    flops = 3 * forward_flops(ctx)
    parts = {name: (lambda name=name, options=options: variant(ctx, name, options, flops))
             for name, options in VARIANTS.items() if name in ctx.size["variants"]}
    results, failed = run_parts(parts)
    figures = [fig for record in results.values() for fig in record.pop("figures", [])]
    figures += [figure(f"variant {name}", f"{record['status']}: {record.get('reason') or record.get('error')}")
                for name, record in results.items() if record["status"] != "passed"]
    return fail_if_any(failed, {"variants": results, "train_flops_per_image": flops, "figures": figures}, "variants")


def variant(ctx, name, options, flops):
    options = [option.format(large_batch=2 * ctx.size["batch"]) for option in options]
    folder, epochs = ctx.folder / name, ctx.size["variant_epochs"]
    done = run(ctx, name, train_command(ctx, folder, *options, epochs=epochs, lr=ctx.size["short_lr"]), check=False)
    if done.returncode == 2 and COMPILE_MODE_OPTION in done.output:
        raise Skip(f"option not available: --training.{COMPILE_MODE_OPTION} ({tail(done.output, 1)})")
    if done.returncode:
        raise StepError(f"exit status {done.returncode}: {done.command}", tail(done.output))
    summary = read_summary(folder)
    seconds, compiling = step_time(summary), summary["compile_seconds"]
    batch = summary["config"]["training"]["batch_size"]
    tflops = flops * batch / seconds / 1e12
    text = (f"{seconds * 1e3:.2f} ms at batch {batch}, {batch / seconds:,.0f} images/s, {tflops:.4g} TFLOP/s, "
            f"compile {compiling:.1f} s")
    return {"options": options, "step_ms": seconds * 1e3, "batch_size": batch, "tflops": tflops,
            "final_test_acc": summary["final_test_acc"], "compile_seconds": compiling,
            "figures": [figure(f"variant {name}: train step", text, value=seconds, timed="step", command=done.command,
                               accuracy=summary["final_test_acc"], tflops=tflops)]}


def step_seed_recipe(ctx):
    """The seed recipe over several seeds: its LR range test once (seed 0), then the other seeds at the
    LR it found; time, accuracy and curves."""
    seeds, epochs = ctx.size["seeds"], ctx.size["seed_epochs"]
    first = run(ctx, "seed0", train_command(ctx, ctx.folder, "--seeds", "0", epochs=epochs))
    lr = read_summary(ctx.folder / "seed0")["lr_max"]
    ctx.cache["sgd_pick"] = (lr, read_summary(ctx.folder / "seed0")["final_test_acc"])
    rest = (run(ctx, "seeds", train_command(ctx, ctx.folder, "--seeds", f"1-{seeds - 1}", epochs=epochs, lr=lr))
            if seeds > 1 else first)
    summaries = [read_summary(ctx.folder / f"seed{seed}") for seed in range(seeds)]
    entry = leaderboard.make_entry(summaries, name="seed", kind="ours", target=TARGET,
                                   session=leaderboard.new_session(), recipe="seed")
    stats = leaderboard.summarise_runs(summaries, TARGET)
    command = f"{first.command}; then {rest.command}"
    return {"lr_max": lr, "epochs": epochs, "stats": stats, "entries": [entry], "curves": mean_curves(summaries),
            "figures": seed_figures(ctx, summaries, stats, command) + [
                figure("seed recipe: LR from the range test", f"{lr:.4g}", value=lr, command=first.command)]}


def step_lr_grid(ctx):
    """The seed recipe's full schedule (seed 0) at multiples of the SGD range-test pick, Adam at its own
    pick and SGD at the pick without label smoothing, all side by side on the device: accuracies only
    (their times share the device and are not reported)."""
    epochs, results = ctx.size["seed_epochs"], {}
    if "sgd_pick" not in ctx.cache:  # the seed recipe's first run is the pick's run; else run it here
        run(ctx, "sgd-x1", train_command(ctx, ctx.folder / "sgd-x1", epochs=epochs))
        summary = read_summary(ctx.folder / "sgd-x1")
        ctx.cache["sgd_pick"] = (summary["lr_max"], summary["final_test_acc"])
    pick, accuracy = ctx.cache["sgd_pick"]
    results["sgd-x1"] = {"status": "passed", "optimizer": "sgd", "lr_max": pick, "factor": 1,
                         "final_test_acc": accuracy}
    grid = {f"sgd-x{factor:g}": (["--training.optimizer", "sgd"], pick * factor, factor)
            for factor in ctx.size["lr_grid"]}
    grid["adam-pick"] = (["--training.optimizer", "adam"], None, None)
    grid["sgd-x1-no-smoothing"] = (["--training.optimizer", "sgd", "--training.label_smoothing", "0"], pick, 1)
    processes = {name: start(ctx, name, train_command(ctx, ctx.folder / name, *options, epochs=epochs, lr=lr))
                 for name, (options, lr, _) in grid.items()}
    for name, process in processes.items():
        options, lr, factor = grid[name]
        try:
            done = finish(ctx, process)
            summary = read_summary(ctx.folder / name)
            results[name] = {"status": "passed", "options": options, "lr_max": summary["lr_max"], "factor": factor,
                             "final_test_acc": summary["final_test_acc"], "command": done.command}
        except StepError as error:
            results[name] = {"status": "failed", "error": str(error), "tail": error.tail}
    sgd = {r["factor"]: r["final_test_acc"] for name, r in results.items()
           if name.startswith("sgd-x") and "smoothing" not in name and r["status"] == "passed"}
    best = max(sgd, key=sgd.get)
    summary = {"pick": pick, "accuracy_by_factor": sgd, "best_factor": best, "pick_within_factor_2": 0.5 <= best <= 2}
    figures = [figure(f"{epochs}-epoch run {name}", f"{pct(r['final_test_acc'])} at peak LR {r['lr_max']:.3g}",
                      value=r["final_test_acc"], accuracy=r["final_test_acc"], command=r.get("command"))
               for name, r in results.items() if r["status"] == "passed"]
    figures.append(figure("lr grid sgd: best peak", f"{best:g} x pick {pick:.3g} ({pct(sgd[best])}); pick "
                          f"{pct(sgd[1])}", value=best * pick, accuracy=sgd[best]))
    failed = [name for name, r in results.items() if r["status"] == "failed"]
    return fail_if_any(failed, {"runs": results, "sgd": summary, "epochs": epochs, "figures": figures}, "runs")


def seed_figures(ctx, summaries, stats, command):
    """Training time (with its share of the peak), accuracy and time to the target over the seeds."""
    first, seeds = summaries[0], len(summaries)
    images = first["epochs"] * first["steps_per_epoch"] * first["config"]["training"]["batch_size"]
    tflops = 3 * forward_flops(ctx) * images / stats["train_seconds"]["mean"] / 1e12
    time_text, _ = mean_std([s["train_seconds"] for s in summaries])
    accuracy_text, _ = mean_std([s["final_test_acc"] * 100 for s in summaries])
    reached, accuracy = stats["time_to_target"], stats["accuracy"]["mean"]
    title = f"seed recipe, {first['epochs']} epochs"
    return [figure(f"{title}: training time", f"{time_text} s", value=stats["train_seconds"]["mean"], timed="train",
                   command=command, accuracy=accuracy, tflops=tflops),
            figure(f"{title}: test accuracy", f"{accuracy_text} %", value=accuracy, command=command, accuracy=accuracy),
            figure(f"{title}: time to {pct(TARGET)}",
                   f"{reached['mean']:.2f} s ({stats['reached']}/{seeds} seeds)" if reached
                   else f"not reached (0/{seeds} seeds)",
                   value=reached and reached["mean"], timed="train", command=command)]


def mean_curves(summaries):
    """Per evaluation epoch: the mean over seeds of train loss and test accuracy."""
    by_epoch = {}
    for summary in summaries:
        for record in summary["history"]:
            by_epoch.setdefault(record["epoch"], []).append(record)
    return [{"epoch": epoch, "train_loss": statistics.fmean(r["train_loss"] for r in records),
             "test_acc": statistics.fmean(r["test_acc"] for r in records), "seeds": len(records)}
            for epoch, records in sorted(by_epoch.items())]


def step_record_vs_airbench(ctx):
    """The record recipe and airbench's train94 on the same betons, device and process, several seeds
    each; airbench warmed up once. Where airbench cannot run, ours runs alone and the reason is kept."""
    probe = run(ctx, "airbench-probe", [ctx.python, "-c", "from speedrun.reference import check_available; "
                                        "check_available('cuda')"], check=False)
    reason = tail(probe.output, 1) if probe.returncode else None
    file = ctx.folder / "leaderboard.jsonl"
    done = run(ctx, "leaderboard", [
        ctx.python, "-m", "speedrun.leaderboard", "--recipe", "speedrun",
        "--seeds", f"0-{ctx.size['record_seeds'] - 1}",
        "--reference", "none" if reason else "train94", "--target", TARGET, *ctx.size["trainer"],
        "--training.compile", ctx.size["compile"], *ctx.size["record_options"], *data_options(ctx),
        "--leaderboard.file", file, "--leaderboard.markdown", ctx.folder / "leaderboard.md",
        "--logging.folder", ctx.folder / "runs", "--logging.checkpoint", "none", "--logging.plots", "false",
        "--logging.progress", "false"])
    entries = leaderboard.read_entries(file)
    figures = [entry_figure(entry, done.command) for entry in entries]
    if reason:
        figures.append(figure("airbench train94", f"skipped: {reason}"))
    ours = next(entry for entry in entries if entry["kind"] == "ours")
    ratios = {entry["name"]: statistics.fmean(ours["train_seconds"]) / statistics.fmean(entry["train_seconds"])
              for entry in entries if entry["kind"] == "reference"}
    figures += [figure(f"record recipe time / {name}", f"{ratio:.2f}x", value=ratio, command=done.command)
                for name, ratio in ratios.items()]
    return {"entries": entries, "reference_skipped": reason, "time_ratios": ratios, "figures": figures,
            **({"note": f"airbench skipped: {reason}"} if reason else {})}


def entry_figure(entry, command):
    time_text, _ = mean_std(entry["train_seconds"])
    accuracy_text, accuracy = mean_std([100 * value for value in entry["accuracies"]])
    return figure(f"{entry['name']} ({entry['kind']}), {len(entry['seeds'])} seeds",
                  f"{time_text} s; test accuracy {accuracy_text} %", value=statistics.fmean(entry["train_seconds"]),
                  timed="airbench" if entry["kind"] == "reference" else "train", command=command,
                  accuracy=accuracy / 100)


STEP_FUNCTIONS = {name: globals()[f"step_{name}"] for name in STEPS}


# ----------------------------------------------------------------------------------------------
# bookkeeping: one record per step


def run_step(ctx, name, function, budget):
    """Run one step under its budget; its record: status passed / failed (error, last lines) / skipped."""
    ctx.step = name
    if name != "data":  # a step's runs start afresh; the betons are kept for the next part
        shutil.rmtree(ctx.folder, ignore_errors=True)
    ctx.folder.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    ctx.deadline = min(started + budget, ctx.campaign_deadline)
    what = " ".join((function.__doc__ or "").strip().split("\n\n")[0].split())
    record = {"name": name, "what": what, "budget_s": budget}
    try:
        if ctx.deadline - started < MIN_STEP_S:
            raise Skip(f"the campaign's --total-s left {max(0, ctx.deadline - started):.0f} s for it")
        record.update(status="passed", result=function(ctx))
    except BudgetSpent as why:
        record.update(status="failed", error=f"timeout: {why}", tail="")
    except Skip as why:
        record.update(status="skipped", reason=str(why))
    except StepError as error:
        record.update(status="failed", error=str(error), tail=error.tail, result=error.result)
    except Exception as error:  # a bug in a step must not cost the others their turn
        record.update(status="failed", error=f"{type(error).__name__}: {error}", tail=tail(traceback.format_exc()))
    record["seconds"] = round(time.monotonic() - started, 2)
    return record


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


def probe_header(ctx):
    """Device, versions and cuDNN of this machine, read by a child process (the campaign never imports
    torch, so a broken device cannot take the bookkeeping down with it)."""
    code = ("import json, torch; from speedrun.device import device_name, pick_device; "
            "from speedrun.runlog import versions; print(json.dumps({'device': device_name(pick_device('auto')), "
            "'versions': versions(), 'cudnn': torch.backends.cudnn.version() if torch.cuda.is_available() else None}))")
    ctx.step, ctx.deadline = "probe", time.monotonic() + 120
    try:
        return json.loads(run(ctx, "probe", [ctx.python, "-c", code]).output.splitlines()[-1])
    except (StepError, ValueError, IndexError) as error:
        return {"device": "unknown", "versions": {}, "probe_error": str(error)}


def clocks(ctx):
    """The GPU's clocks and temperature now, to show every step ran at the same clocks."""
    if not shutil.which("nvidia-smi"):
        return None
    ctx.step, ctx.deadline = "clocks", time.monotonic() + 10
    try:
        return nvidia_smi(ctx, "clocks.sm,clocks.mem,temperature.gpu,power.draw")
    except StepError:
        return None


# ----------------------------------------------------------------------------------------------
# the answer: campaign.json, campaign.md, the archive


def slugify(name):
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def environment_of(campaign):
    for step in campaign["steps"]:
        if step["name"] == "environment" and step["status"] == "passed":
            return step["result"]
    return {}


def fraction(fig, ceilings):
    """A figure's rate as a fraction of the measured ceiling (matrix product or copy), or None."""
    if fig.get("tflops") and ceilings.get("tflops"):
        return fig["tflops"] / ceilings["tflops"], "matmul"
    if fig.get("gbps") and ceilings.get("gbps"):
        return fig["gbps"] / ceilings["gbps"], "copy"
    return None


def cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def step_note(step):
    result = step.get("result") or {}
    return step.get("reason") or step.get("error") or result.get("note") or ""


def command_number(commands, command):
    """'c3' for the third command seen; the commands are listed in full once, under the table."""
    if not command:
        return ""
    return f"c{commands.setdefault(command, len(commands) + 1)}"


def render(campaign):
    """campaign.md: the header, every step's status, every figure, the timed regions, what failed."""
    env = environment_of(campaign)
    versions = campaign.get("versions", {})
    commands = {}  # each command once, numbered in order of appearance
    lines = [f"# Campaign: {campaign['device']}", "",
             f"{campaign['size']} campaign, {campaign['started']}; torch {versions.get('torch')}, "
             f"triton {versions.get('triton')}, CUDA {versions.get('cuda')}, cuDNN {campaign.get('cudnn')}, "
             f"driver {env.get('nvidia_smi', {}).get('driver_version', 'not read')}. On CUDA, cuDNN autotuning "
             f"is on for our runs and the reference alike.", "",
             "Run as: " + "; ".join(f"`{command}`" for command in campaign["commands"]), "",
             "## Steps", "", "| # | step | status | seconds (budget) | what | note |", "|---|---|---|---|---|---|"]
    for number, step in enumerate(campaign["steps"], 1):
        lines.append(f"| {number} | {step['name']} | **{step['status']}** | {step.get('seconds', 0):.0f} "
                     f"({step['budget_s']}) | {cell(step['what'])} | {cell(step_note(step))} |")
    lines += ["", "## Figures", "", "Fractions are of this device's measured ceilings (environment step): "
              "TFLOP/s of the matrix-product rate in the training precision, GB/s of the copy bandwidth.", "",
              "| step | figure | value | of ceiling | accuracy | device | timed | command |",
              "|---|---|---|---|---|---|---|---|"]
    for step in campaign["steps"]:
        for fig in (step.get("result") or {}).get("figures", []):
            share = fraction(fig, env)
            lines.append("| " + " | ".join(cell(value) for value in [
                step["name"], fig["name"], fig["text"], f"{share[0]:.1%} of {share[1]}" if share else "",
                pct(fig["accuracy"]) if fig.get("accuracy") is not None else "", step.get("device", campaign["device"]),
                fig.get("timed") or "", command_number(commands, fig.get("command"))]) + " |")
    lines += ["", "## What each clock covers", ""] + [f"- **{key}**: {text}" for key, text in TIMED.items()]
    lines += ["", "## Commands (WORK is the campaign's work folder)", ""]
    lines += [f"- c{number}: `{command}`" for command, number in commands.items()]
    failures = [step for step in campaign["steps"] if step["status"] == "failed"]
    for step in failures:
        lines += ["", f"## {step['name']}: {step['error']}", "", "```", step.get("tail") or "(no output)", "```"]
        for name, part in ((step.get("result") or {}).get("variants") or (step.get("result") or {}).get("checks")
                           or {}).items():
            if part.get("status") == "failed":
                lines += ["", f"{name}: {part['error']}", "", "```", part.get("tail") or "(no output)", "```"]
    return "\n".join(lines) + "\n"


def keep_in_archive(info):
    return None if info.name.endswith(LEFT_OUT_OF_ARCHIVE) or "/caches" in info.name else info


def write_answer(campaign, out, work=None):
    """campaign.json, campaign.md and (given the work folder) the archive of its run folders and logs."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "campaign.json").write_text(json.dumps(campaign, indent=2, sort_keys=True, default=str) + "\n")
    (out / "campaign.md").write_text(render(campaign))
    if work is not None:
        with replacing(out / ARCHIVE) as temporary, tarfile.open(temporary, "w:gz") as archive:
            for child in sorted(work.iterdir()):
                if child.is_dir() and child.name not in ("data", "synthetic-source"):
                    archive.add(child, arcname=child.name, filter=keep_in_archive)


def run_campaign(options):
    """Every selected step in order; the answer rewritten after each. Returns the campaign."""
    size = "smoke" if options.smoke else "gpu"
    work = Path(options.work or ROOT / "runs" / f"campaign-{size}").resolve()
    out = Path(options.out).resolve()
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env = {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1",
           **({"TRITON_INTERPRET": "1"} if options.smoke else {})}
    ctx = Context(size, work, options.source or "", env, options.python,
                  overrides={"seeds": options.seeds} if options.seeds else {})
    if options.total_s:
        ctx.campaign_deadline = time.monotonic() + options.total_s
    work.mkdir(parents=True, exist_ok=True)
    command = shlex.join(["python", "benchmarks/campaign.py", *options.argv])
    campaign = {"size": size, "commands": [command], "started": now(), "steps": [], "timed_regions": TIMED,
                "archive": ARCHIVE, **probe_header(ctx)}
    plan = [(name, STEP_FUNCTIONS[name], BUDGETS_S[name]) for name in select_steps(options.steps)]
    return run_steps(ctx, plan, campaign, lambda: write_answer(campaign, out, work))


def run_steps(ctx, plan, campaign, after_each):
    """Each (name, function, budget) of `plan` in turn, whatever became of the one before; each record
    goes into `campaign`, then `after_each` writes the answer so far."""
    for name, function, budget in plan:
        print(f"campaign: {name} (budget {budget} s)", file=sys.stderr, flush=True)
        at_start = clocks(ctx)
        record = run_step(ctx, name, function, budget)
        record.update(device=campaign["device"], clocks_at_start=at_start)
        campaign["steps"].append(record)
        print(f"campaign: {name} {record['status']} in {record['seconds']:.0f} s {step_note(record)}",
              file=sys.stderr, flush=True)
        campaign["finished"] = now()
        after_each()
    return campaign


def now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# ----------------------------------------------------------------------------------------------
# report: the parts of a visit as one answer


def merge_campaigns(campaigns):
    """One campaign from several parts: each step's latest record (a step repeated in several parts,
    like `data`, keeps its last run), in campaign order; the header of the part with the environment."""
    by_name = {}
    for campaign in campaigns:
        for step in campaign["steps"]:
            by_name[step["name"]] = step
    first = next((c for c in campaigns if environment_of(c)), campaigns[0])
    return {**first, "commands": [command for c in campaigns for command in c["commands"]],
            "started": min(c["started"] for c in campaigns), "finished": max(c.get("finished", "") for c in campaigns),
            "steps": [by_name[name] for name in STEPS if name in by_name]}


def merge_archives(folders, out):
    """One archive holding each part's archive under the part's folder name."""
    with replacing(out / ARCHIVE) as temporary, tarfile.open(temporary, "w:gz") as merged:
        for folder in folders:
            path = folder / ARCHIVE
            if not path.exists():
                continue
            with tarfile.open(path) as part:
                for member in part.getmembers():
                    data = part.extractfile(member) if member.isfile() else None
                    member.name = f"{folder.name}/{member.name}"
                    merged.addfile(member, data)


def readme_section(campaign, folder):
    """The results section of benchmarks/README.md: the step table and the figures, from campaign.md."""
    text = render(campaign)
    body = text[text.index("## Steps"):].replace("## ", "#### ")
    return (f"{README_MARKERS[0]}\n### Campaign on {campaign['device']} ({campaign['started'][:10]})\n\n"
            f"From `{folder}/campaign.md` (generated by `python benchmarks/campaign.py report`); leaderboard "
            f"in `{folder}/leaderboard.md`, run folders in `{folder}/{ARCHIVE}`.\n\n"
            f"{body.strip()}\n{README_MARKERS[1]}")


def update_readme(path, section):
    text = path.read_text()
    start, end = README_MARKERS
    if start not in text or end not in text:
        raise ValueError(f"{path} has no campaign results markers ({start} ... {end})")
    path.write_text(text[:text.index(start)] + section + text[text.index(end) + len(end):])


def report(options):
    folders = [Path(folder) for folder in options.parts]
    campaigns = [json.loads((folder / "campaign.json").read_text()) for folder in folders]
    campaign = merge_campaigns(campaigns)
    out = Path(options.out or ROOT / "benchmarks" / "results" / slugify(campaign["device"]))
    write_answer(campaign, out)
    merge_archives(folders, out)
    entries = [entry for step in campaign["steps"] for entry in (step.get("result") or {}).get("entries", [])]
    (out / "leaderboard.md").write_text(leaderboard.render_markdown(entries))
    readme = options.readme if options.readme is not None else (
        "" if campaign["size"] == "smoke" else str(ROOT / "benchmarks" / "README.md"))
    if readme:
        shown = os.path.relpath(out, ROOT) if out.resolve().is_relative_to(ROOT) else out.name
        update_readme(Path(readme), readme_section(campaign, shown))
    updated = f"; updated {readme}" if readme else ""
    print(f"wrote {out}/campaign.json, campaign.md, leaderboard.md, {ARCHIVE}{updated}")
    return campaign


# ----------------------------------------------------------------------------------------------
# the command line


def parse(argv):
    if argv[:1] == ["report"]:
        parser = argparse.ArgumentParser(prog="campaign.py report", description="merge a visit's parts into one answer")
        parser.add_argument("parts", nargs="+", help="the --out folders of the parts")
        parser.add_argument("--out", help="default benchmarks/results/<device>")
        parser.add_argument("--readme", help="README whose campaign section to regenerate ('' for none; default "
                                             "benchmarks/README.md, none for a smoke campaign)")
        return parser.parse_args(argv[1:]), report
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for campaign.json, campaign.md and the archive")
    parser.add_argument("--steps", default="all", help=f"steps or parts, comma-separated: {', '.join(STEPS)}; "
                                                      f"{', '.join(PARTS)}; all")
    parser.add_argument("--source", default=os.environ.get("CIFAR10_SOURCE", ""),
                        help="CIFAR-10: an archive, its folder or an image folder (default $CIFAR10_SOURCE)")
    parser.add_argument("--work", help="folder for betons, runs and logs (default runs/campaign-<gpu|smoke>)")
    parser.add_argument("--smoke", action="store_true", help="every step at the smallest size, on the CPU")
    parser.add_argument("--total-s", type=float, help="seconds for the whole campaign: each step gets what is "
                                                      "left of it at most, a step left too little is skipped")
    parser.add_argument("--seeds", type=int, help="seeds of the seed recipe (default: the size's)")
    parser.add_argument("--python", default=sys.executable, help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    try:
        select_steps(options.steps)
    except ValueError as error:
        parser.error(str(error))
    options.argv = argv
    return options, run_campaign


def main(argv=None):
    options, command = parse(list(sys.argv[1:] if argv is None else argv))
    campaign = command(options)
    failed = [step["name"] for step in campaign["steps"] if step["status"] == "failed"]
    if failed:
        print(f"campaign: failed steps: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
