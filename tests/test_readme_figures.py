"""The READMEs' hand-typed figures against the committed results they come from.

A figure typed by hand into README.md or benchmarks/README.md (outside the campaign section that
`python benchmarks/campaign.py report` writes) is read out of the text with a pattern for its table row
or sentence, and compared with the value computed from its results file, rounded as printed. So a
figure cannot drift from its evidence: change the results, or the text, and this fails until both
agree. The files are JSON, markdown and tar archives: nothing here imports torch.
"""
import json
import re
import subprocess
import sys
import tarfile
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
VISIT_1, VISIT_2 = RESULTS / "nvidia-h200", RESULTS / "nvidia-h200-visit-2"
CPU = "cpu-amd-epyc-2-cores"
CAMPAIGN_MARKERS = ("<!-- campaign results: start -->", "<!-- campaign results: end -->")

sys.path.insert(0, str(ROOT / "benchmarks"))
import campaign_plan  # noqa: E402  (plain constants)
from campaign_steps import step_time  # noqa: E402  (the campaign's own step time, torch-free)

from speedrun.leaderboard_entries import seed_stats  # noqa: E402  (the campaign's mean ± std)

NUMBER = re.compile(r"(?<![\w.])\d{1,3}(?:,\d{3})*(?:\.\d+)?(?!\d)")  # 5,491 / 0.091 / 68.8; not bf16's 16


# ---------------------------------------------------------------------------------------------------
# the texts


def hand_typed(text):
    """The text without the generated campaign section, whose figures the campaign's tests own."""
    start, end = CAMPAIGN_MARKERS
    if start in text and end in text:
        return text[:text.index(start)] + text[text.index(end) + len(end):]
    return text


@lru_cache(maxsize=None)
def readme():
    return (ROOT / "README.md").read_text()


@lru_cache(maxsize=None)
def bench_readme():
    return hand_typed((ROOT / "benchmarks" / "README.md").read_text())


def flat(text):
    """Whitespace collapsed, so that a sentence reads the same however the lines were wrapped."""
    return re.sub(r"\s+", " ", text)


def find(pattern, text):
    """The groups of `pattern` in the flattened text; the test fails naming the pattern if it is gone."""
    match = re.search(pattern, flat(text))
    assert match, f"not found in the README: {pattern}"
    return match.groups()


def table_after(header, text):
    """{first cell: [other cells]} of the markdown table whose header row starts with `header`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(header))
    rows = {}
    for line in lines[start + 2:]:
        if not line.strip().startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def numbers(*cells):
    return [n for cell in cells for n in NUMBER.findall(cell)]


def accuracies(cells):
    """The accuracies in a row (the numbers of 50 and above; the options' values are all smaller)."""
    return [n for n in numbers(*cells) if float(n) >= 50]


# ---------------------------------------------------------------------------------------------------
# the results


def load(path):
    return json.loads(Path(path).read_text())


@lru_cache(maxsize=None)
def campaign(folder):
    return load(folder / "campaign.json")


def step(folder, name, part=None):
    """The step's record; of a campaign merged from several commands, the one of `part` (the command's
    part name, e.g. 'visit' or 'variants'), or the last one."""
    records = [s for s in campaign(folder)["steps"] if s["name"] == name and part in (None, s.get("part"))]
    return records[-1]


def result(folder, name, part=None):
    return step(folder, name, part)["result"]


def run_summary(folder, relative):
    """A run's summary.json under `folder`/runs/, else from the visit's runs.tar.gz (whichever command's
    work folder holds it)."""
    path = folder / "runs" / relative / "summary.json"
    if path.exists():
        return load(path)
    with tarfile.open(folder / "runs.tar.gz") as archive:
        for member in archive.getmembers():
            if member.name.endswith(f"/{relative}/summary.json"):
                return json.loads(archive.extractfile(member).read())
    raise FileNotFoundError(f"{relative}/summary.json: neither under {folder}/runs nor in its runs.tar.gz")


def pct(fraction):
    return f"{100 * fraction:.2f}"


def bf16_tflops(folder):
    return result(folder, "environment")["bf16_tflops"]


def train_flops_per_image():
    return result(VISIT_2, "variants")["train_flops_per_image"]


def variant_ms(name):
    return step_time(run_summary(VISIT_2, f"variants/{name}")) * 1e3


def entry(folder, name):
    return next(e for e in result(folder, "record_vs_airbench")["entries"] if e["name"] == name)


# ---------------------------------------------------------------------------------------------------
# README.md: the seed recipe's table and the candidate


def pick_accuracy():
    return run_summary(VISIT_2, "seed_recipe/seed0")["final_test_acc"]


def grid_run(name):
    return result(VISIT_2, "lr_grid")["runs"][name]["final_test_acc"]


def tta_scores():
    """The seed recipe's seed 0 scored by speedrun.score at levels 0, 1, 2: campaign.json and tta.json."""
    scores = result(VISIT_2, "seed_recipe")["tta"]["seed0"]
    (from_file,) = load(VISIT_2 / "runs" / "seed_recipe" / "tta.json").values()
    assert from_file == scores
    return [scores[level] for level in ("0", "1", "2")]


def test_the_recipe_table_is_the_second_visits_runs():
    pick, grid = pick_accuracy(), result(VISIT_2, "lr_grid")["grid"]["accuracy_by_factor"]
    assert grid["1"] == pick
    expected = {
        "optimizer": [grid_run("sgd"), pick],
        "peak LR": [grid[factor] for factor in ("0.25", "0.5", "2", "4", "8")],
        "weight decay (Adam)": [pick, grid_run("weight-decay-0.05"), grid_run("weight-decay-0.2")],
        "weight average": [pick, grid_run("ema-0.99")],
        "div factor": [pick, grid_run("div-factor-25")],
        "label smoothing": [grid_run("no-smoothing"), grid_run("smoothing-0.2")],
        "pad mode": [grid_run("pad-constant"), pick],
        "annealing": [grid_run("anneal-to-zero")],
        "test-time augmentation (`speedrun.score`)": tta_scores(),
    }
    rows = table_after("| compared | tried (test accuracy) | kept |", readme())
    assert set(rows) == set(expected)
    for name, values in expected.items():
        assert accuracies(rows[name]) == [pct(v) for v in values], name


def test_the_grid_runs_summaries_agree_with_the_campaign():
    for name, run in result(VISIT_2, "lr_grid")["runs"].items():
        # the grid's x1 is the seed recipe's own run, which it does not run again
        folder = f"lr_grid/{name}" if "command" in run else "seed_recipe/seed0"
        summary = run_summary(VISIT_2, folder)
        assert summary["final_test_acc"] == run["final_test_acc"], name
        assert summary["config"]["training"]["tta"] == 0, name  # the table: evaluated without TTA


def test_the_tta_sentence_is_the_score_of_the_same_weights():
    none, _, both = tta_scores()
    assert find(r"scored (\d+\.\d\d)% without it and (\d+\.\d\d)% with it", readme()) == (pct(none), pct(both))
    (points,) = find(r"Without test-time augmentation expect about (\d+\.\d) points less", readme())
    assert points == f"{100 * (both - none):.1f}"


def candidate_accuracies():
    values = [run_summary(VISIT_2, f"candidate/seed{seed}")["final_test_acc"] for seed in range(3)]
    assert values == result(VISIT_2, "candidate")["accuracies"]
    return values


def test_the_candidate_figure_is_its_three_runs():
    values = candidate_accuracies()
    stats = seed_stats([100 * v for v in values])
    mean_std = (f"{stats['mean']:.2f}", f"{stats['std']:.2f}")
    found = find(r"reached \*\*(\d+\.\d\d) ± (\d+\.\d\d)%\*\* over seeds 0, 1 and 2 "
                 r"\((\d+\.\d\d), (\d+\.\d\d), (\d+\.\d\d)%", readme())
    assert found == (*mean_std, *[pct(v) for v in values])
    assert find(r"\*\*(\d+\.\d\d) ± (\d+\.\d\d)%\*\* over 3 seeds", readme()) == mean_std


# ---------------------------------------------------------------------------------------------------
# README.md: airbench and the record recipe (first visit)


def leaderboard_row(name):
    rows = table_after("| name | kind |", (VISIT_1 / "leaderboard.md").read_text())
    return rows[name]


def test_airbench_is_its_ten_seeds_of_the_first_visit():
    reference = entry(VISIT_1, "airbench train94")
    stats = seed_stats([100 * v for v in reference["accuracies"]])
    mean_std = (f"{stats['mean']:.2f}", f"{stats['std']:.2f}")
    assert leaderboard_row("airbench train94")[3] == f"{mean_std[0]}% ± {mean_std[1]}"
    found = find(r"airbench's `train94` reached (\d+\.\d\d) ± (\d+\.\d\d)% \((\d+) seeds", readme())
    assert found == (*mean_std, str(stats["n"]))


def test_the_record_recipe_against_airbench():
    ours, reference = entry(VISIT_1, "speedrun"), entry(VISIT_1, "airbench train94")
    ours_acc, ref_acc = (seed_stats([100 * v for v in e["accuracies"]]) for e in (ours, reference))
    ours_s, ref_s = (seed_stats(e["train_seconds"])["mean"] for e in (ours, reference))
    ratio = result(VISIT_1, "record_vs_airbench")["time_ratios"]["airbench train94"]
    assert ratio == pytest.approx(ours_s / ref_s)
    found = find(r"(\d+\.\d\d) ± (\d+\.\d\d)% in (\d+\.\d\d) s against (\d+\.\d\d) ± (\d+\.\d\d)% in "
                 r"(\d+\.\d\d) s: (\d+\.\d\d)x slower, (\d+\.\d\d) points lower", readme())
    assert found == (f"{ours_acc['mean']:.2f}", f"{ours_acc['std']:.2f}", f"{ours_s:.2f}",
                     f"{ref_acc['mean']:.2f}", f"{ref_acc['std']:.2f}", f"{ref_s:.2f}", f"{ratio:.2f}",
                     f"{ref_acc['mean'] - ours_acc['mean']:.2f}")


# ---------------------------------------------------------------------------------------------------
# README.md: the status's other figures


def test_the_default_recipes_training_time():
    (seconds,) = find(r"reached 90\.30% \(24 epochs, one seed, (\d+\.\d\d) s of training", readme())
    assert seconds == f"{run_summary(VISIT_2, 'seed_recipe/seed0')['train_seconds']:.2f}"


def test_the_status_step_times_are_the_variants_runs():
    found = find(r"compiled forward \(then the default on CUDA\) (\d+\.\d\d) ms, eager (\d+\.\d\d) ms, the whole "
                 r"step as one graph (\d+\.\d\d) ms and with CUDA graphs (\d+\.\d\d) ms, (\d+)% of the (\d+) "
                 r"TFLOP/s", readme())
    names = ("base", "eager", "whole_step", "cuda_graphs")
    peak = bf16_tflops(VISIT_2)
    share = train_flops_per_image() * 512 / (variant_ms("cuda_graphs") / 1e3) / (peak * 1e12)
    assert found == (*[f"{variant_ms(n):.2f}" for n in names], f"{100 * share:.0f}", f"{peak:.0f}")
    (floor_ms,) = find(r"2\.28 GFLOP an image × 512 at that rate, would take (\d+\.\d\d) ms", readme())
    assert floor_ms == f"{train_flops_per_image() * 512 / (peak * 1e12) * 1e3:.2f}"
    first = result(VISIT_1, "variants")["variants"]
    assert find(r"\(first visit: (\d+\.\d\d) against (\d+\.\d\d) ms", readme()) == \
        (f"{first['base']['step_ms']:.2f}", f"{first['eager']['step_ms']:.2f}")


def test_the_augmentation_kernel_figures():
    augment = result(VISIT_1, "bench")["stages"]["augment"]
    copy = result(VISIT_1, "environment")["gbps"]
    found = find(r"(\d+\.\d) TB/s on ([\d,]+) images, (\d+)% of the measured copy bandwidth, (\d+\.\d)x the "
                 r"torch version", readme())
    assert found == (f"{augment['gbps'] / 1e3:.1f}", f"{augment['batch_size']:,}",
                     f"{100 * augment['gbps'] / copy:.0f}", f"{augment['speedup_over_torch']:.1f}")


def test_the_kernel_log_the_status_quotes():
    assert "reads `2 failed`" in flat(readme())
    with tarfile.open(VISIT_1 / "runs.tar.gz") as archive:
        log = archive.extractfile("visit/correctness/kernel-tests.log").read().decode()
    assert "2 failed" in log.splitlines()[-1]


# ---------------------------------------------------------------------------------------------------
# README.md: run folder sizes


def test_checkpoint_sizes_follow_from_the_parameter_count():
    (params,) = find(r"four float32 copies of its ([\d,]+) parameters", readme())
    params = int(params.replace(",", ""))
    assert params == 6_573_130  # tests/test_model.py counts it on the net itself
    copy = 4 * params
    adam, mib, shown, one, sgd = find(r"checkpoint is (\d+) MB \((\d+) MiB; `ls -lh` shows (\d+)M\) with Adam: "
                                      r".*?4 × (\d+\.\d) MB\), and (\d+) MB with SGD", readme())
    assert (adam, mib, one, sgd) == (f"{4 * copy / 1e6:.0f}", f"{4 * copy / 2 ** 20:.0f}", f"{copy / 1e6:.1f}",
                                     f"{3 * copy / 1e6:.0f}")
    adam_bytes, sgd_bytes = (int(n.replace(",", "")) for n in find(
        r"full width is ([\d,]+) bytes, with `--training.optimizer sgd` ([\d,]+)", readme()))
    # the measured files: the copies plus buffers and pickling, well under 1% more
    assert 0 < adam_bytes - 4 * copy < 0.005 * adam_bytes and 0 < sgd_bytes - 3 * copy < 0.005 * sgd_bytes
    assert shown == str(-(-adam_bytes // 2 ** 20))  # ls -h rounds up
    sweep, every = find(r"`--seeds 0-199` keeps about (\d+) GB, where `every` would keep about (\d+) GB", readme())
    assert (sweep, every) == (f"{200 * adam_bytes / 1e9:.0f}", f"{400 * adam_bytes / 1e9:.0f}")


def test_a_run_folder_without_checkpoint_is_a_few_kb():
    (kb,) = find(r"without plots: (\d+) KB for a 24-epoch run, e\.g\. "
                 r"`benchmarks/results/nvidia-h200-visit-2/runs/candidate/seed0/`", readme())
    folder = VISIT_2 / "runs" / "candidate" / "seed0"
    size = sum((folder / name).stat().st_size for name in ("config.yaml", "metrics.jsonl", "summary.json"))
    assert kb == f"{size / 1e3:.0f}"


# ---------------------------------------------------------------------------------------------------
# benchmarks/README.md: the H200's ceilings, the floor, the step times


def test_the_h200_ceilings_are_the_two_visits():
    first, second, copy = find(r"ran a bf16 matrix product \(8192³\) at (\d+) TFLOP/s on its first visit and (\d+) "
                               r"TFLOP/s on its second, and copied device memory at (\d+\.\d\d) TB/s", bench_readme())
    assert (first, second) == (f"{bf16_tflops(VISIT_1):.0f}", f"{bf16_tflops(VISIT_2):.0f}")
    for folder in (VISIT_1, VISIT_2):
        assert result(folder, "environment")["matmul_size"] == 8192
        assert copy == f"{result(folder, 'environment')['gbps'] / 1e3:.2f}"
    assert "798" not in bench_readme() and "790 TFLOP" not in bench_readme()  # no figure without a run


def test_the_floor_of_24_epochs():
    flops = train_flops_per_image()
    images = 24 * 97 * 512
    found = find(r"2\.28 GFLOP per trained image \(([\d,]+): .*?= (\d+\.\d\d) M images = (\d+\.\d\d) PFLOP",
                 bench_readme())
    assert found == (f"{flops:,}", f"{images / 1e6:.2f}", f"{flops * images / 1e15:.2f}")
    assert f"{flops / 1e9:.2f}" == "2.28"
    found = find(r"(\d+\.\d\d) PFLOP / (\d+) TFLOP/s = (\d+\.\d\d) s \(first visit\), / (\d+) TFLOP/s = "
                 r"(\d+\.\d\d) s \(second visit\)", bench_readme())
    expected = [f"{flops * images / 1e15:.2f}"]
    for folder in (VISIT_1, VISIT_2):
        expected += [f"{bf16_tflops(folder):.0f}", f"{flops * images / (bf16_tflops(folder) * 1e12):.2f}"]
    assert list(found) == expected


def test_the_h200_step_times_in_the_prose():
    found = find(r"against (\d+\.\d\d) ms of arithmetic at its measured (\d+) TFLOP/s\): eager (\d+\.\d\d) ms, "
                 r"forward compiled (\d+\.\d\d) ms, whole step (\d+\.\d\d) ms, whole step with CUDA graphs "
                 r"(\d+\.\d\d) ms", bench_readme())
    peak = bf16_tflops(VISIT_2)
    assert found == (f"{train_flops_per_image() * 512 / (peak * 1e12) * 1e3:.2f}", f"{peak:.0f}",
                     *[f"{variant_ms(n):.2f}" for n in ("eager", "base", "whole_step", "cuda_graphs")])
    recorded = {name: record for s in campaign(VISIT_2)["steps"] if s["name"] == "variants"
                for name, record in s["result"]["variants"].items() if record["status"] == "passed"}
    for name in recorded.keys() & {"base", "eager", "whole_step", "cuda_graphs"}:
        assert recorded[name]["step_ms"] == pytest.approx(variant_ms(name)), name
    tflop, ms, first_peak = find(r"The seed net's step needs (\d+\.\d\d) TFLOP \(2\.28 GFLOP per image x 512\), "
                                 r"(\d+\.\d) ms at the H200's (\d+) TFLOP/s", bench_readme())
    flops = train_flops_per_image() * 512
    assert (tflop, ms, first_peak) == (f"{flops / 1e12:.2f}", f"{flops / (bf16_tflops(VISIT_1) * 1e12) * 1e3:.1f}",
                                       f"{bf16_tflops(VISIT_1):.0f}")


def test_the_augment_headline_arithmetic():
    mb, rate, us = find(r"512 images move (\d+\.\d) MB, uint8 in and bf16 out, which at the H200's measured "
                        r"(\d+\.\d\d) TB/s would take about (\d+\.\d) µs", bench_readme())
    moved = 512 * 32 * 32 * 3 * (1 + 2)
    gbps = result(VISIT_2, "environment")["gbps"]
    assert (mb, rate, us) == (f"{moved / 1e6:.1f}", f"{gbps / 1e3:.2f}", f"{moved / (gbps * 1e9) * 1e6:.1f}")


def test_the_variants_fixed_lr_is_the_cpu_range_tests_pick():
    lr_test = load(RESULTS / "lr-range-test-cpu-amd-epyc-2-cores" / "lr_test.json")
    (lr,) = find(r"at a fixed peak LR of (\d\.\d+) \(the `min_loss` pick of the CPU range test", bench_readme())
    assert lr == f"{lr_test['suggestions']['min_loss']:.2g}"


# ---------------------------------------------------------------------------------------------------
# benchmarks/README.md: the campaign's budgets and the next visit's plan


def test_the_budget_column_and_sums_are_the_plan():
    rows = table_after("| step | what | budget |", bench_readme())
    assert {name.strip("`"): cells[-1] for name, cells in rows.items()} == \
        {name: f"{seconds} s" for name, seconds in campaign_plan.BUDGETS_S.items()}
    parts = [sum(campaign_plan.BUDGETS_S[s] for s in campaign_plan.PARTS[p]) for p in campaign_plan.CORE_PARTS]
    assert max(parts) < 9 * 60
    (total,) = find(r"(\d+\.\d) minutes of budget in all", bench_readme())
    assert total == f"{sum(parts) / 60:.1f}"
    (default_total,) = find(r"with `--total-s S` \((\d+) unless given\)", bench_readme())
    (min_step,) = find(r"a step left under (\d+) s is recorded as skipped", bench_readme())
    assert (int(default_total), int(min_step)) == (campaign_plan.PART_TOTAL_S["visit"], campaign_plan.MIN_STEP_S)


def test_the_next_visits_plan_quotes_the_recorded_seconds():
    first, second = campaign(VISIT_2)["commands"]
    walls = find(r"the first command \(`--steps visit`\) took about (\d+) s and the second about (\d+) s "
                 r"\(each estimated there", bench_readme())
    assert walls == (f"{first['wall_s']:.0f}", f"{second['wall_s']:.0f}")
    assert all("estimated" in command["note"] for command in (first, second))

    def seconds(name, part):
        return f"{step(VISIT_2, name, part)['seconds']:.0f}"
    found = find(r"within the first, environment (\d+) s, seed_recipe (\d+) s, lr_grid (\d+) s \((\d+) runs side "
                 r"by side\), candidate (\d+) s, and what was left of its (\d+) s to variants", bench_readme())
    grid_runs = [run for run in result(VISIT_2, "lr_grid")["runs"].values() if "command" in run]
    total = re.search(r"--total-s (\d+)", first["command"]).group(1)
    assert found == (seconds("environment", "visit"), seconds("seed_recipe", "visit"), seconds("lr_grid", "visit"),
                     str(len(grid_runs)), seconds("candidate", "visit"), total)
    assert step(VISIT_2, "data", "visit")["seconds"] is None and step(VISIT_2, "variants", "visit")["seconds"] is None
    assert find(r"within the second, data (\d+) s and variants (\d+) s", bench_readme()) == \
        (seconds("data", "variants"), seconds("variants", "variants"))
    for unrecorded in ("523 s", "243 s", "about 30 s", "14 s"):
        assert unrecorded not in flat(bench_readme())


# ---------------------------------------------------------------------------------------------------
# benchmarks/README.md: the CPU tables


def cpu_stage(name, file=CPU):
    return load(RESULTS / f"{file}.json")["stages"][name]


def test_the_data_stage_table():
    rows = table_after("| stage | median | rate |", bench_readme())
    write, load_ = cpu_stage("write_beton"), cpu_stage("beton_to_device")
    assert write["images"] == 60_000 and write["num_workers"] == 2 and load_["images"] == 50_000
    assert numbers(*rows["`write_beton` (decode 60,000 JPEGs, write both betons, 2 workers)"]) == \
        [f"{write['median_s']:.1f}", f"{write['images_per_s']:,.0f}"]
    assert numbers(*rows["`beton_to_device` (50,000 train images into CPU memory)"]) == \
        [f"{load_['median_s']:.3f}", f"{load_['images_per_s'] / 1e3:.0f}"]


def test_the_cpu_train_step_table():
    text = bench_readme()
    tables = text[text.index("The seed net's train step on the same CPU"):]
    rows = table_after("| stage | median | rate |", tables)
    ceilings = cpu_stage("ceilings", f"{CPU}-train-step")
    fp32, bf16 = ceilings["matmuls"]["fp32"], ceilings["matmuls"]["bf16"]
    assert ceilings["matmul_size"] == 1024
    assert numbers(*rows["`ceilings`: float32 / bf16 matrix product (1024³)"]) == \
        [f"{fp32['median_s'] * 1e3:.1f}", f"{bf16['median_s']:.1f}", f"{fp32['tflops'] * 1e3:.1f}",
         f"{bf16['tflops'] * 1e3:.2f}"]
    variants = cpu_stage("versus_plain", f"{CPU}-train-step")["variants"]
    ours = variants["ours"]
    assert numbers(*rows["`versus_plain`: ours (channels-last, float32, 2 threads)"]) == \
        [f"{ours['median_s']:.2f}", f"{ours['images_per_s']:.1f}", f"{ours['tflops'] * 1e3:.0f}",
         f"{100 * ours['peak_fraction']:.0f}"]
    for row, name in (("plain (NCHW, float32, 2 threads)", "plain"),
                      ("plain on 1 thread (CPU runs before the thread fix)", "plain_1_thread")):
        plain = variants[name]
        assert numbers(*rows[row]) == [f"{plain['median_s']:.2f}", f"{plain['images_per_s']:.1f}",
                                       f"{plain['median_s'] / ours['median_s']:.2f}"], row
    (share,) = find(r"its float32 step is already at (\d+)% of what its float32 matrix products reach", text)
    assert share == f"{100 * ours['peak_fraction']:.0f}"


def test_the_host_overhead_table():
    rows = table_after("| step | Adam | SGD |", bench_readme())
    adam, sgd = (cpu_stage("host_overhead", f"{CPU}-host-overhead-{o}")["variants"] for o in ("adam", "sgd"))
    assert numbers(*rows["eager (fused optimizer)"]) == [
        f"{adam['eager']['median_s'] * 1e3:.2f}", str(adam["eager"]["ops_per_step"]),
        f"{sgd['eager']['median_s'] * 1e3:.2f}", str(sgd["eager"]["ops_per_step"])]
    for row, mode in (("forward compiled (`default`)", "default"),
                      ("whole step compiled (`whole-step`)", "whole-step")):
        assert numbers(*rows[row]) == [f"{adam[mode]['median_s'] * 1e3:.2f}", f"{sgd[mode]['median_s'] * 1e3:.2f}"]
    (floor,) = find(r"no compiled step was under (\d+\.\d) ms", bench_readme())
    fastest = min(v[mode]["min_s"] for v in (adam, sgd) for mode in ("default", "whole-step"))
    assert float(floor) <= fastest * 1e3 < float(floor) + 0.1


# ---------------------------------------------------------------------------------------------------


def test_this_file_imports_no_torch():
    code = ("import sys; sys.path.insert(0, 'tests'); import test_readme_figures; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


PROXY_IDEAS = RESULTS / "cpu-intel-xeon-2-cores-amx-proxy-record-ideas"
PROXY_EFFECT = re.compile(r"`([\w.-]+)`(?::| \|) ([+-]\d+\.\d+) points \(95% interval ([+-]\d+\.\d+) to ([+-]\d+\.\d+)\)")


def test_the_record_recipe_table_is_the_proxys_arms():
    """Every effect the record-recipe table quotes for a proxy arm is that arm's in proxy.json."""
    arms = json.loads((PROXY_IDEAS / "proxy.json").read_text())["arms"]
    section = readme().split("What has been tried on the record recipe")[1].split("### Speed on a CPU")[0]
    quoted = PROXY_EFFECT.findall(section)
    assert len(quoted) >= 12 and len({name for name, *_ in quoted}) == len(quoted)
    for name, difference, low, high in quoted:
        measured = arms[name]["minus_base"]
        assert [float(difference), float(low), float(high)] == [
            round(measured[key], 2) for key in ("difference", "low", "high")], name
    flat = " ".join(section.split())
    base, airbench = arms["base"]["stats"], arms["airbench-train94"]
    assert f"{100 * base['mean']:.2f} ± {100 * base['std']:.2f}%" in flat
    behind = airbench["minus_base"]
    assert (f"{100 * airbench['stats']['mean']:.2f} ± {100 * airbench['stats']['std']:.2f}% without test-time "
            f"augmentation, {-behind['difference']:.2f} points below") in flat
    assert f"(95% interval {behind['low']:.2f} to {behind['high']:.2f}; arm `airbench-train94`)" in flat
