"""Per-stage benchmark of the training pipeline, from the hardware's ceilings to a whole training run.

    python benchmarks/bench.py                              # full sizes on a GPU, a small smoke run on CPU
    python benchmarks/bench.py --stages ceilings,augment,train_step
    python benchmarks/bench.py --source cifar-10-binary.tar.gz        # write_beton and training on real data
    python benchmarks/bench.py --train-beton data/cifar10_train.beton --val-beton data/cifar10_test.beton

Every stage is warmed up, then timed over several repeats (CUDA events on a GPU, perf_counter on the
CPU); the JSON keeps the median and the minimum. The model stages call the trainer's own functions
(build_model, Loader, build_step, and the Step's pin) with its settings: channels-last, bf16
autocast and torch.compile on CUDA, eager float32 on the CPU. They run on random images held on the
device, since speed does not depend on pixel values; only beton_to_device and the training run read
betons. Trainer options (--model.width 32, --training.batch_size 1024, --recipe speedrun) apply to
the model stages and the training run alike.

Results go to <out>/<device>.json, e.g. nvidia-h100-80gb-hbm3.json, or cpu-amd-epyc-2-cores.json.

The stages: bench_data.py up to the net (ceilings, betons, augmentation), bench_model.py the net's
(forward to the whole step, memory, evaluation), bench_run.py a whole training run; bench_common.py
what they share (sizes, timing, the workload). This file: the command line and the report.
"""

import datetime
import re
import sys
import tempfile
import traceback
from pathlib import Path

import bench_data
import bench_model
import bench_run
import torch
from bench_common import Bench, SkipStage
from fastargs import Param, Section
from fastargs.validation import Checker

from speedrun.runs.config import Choice, defaults, merge, parse_args, resolve_config
from speedrun.system.device import device_name, pick_device
from speedrun.system.runlog import versions, write_json
from speedrun.system.stacks import dump_stacks_on_signal

STAGES = (
    "ceilings",
    "write_beton",
    "beton_to_device",
    "augment",
    "forward",
    "forward_backward",
    "optimizer_step",
    "train_step",
    "versus_plain",
    "step_modes",
    "host_overhead",
    "memory",
    "eval",
    "epoch",
    "train_24",
)


def stage_names(text):
    """'all' or 'a,b' -> the named stages in pipeline order; ValueError on an unknown name."""
    names = set(STAGES) if text.strip() == "all" else {name.strip() for name in text.split(",") if name.strip()}
    if not names or names - set(STAGES):
        raise ValueError(text)
    return [name for name in STAGES if name in names]


class StageList(Checker):
    def check(self, value):
        stage_names(value)
        return value

    def help(self):
        return "'all' or a comma-separated list of " + ",".join(STAGES)


Section("bench", "per-stage benchmark (benchmarks/bench.py)").params(
    size=Param(
        Choice("auto", "full", "small"),
        "full = the real sizes; small = a smoke run of seconds; auto = full on CUDA, small on CPU",
        default="auto",
    ),
    stages=Param(StageList(), "stages to run", default="all"),
    out=Param(str, "folder for <device>.json", default="benchmarks/results"),
)

ALIASES = {
    "--size": "--bench.size",
    "--stages": "--bench.stages",
    "--out": "--bench.out",
    "--source": "--data.source",
    "--train-beton": "--data.train_dataset",
    "--val-beton": "--data.val_dataset",
    "--epochs": "--training.epochs",
    "--recipe": "--training.recipe",
    "--seed": "--training.seed",
}


STAGE_MODULES = (bench_data, bench_model, bench_run)  # the stages up to the net, the net's, the whole run's
STAGE_FUNCTIONS = {
    name: next(getattr(module, f"stage_{name}") for module in STAGE_MODULES if hasattr(module, f"stage_{name}"))
    for name in STAGES
}


def add_fractions(stages):
    """Each rate as a fraction of its measured ceiling: TFLOP/s of peak, GB/s of copy bandwidth."""
    ceilings = stages.get("ceilings", {})
    peak, copy = ceilings.get("tflops"), ceilings.get("gbps")
    for name, record in stages.items():
        if name == "ceilings":
            continue
        parts = [
            record,
            *[part for key in ("impls", "large_batch", "variants") for part in record.get(key, {}).values()],
        ]
        for part in parts:
            if "tflops" in part:
                part["peak_fraction"] = part["tflops"] / peak if peak else None
            if "gbps" in part:
                part["bandwidth_fraction"] = part["gbps"] / copy if copy else None


def slugify(name):
    """'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3'."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def make_report(bench, stages, size, command):
    ceilings = stages.get("ceilings", {})
    run = bench.training or {}
    workload = bench._workload
    return {
        "device": device_name(bench.device),
        "torch": torch.__version__,
        "triton": versions()["triton"],
        "versions": versions(),
        "command": command,
        "size": size,
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "measured_peak_tflops": ceilings.get("tflops"),
        "measured_copy_gbps": ceilings.get("gbps"),
        "forward_gflops_per_image": workload.flops_per_image / 1e9 if workload else None,
        "train_step_peak_fraction": stages.get("train_step", {}).get("peak_fraction"),
        "speedup_over_plain": stages.get("versus_plain", {}).get("speedup_over_plain"),
        "policy": bench.policy.describe(),
        "augment_bandwidth_fraction": stages.get("augment", {}).get("bandwidth_fraction"),
        "train_24_epochs_s": run["train_seconds"] if run.get("epochs") == 24 else None,
        "compile_s": run["compile_seconds"] if run and bench.compiling else None,
        "test_accuracy": run.get("final_test_acc"),
        "training_betons_from": run.get("betons_from"),
        "config": bench.cfg,
        "stages": stages,
    }


NOTES = [
    ("tflops", "{:.3g} TFLOP/s"),
    ("peak_fraction", "{:.0%} of peak"),
    ("gbps", "{:.3g} GB/s"),
    ("bandwidth_fraction", "{:.0%} of copy"),
    ("impl", "{}"),
    ("speedup_over_torch", "{:.2f}x torch"),
    ("speedup_over_plain", "{:.2f}x plain"),
    ("images_per_s", "{:,.0f} img/s"),
    ("seconds_per_50k", "{:.3f} s per 50k"),
    ("peak_memory_gib", "{:.2f} GiB peak"),
    ("epochs", "epochs: {}"),
    ("compile_s", "compile {:.1f} s"),
    ("test_accuracy", "test acc {:.2%}"),
    ("skipped", "skipped: {}"),
    ("error", "error: {}"),
]


def format_table(stages):
    lines = [f"{'stage':<18}{'median ms':>12}{'min ms':>12}{'reps':>6}  rate", "-" * 90]
    for name, record in stages.items():
        notes = ", ".join(form.format(record[key]) for key, form in NOTES if record.get(key) is not None)
        times = [f"{record[key] * 1e3:.3f}" if record.get(key) is not None else "-" for key in ("median_s", "min_s")]
        lines.append(f"{name:<18}{times[0]:>12}{times[1]:>12}{record.get('repeats', '-'):>6}  {notes}")
    return "\n".join(lines)


def run_stages(bench, names):
    stages = {}
    for name in names:
        print(f"bench: {name}", file=sys.stderr, flush=True)
        try:
            stages[name] = STAGE_FUNCTIONS[name](bench)
        except SkipStage as reason:
            stages[name] = {"median_s": None, "skipped": str(reason)}
        except Exception as error:  # one broken stage should not cost the others' numbers
            traceback.print_exc()
            stages[name] = {"median_s": None, "error": f"{type(error).__name__}: {error}"}
    return stages


def main(argv=None):
    command = sys.argv if argv is None else [sys.argv[0], *argv]
    given = parse_args(argv, description=__doc__.splitlines()[0], aliases=ALIASES, explicit_only=True)
    dump_stacks_on_signal()
    options = merge(defaults()["bench"], given.pop("bench", {}))
    device = pick_device(resolve_config(given)["training"]["device"])
    size = options["size"] if options["size"] != "auto" else "full" if device.type == "cuda" else "small"
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        bench = Bench(given, size, device, Path(tmp))
        stages = run_stages(bench, stage_names(options["stages"]))
    add_fractions(stages)
    report = make_report(bench, stages, size, command)
    path = Path(options["out"]) / f"{slugify(report['device'])}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, report)
    print(format_table(stages))
    print(f"wrote {path}")
    return 1 if any("error" in record for record in stages.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
