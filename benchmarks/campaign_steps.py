"""The campaign's checks and measurements of the device and the loop: environment and ceilings, the
betons, correctness (kernel tests, a short run, resume after a kill), the per-stage benchmark, the
default command (cold and warm, whether CUDA graphs ran) and its seed sweep, compile time and memory,
and the loop variants of both recipes; with the trainer and benchmark commands they run."""

import json
import os
import re
import statistics
import time
from pathlib import Path

from campaign_plan import BENCH_STAGES, COMPILE_MODE_OPTION, POLL_S, RECIPE_OPTION, VARIANT_LIMIT_S, VARIANTS
from campaign_report import figure, pct
from campaign_runner import Skip, StepError, StepTimeout, fail_if_any, kill, nvidia_smi, run, run_parts, start, tail

from speedrun.system.clock import PARTS  # no torch: the campaign itself never touches the device


def data_options(ctx):
    train, test = ctx.betons
    return ["--data.train_dataset", train, "--data.val_dataset", test]


def train_command(ctx, folder, *options, epochs=None, lr=None, checkpoint="none"):
    """`python -m speedrun.train` on the campaign's betons and base options, one run folder, no plots
    (the curves are in campaign.json and metrics.jsonl) and no progress bars; `lr` None runs the LR
    range test."""
    argv = [
        ctx.python,
        "-m",
        "speedrun.train",
        *ctx.size["trainer"],
        "--training.compile",
        ctx.size["compile"],
        *data_options(ctx),
        "--logging.folder",
        folder,
        "--logging.checkpoint",
        checkpoint,
        "--logging.plots",
        "false",
        "--logging.progress",
        "false",
    ]
    argv += ["--epochs", epochs] if epochs else []
    argv += ["--lr.lr_max", lr] if lr else []
    return argv + list(options)


def bench_command(ctx, stages, out, *options):
    return [
        ctx.python,
        "benchmarks/bench.py",
        "--size",
        ctx.size["bench_size"],
        "--stages",
        stages,
        "--out",
        out,
        *ctx.size["pinned"],
        *options,
    ]


def read_summary(folder):
    return json.loads((Path(folder) / "summary.json").read_text())


def read_bench(folder):
    [path] = Path(folder).glob("*.json")
    return json.loads(path.read_text())


def forward_flops(ctx, recipes=("seed",)):
    """{recipe: forward FLOPs per image of its net at the campaign's width}, the ones not yet counted in
    this campaign counted in one process (a child: the campaign never imports torch)."""
    counted = ctx.cache.setdefault("flops", {})
    missing = [recipe for recipe in recipes if recipe not in counted]
    if missing:
        code = (
            "import json, sys; from speedrun.runs.config import resolve_config; "
            "from speedrun.nets.model import build_model; from speedrun.summary import forward_flops; "
            "width = int(sys.argv[1]); "
            "print(json.dumps({recipe: forward_flops(build_model(resolve_config({'training': {'recipe': recipe}, "
            "'model': {'width': width}}))) for recipe in sys.argv[2:]}))"
        )
        done = run(ctx, "flops", [ctx.python, "-c", code, ctx.size["width"], *missing])
        counted.update(json.loads(done.output.splitlines()[-1]))
    return {recipe: counted[recipe] for recipe in recipes}


def step_time(summary):
    """Median seconds per training step over the epochs after the first (all of them if only one)."""
    epochs = {}
    for record in summary["history"]:  # several records an epoch when late evaluations are on
        epoch = int(-(-record["epoch"] // 1))
        epochs[epoch] = epochs.get(epoch, 0.0) + record["epoch_seconds"]
    seconds = [value for epoch, value in sorted(epochs.items())][1:] or list(epochs.values())
    return statistics.median(seconds) / summary["steps_per_epoch"]


def step_environment(ctx):
    """Device, driver, torch, triton, clocks; the measured bf16 matrix-product and copy ceilings."""
    done = run(ctx, "ceilings", bench_command(ctx, "ceilings", ctx.folder / "bench"))
    report = read_bench(ctx.folder / "bench")
    ceilings = report["stages"]["ceilings"]
    if "error" in ceilings:
        raise StepError(f"ceilings: {ceilings['error']}", tail(done.output))
    gpu = nvidia_smi(
        ctx,
        "name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,clocks.max.mem,"
        "power.limit,temperature.gpu,persistence_mode",
    )
    rates = (
        ("bf16 matrix product", "bf16_tflops", "TFLOP/s"),
        ("fp32 matrix product", "fp32_tflops", "TFLOP/s"),
        ("device copy (read + write)", "gbps", "GB/s"),
    )
    figures = [
        figure(name, f"{ceilings[key]:.4g} {unit}", value=ceilings[key], timed="device", command=done.command)
        for name, key, unit in rates
    ]
    return {
        "device": report["device"],
        "versions": report["versions"],
        "policy": report["policy"],
        "nvidia_smi": gpu,
        "tflops": ceilings["tflops"],
        "bf16_tflops": ceilings["bf16_tflops"],
        "fp32_tflops": ceilings["fp32_tflops"],
        "gbps": ceilings["gbps"],
        "matmul_size": ceilings["matmul_size"],
        "figures": figures,
    }


def step_data(ctx):
    """The train and test betons, written once from the CIFAR-10 source (a synthetic one in the smoke)."""
    train, test = ctx.betons
    source = ctx.source
    if ctx.size["synthetic_images"]:
        source = ctx.work / "synthetic-source"
        if not source.exists():
            code = (
                "import sys; from pathlib import Path; sys.path.insert(0, 'benchmarks'); "
                "from bench_data import write_synthetic_source; "
                "write_synthetic_source(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))"
            )
            run(ctx, "synthetic-source", [ctx.python, "-c", code, source, *ctx.size["synthetic_images"]])
    if not source:
        if train.exists() and test.exists():
            return {"betons": "kept", "figures": []}
        raise StepError("no CIFAR-10 source: give --source (an archive, its folder or an image folder)")
    started = time.perf_counter()
    done = run(
        ctx,
        "write_beton",
        [
            ctx.python,
            "write_beton.py",
            "--data.source",
            source,
            "--data.train_dataset",
            train,
            "--data.val_dataset",
            test,
            "--data.num_workers",
            os.cpu_count(),
        ],
    )
    seconds = time.perf_counter() - started
    images = sum(json.loads(Path(f"{path}.json").read_text())["count"] for path in (train, test))
    if "skipped:" in done.output:
        return {"betons": "already written", "images": images, "figures": []}
    return {
        "betons": "written",
        "images": images,
        "seconds": seconds,
        "figures": [
            figure(
                "write_betons, train + test",
                f"{images / seconds:,.0f} images/s ({seconds:.1f} s)",
                value=images / seconds,
                timed="host",
                command=done.command,
            )
        ],
    }


def step_correctness(ctx):
    """On the device: the kernel's bit-exact tests against the torch reference, one short compiled
    training run, and a run killed after its second checkpoint, resumed, and compared with it."""
    short, results = ctx.folder / "short", {}
    parts = {
        "kernel": lambda: kernel_tests(ctx),
        "short_run": lambda: short_run(ctx, short),
        "resume_after_kill": lambda: resume_after_kill(ctx, ctx.folder / "killed", results.get("short_run")),
    }
    _, failed = run_parts(parts, results)
    figures = [fig for record in results.values() for fig in record.pop("figures", [])]
    return fail_if_any(failed, {"checks": results, "figures": figures}, "checks")


def kernel_tests(ctx):
    done = run(
        ctx,
        "kernel-tests",
        [
            ctx.python,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/test_augment.py",
            "-k",
            ctx.size["kernel_tests"],
        ],
        check=False,
    )
    counts = {kind: int(number) for number, kind in re.findall(r"(\d+) (passed|failed|skipped|errors?)", done.output)}
    if done.returncode or not counts.get("passed"):
        raise StepError(f"kernel tests: exit status {done.returncode}, {counts or 'nothing ran'}", tail(done.output))
    return {
        "tests": counts,
        "figures": [
            figure(
                "kernel bit-exact tests",
                f"{counts['passed']} passed, {counts.get('skipped', 0)} skipped",
                command=done.command,
            )
        ],
    }


def short_run(ctx, folder):
    epochs = ctx.size["short_epochs"]
    done = run(ctx, "short-run", train_command(ctx, folder, epochs=epochs, lr=ctx.size["short_lr"], checkpoint="every"))
    summary = read_summary(folder)
    return {
        "epochs": epochs,
        "final_test_acc": summary["final_test_acc"],
        "train_seconds": summary["train_seconds"],
        "compile_seconds": summary["compile_seconds"],
        "figures": [
            figure(
                f"short compiled run, {epochs} epochs",
                f"{summary['train_seconds']:.2f} s, compile {summary['compile_seconds']:.1f} s",
                value=summary["train_seconds"],
                timed="train",
                command=done.command,
                accuracy=summary["final_test_acc"],
            )
        ],
    }


def resume_after_kill(ctx, folder, uninterrupted):
    """The short run again, killed (SIGKILL) once its second checkpoint is on disk, then resumed: it must
    finish every epoch once; its accuracy is compared with the uninterrupted run's."""
    epochs = ctx.size["short_epochs"]
    process = start(
        ctx, "killed", train_command(ctx, folder, epochs=epochs, lr=ctx.size["short_lr"], checkpoint="every")
    )
    while process.poll() is None and not (folder / "checkpoint.prev.pt").exists():
        if time.monotonic() >= ctx.deadline:
            kill(process)
            raise StepTimeout("timeout: no second checkpoint before the end of the step's budget")
        time.sleep(POLL_S)
    if process.poll() is not None:
        raise StepError(
            f"the run ended (status {process.returncode}) before it could be killed: give it more epochs",
            tail(process.log.read_text(errors="replace")),
        )
    kill(process)
    killed_after = len((folder / "metrics.jsonl").read_text().splitlines())
    done = run(ctx, "resumed", [ctx.python, "-m", "speedrun.train", "--resume", folder, "--logging.progress", "false"])
    summary = read_summary(folder)
    seen = [record["epoch"] for record in summary["history"]]
    if seen != [float(epoch) for epoch in range(1, epochs + 1)]:
        raise StepError(
            f"the resumed run's evaluations are at epochs {seen}, not 1..{epochs} once each", tail(done.output)
        )
    reference = (uninterrupted or {}).get("final_test_acc")
    return {
        "killed_after_epochs": killed_after,
        "final_test_acc": summary["final_test_acc"],
        "uninterrupted_test_acc": reference,
        "matches_uninterrupted": reference == summary["final_test_acc"] if reference is not None else None,
        "figures": [
            figure(
                "resume after kill",
                f"killed after {killed_after} epochs, resumed to {epochs}; "
                f"accuracy {'same as' if reference == summary['final_test_acc'] else 'vs'} "
                f"the uninterrupted run's" + (f" {pct(reference)}" if reference is not None else ""),
                command=done.command,
                accuracy=summary["final_test_acc"],
            )
        ],
    }


def step_bench(ctx):
    """The per-stage benchmark on the betons; the augmentation kernel also on a batch large enough not
    to be launch-bound."""
    train, test = ctx.betons
    done = run(
        ctx,
        "bench",
        bench_command(ctx, BENCH_STAGES, ctx.folder / "bench", "--train-beton", train, "--val-beton", test),
        check=False,
    )
    report = read_bench(ctx.folder / "bench")
    stages = report["stages"]
    figures = [bench_figure(name, stages[name], done.command) for name in BENCH_STAGES.split(",") if name in stages]
    result = {"policy": report["policy"], "stages": stages, "figures": figures}
    errors = [name for name, record in stages.items() if "error" in record]
    if errors or done.returncode:
        raise StepError(f"stages failed: {', '.join(errors) or 'the command'}", tail(done.output), result)
    return result


BENCH_NOTES = (
    ("images_per_s", "{images_per_s:,.0f} images/s"),
    ("gbps", "{gbps:.4g} GB/s at {batch_size} images ({impl})"),
    ("tflops", "{tflops:.4g} TFLOP/s"),
    ("speedup_over_torch", "{speedup_over_torch:.2f}x torch"),
    ("speedup_over_plain", "{speedup_over_plain:.2f}x the plain step"),
    ("seconds_per_50k", "{seconds_per_50k:.3f} s per 50k"),
)


def bench_figure(name, record, command):
    """A bench stage as one figure: its headline rate."""
    if "skipped" in record or "error" in record:
        return figure(
            name,
            f"{'skipped' if 'skipped' in record else 'error'}: {record.get('skipped') or record.get('error')}",
            command=command,
        )
    parts = [f"{record['median_s'] * 1e3:.3f} ms"]
    parts += [form.format(**record) for key, form in BENCH_NOTES if record.get(key)]
    timed = "host" if name == "beton_to_device" else "device"
    return figure(
        name,
        ", ".join(parts),
        value=record["median_s"],
        timed=timed,
        command=command,
        tflops=record.get("tflops"),
        gbps=record.get("gbps"),
    )


def default_command(ctx, label, *options):
    """`python -m speedrun.train --epochs 24` (at the size's options) on the betons, as a user types it, in
    a fresh process whose torch caches start empty: only speedrun's compile cache, the command step's,
    carries over from one process to the next, so what it spares is what a user's second command saves."""
    torch_caches = ctx.folder / f"torch-caches-{label}"
    env = {"TORCHINDUCTOR_CACHE_DIR": str(torch_caches / "inductor"), "TRITON_CACHE_DIR": str(torch_caches / "triton")}
    argv = [
        ctx.python,
        "-m",
        "speedrun.train",
        "--epochs",
        ctx.size["seed_epochs"],
        *ctx.size["command_options"],
        *data_options(ctx),
        "--training.compile_cache",
        ctx.work / "command" / "compile-cache",
        "--logging.folder",
        ctx.folder / label,
        "--logging.progress",
        "false",
        *options,
    ]
    return run(ctx, label, argv, env=env)


def step_command(ctx):
    """The default command as a user types it, in fresh processes: first with every compile cache empty
    (cold), then with torch's own caches emptied again but speedrun's compile cache kept (warm); each
    one's wall time beside its seconds table, and its step: its time, and whether it ran under CUDA graphs
    with no graph skipped (the summary's `compiled` and `compile_counters`)."""
    figures, result = [], {}
    for label in ("cold", "warm"):
        done = default_command(ctx, label)
        summary = read_summary(ctx.folder / label)
        result[label] = command_record(summary, done.wall_s)
        figures += command_figures(label, result[label], done)
    return {**result, "figures": figures}


def command_record(summary, wall):
    """A default command's record from its summary and wall time."""
    cuda_graphs, verdict = cuda_graphs_verdict(summary)
    return {
        "wall_s": wall,
        "seconds": summary["seconds"],
        "compile_cache": summary["compile_cache"],
        "final_test_acc": summary["final_test_acc"],
        "step_ms": 1e3 * step_time(summary),
        "batch_size": summary["config"]["training"]["batch_size"],
        "compiled": summary.get("compiled"),
        "compile_counters": summary.get("compile_counters"),
        "cuda_graphs": cuda_graphs,
        "verdict": verdict,
    }


COUNTER_WORDS = (
    ("cudagraph_skips", "CUDA-graph skips"),
    ("recompiles", "recompiles"),
    ("graph_breaks", "graph breaks"),
)


def cuda_graphs_verdict(summary):
    """(whether the run's step ran under CUDA graphs with no graph skipped, the words for it, with the
    trainer's compile counters): None where its summary cannot tell (one written before the trainer
    recorded the mode that really ran and counted its CUDA-graph skips)."""
    compiled, counters = summary.get("compiled"), summary.get("compile_counters") or {}
    counts = ", ".join(f"{counters[key]} {words}" for key, words in COUNTER_WORDS if key in counters)
    counts += "".join(f"; {reason}" for reason in counters.get("cudagraph_skip_reasons") or [])
    counts = f": {counts}" if counts else ""
    if compiled is None or (compiled == "cudagraph" and counters.get("cudagraph_skips") is None):
        return None, f"CUDA graphs unknown (compiled {compiled or 'not recorded'}, its CUDA-graph skips not counted)"
    ran = compiled == "cudagraph" and counters["cudagraph_skips"] == 0
    return ran, f"{'CUDA graphs ran' if ran else 'no CUDA graphs'} (compiled {compiled}){counts}"


def command_figures(label, record, done):
    """A default command's wall time beside its own seconds table; its step's time and CUDA graphs."""
    wall, table, accuracy = record["wall_s"], record["seconds"], record["final_test_acc"]
    parts = ", ".join(f"{part} {table[part]:.1f}" for part in PARTS)
    return [
        figure(
            f"default command, {label} compile cache: wall time",
            f"{wall:.1f} s (its own table: total {table['total']:.1f} s = {parts}; training "
            f"{100 * table['training'] / wall:.0f}% of the wall; cache {record['compile_cache']})",
            value=wall,
            timed="host",
            command=done.command,
            accuracy=accuracy,
        ),
        figure(
            f"default command, {label} compile cache: train step",
            f"{record['step_ms']:.2f} ms at batch {record['batch_size']}; {record['verdict']}",
            value=record["step_ms"] / 1e3,
            timed="step",
            command=done.command,
            accuracy=accuracy,
        ),
    ]


def step_sweep(ctx):
    """The default command over several seeds in one process, speedrun's compile cache kept from the
    command step (when it ran in this work folder): how many of its seeds compiled, and each seed's wall
    time against its training time."""
    seeds = ctx.size["sweep_seeds"]
    done = default_command(ctx, "seeds", "--seeds", f"0-{seeds - 1}")
    wall = done.wall_s
    summaries = [read_summary(ctx.folder / "seeds" / f"seed{seed}") for seed in range(seeds)]
    compiled = sum(summary["compile_cache"] in ("cold", "warm") for summary in summaries)
    per_seed, training = wall / seeds, statistics.mean(summary["train_seconds"] for summary in summaries)
    figures = [
        figure(
            f"{seeds}-seed sweep in one process: wall time per seed",
            f"{per_seed:.1f} s a seed against {training:.1f} s of training ({per_seed / training:.2f}x); "
            f"the step compiled {compiled} time(s)",
            value=per_seed,
            timed="host",
            command=done.command,
            accuracy=statistics.mean(summary["final_test_acc"] for summary in summaries),
        )
    ]
    return {
        "seeds": seeds,
        "wall_s": wall,
        "compiled": compiled,
        "caches": [summary["compile_cache"] for summary in summaries],
        "seconds": [summary["seconds"] for summary in summaries],
        "figures": figures,
    }


def step_memory_compile(ctx):
    """Cold and warm compile time (a 1-epoch run with empty compile caches, then again with them
    filled) and the peak device memory of train steps."""
    caches = ctx.folder / "caches"
    env = {"TORCHINDUCTOR_CACHE_DIR": str(caches / "inductor"), "TRITON_CACHE_DIR": str(caches / "triton")}
    figures, result = [], {}
    for label in ("cold", "warm"):
        done = run(
            ctx, f"compile-{label}", train_command(ctx, ctx.folder / label, epochs=1, lr=ctx.size["short_lr"]), env=env
        )
        seconds = read_summary(ctx.folder / label)["compile_seconds"]
        result[f"compile_{label}_s"] = seconds
        figures.append(
            figure(f"compile, {label} caches", f"{seconds:.1f} s", value=seconds, timed="compile", command=done.command)
        )
    done = run(ctx, "memory", bench_command(ctx, "memory", ctx.folder / "bench"), env=env)
    memory = read_bench(ctx.folder / "bench")["stages"]["memory"]
    peak = memory.get("peak_memory_gib")
    result["peak_memory_gib"] = peak
    figures.append(
        figure(
            "peak memory of train steps",
            f"{peak:.2f} GiB"
            if peak is not None
            else f"not measured on this device ({memory.get('error', 'no CUDA memory counters')})",
            value=peak,
            command=done.command,
        )
    )
    if ctx.size["compile"] != "on":
        result["note"] = "compile is off on this device: compile times are the trainer's eager warm-up (0)"
    return {**result, "figures": figures}


def step_variants(ctx):
    """The loop variants, in the order the size (or --variants) names them, each on its recipe's net: its
    train step time (with its share of the bf16 peak) and a short run's accuracy."""
    names = ctx.size["variants"]
    recipes = sorted({recipe_of(VARIANTS[name]) for name in names})
    flops = {recipe: 3 * value for recipe, value in forward_flops(ctx, recipes).items()}
    parts = {
        name: (lambda name=name: variant(ctx, name, VARIANTS[name], flops[recipe_of(VARIANTS[name])])) for name in names
    }
    results, failed = run_parts(parts)
    return fail_if_any(failed, variants_result(results, flops), "variants")


def recipe_of(options):
    """The recipe a variant's options name; the seed's when they name none."""
    return options[options.index(RECIPE_OPTION) + 1] if RECIPE_OPTION in options else "seed"


def variants_result(results, flops):
    """The step's result from its variants' records (run_parts') and the train FLOPs per image of each
    recipe's net: their figures and one for each that did not pass."""
    figures = [fig for record in results.values() for fig in record.pop("figures", [])]
    figures += [
        figure(f"variant {name}", f"{record['status']}: {record.get('reason') or record.get('error')}")
        for name, record in results.items()
        if record["status"] != "passed"
    ]
    return {
        "variants": results,
        "train_flops_per_image": flops.get("seed"),
        "train_flops_per_image_by_recipe": flops,
        "figures": figures,
    }


def variant(ctx, name, options, flops):
    options = [option.format(large_batch=2 * ctx.size["batch"]) for option in options]
    folder, epochs = ctx.folder / name, ctx.size["variant_epochs"]
    # the seed net at the fixed peak LR the variants have always had; another recipe at its own (the
    # record recipe sets it and runs no range test), which a given one would override
    lr = ctx.size["short_lr"] if recipe_of(options) == "seed" else None
    done = run(
        ctx, name, train_command(ctx, folder, *options, epochs=epochs, lr=lr), check=False, limit_s=VARIANT_LIMIT_S
    )
    if done.returncode == 2 and COMPILE_MODE_OPTION in done.output:
        raise Skip(f"option not available: --training.{COMPILE_MODE_OPTION} ({tail(done.output, 1)})")
    if done.returncode:
        raise StepError(f"exit status {done.returncode}: {done.command}", tail(done.output))
    return variant_record(name, options, read_summary(folder), flops, done.command)


def variant_record(name, options, summary, flops, command):
    """A finished variant's record: its step time (step_time), rate, accuracy and compile, from its run's
    summary; `command` is the one that ran it."""
    seconds, compiling, compiled = step_time(summary), summary["compile_seconds"], summary.get("compiled", "?")
    batch = summary["config"]["training"]["batch_size"]
    tflops = flops * batch / seconds / 1e12
    flag = f"--training.{COMPILE_MODE_OPTION}"
    asked = options[options.index(flag) + 1] if flag in options else None
    ran = f"compiled: {compiled}" + (f" (asked for {asked})" if asked and compiled != asked else "")
    text = (
        f"{seconds * 1e3:.2f} ms at batch {batch}, {batch / seconds:,.0f} images/s, {tflops:.4g} TFLOP/s, "
        f"{ran}, compile {compiling:.1f} s"
    )
    return {
        "options": options,
        "step_ms": seconds * 1e3,
        "batch_size": batch,
        "tflops": tflops,
        "final_test_acc": summary["final_test_acc"],
        "compile_seconds": compiling,
        "compiled": compiled,
        "figures": [
            figure(
                f"variant {name}: train step",
                text,
                value=seconds,
                timed="step",
                command=command,
                accuracy=summary["final_test_acc"],
                tflops=tflops,
            )
        ],
    }
