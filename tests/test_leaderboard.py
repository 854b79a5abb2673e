"""Multi-seed statistics, time to target, the leaderboard file, its markdown table and the CLI."""

import json
import math
import statistics
import sys
from collections import namedtuple

import pytest
import torch
from scipy import stats as scipy_stats

from speedrun import leaderboard
from speedrun.runs import leaderboard_entries
from speedrun.runs.config import parse_seeds, resolve_config
from speedrun.runs.leaderboard_entries import (
    ACCURACY_MARGIN,
    MIN_SEEDS,
    append_entry,
    compare,
    config_hash,
    make_entry,
    ratio_interval,
    read_entries,
    render_markdown,
    seed_stats,
    summarise_runs,
    time_to_target,
    verdict,
    welch_interval,
)


def history(*points):
    """[(epoch, train_seconds, test_acc), ...] -> per-evaluation dicts like the trainer's."""
    return [{"epoch": e, "train_seconds": t, "test_acc": a, "test_loss": 1.0, "lr": 0.1} for e, t, a in points]


SOURCE = {"kind": "download", "checksum": "md5:1"}


def summary(seed, acc, seconds, evaluations, device="fake-gpu", config=None):
    return {
        "final_test_acc": acc,
        "best_test_acc": acc,
        "train_seconds": seconds,
        "compile_seconds": 1.0,
        "device": device,
        "versions": {"torch": "x"},
        "seed": seed,
        "config": config or {"training": {"seed": seed, "epochs": 10}},
        "data": {
            "train": "/somewhere/train.beton",
            "test": "/somewhere/test.beton",
            "train_meta": {"beton_sha256": "abc", "source": SOURCE},
            "test_meta": {"beton_sha256": "def", "source": SOURCE},
        },
        "history": evaluations,
    }


def entry(name, kind, accuracies, seconds, session="s1", target=0.94):
    summaries = [summary(i, a, t, history((10, t, a))) for i, (a, t) in enumerate(zip(accuracies, seconds))]
    return make_entry(summaries, name=name, kind=kind, target=target, session=session)


def test_seed_stats_several_values():
    stats = seed_stats([0.90, 0.92, 0.94])
    assert stats["mean"] == pytest.approx(0.92)
    assert stats["std"] == pytest.approx(0.02)  # sample std: sqrt((0.02² + 0 + 0.02²) / 2)
    assert (stats["min"], stats["max"], stats["n"]) == (0.90, 0.94, 3)


def test_seed_stats_single_value_and_empty():
    assert seed_stats([0.5]) == {"mean": 0.5, "std": 0.0, "min": 0.5, "max": 0.5, "n": 1}
    with pytest.raises(ValueError):
        seed_stats([])


def test_time_to_target_reached_at_first_evaluation():
    assert time_to_target(history((1, 2.0, 0.95), (2, 4.0, 0.96)), 0.94) == 2.0


def test_time_to_target_never_reached():
    assert time_to_target(history((1, 2.0, 0.80), (2, 4.0, 0.939)), 0.94) is None
    assert time_to_target([], 0.94) is None


def test_time_to_target_counts_first_reach_even_if_it_drops_later():
    evaluations = history((1, 2.0, 0.90), (2, 4.0, 0.941), (3, 6.0, 0.93), (4, 8.0, 0.95))
    assert time_to_target(evaluations, 0.94) == 4.0


def test_time_to_target_fractional_epochs_no_interpolation():
    evaluations = history((20, 10.0, 0.930), (20.5, 10.3, 0.938), (20.75, 10.45, 0.9405), (21, 10.6, 0.942))
    assert time_to_target(evaluations, 0.94) == 10.45  # exactly == target counts too:
    assert time_to_target(evaluations, 0.938) == 10.3


def test_summarise_runs():
    runs = [
        summary(0, 0.945, 10.0, history((1, 5.0, 0.90), (2, 10.0, 0.945))),
        summary(1, 0.935, 11.0, history((1, 5.5, 0.90), (2, 11.0, 0.935))),
        summary(2, 0.950, 12.0, history((1, 6.0, 0.941), (2, 12.0, 0.950))),
    ]
    stats = summarise_runs(runs, 0.94)
    assert stats["accuracy"]["mean"] == pytest.approx((0.945 + 0.935 + 0.950) / 3)
    assert stats["train_seconds"]["mean"] == pytest.approx(11.0)
    assert stats["time_to_target"]["mean"] == pytest.approx(8.0)  # seeds 0 and 2: 10.0 and 6.0
    assert (stats["reached"], stats["runs"], stats["target"]) == (2, 3, 0.94)
    assert summarise_runs(runs, 0.99)["time_to_target"] is None


def test_config_hash_ignores_seed_and_logging_only():
    base = {"training": {"seed": 0, "epochs": 24}, "logging": {"folder": "runs/a"}, "model": {"width": 64}}
    same = {"training": {"seed": 7, "epochs": 24}, "logging": {"folder": "runs/b"}, "model": {"width": 64}}
    other = {"training": {"seed": 0, "epochs": 10}, "logging": {"folder": "runs/a"}, "model": {"width": 64}}
    assert config_hash(base) == config_hash(same)
    assert config_hash(base) != config_hash(other)
    assert len(config_hash(base)) == 12 and int(config_hash(base), 16) >= 0


def test_make_entry_fields():
    made = entry("seed", "ours", [0.945, 0.935], [10.0, 11.0])
    assert made["seeds"] == [0, 1] and made["accuracies"] == [0.945, 0.935]
    assert made["time_to_target"] == [10.0, None]
    assert made["data"] == {"source": SOURCE, "train_sha256": "abc", "test_sha256": "def"}
    assert made["kind"] == "ours" and made["device"] == "fake-gpu" and made["target"] == 0.94


def test_leaderboard_round_trip(tmp_path):
    path = str(tmp_path / "results" / "leaderboard.jsonl")
    entries = [
        entry("seed", "ours", [0.945, 0.935, 0.95], [10.0, 11.0, 12.5]),
        entry("airbench train94", "reference", [0.9401], [3.83]),
        entry("speedrun", "ours", [0.1 + 0.2], [1 / 3], session="s2"),
    ]
    for made in entries:
        append_entry(path, made)
    assert read_entries(path) == entries


def test_malformed_line_names_its_number(tmp_path):
    path = tmp_path / "leaderboard.jsonl"
    append_entry(str(path), entry("seed", "ours", [0.9], [1.0]))
    with open(path, "a") as f:
        f.write('{"name": "broken"\n')
    with pytest.raises(ValueError, match="line 2"):
        read_entries(str(path))
    path.write_text("[1, 2]\n")
    with pytest.raises(ValueError, match="line 1.*JSON object"):
        read_entries(str(path))


def test_markdown_ratio_and_difference_against_same_session_reference():
    ours = entry("speedrun", "ours", [0.945, 0.955], [5.0, 7.0])  # mean 95.00%, 6 s
    ref = entry("airbench train94", "reference", [0.94, 0.94], [4.0, 4.0])  # 94.00%, 4 s
    elsewhere = entry("airbench train96", "reference", [0.96], [30.0], session="another")
    table = render_markdown([ours, ref, elsewhere], anchors=False)
    row = next(line for line in table.splitlines() if line.startswith("| speedrun "))
    assert "1.50× vs airbench train94" in row and "+1.00 vs airbench train94" in row
    assert "train96" not in row  # another session: another device or day, not comparable
    assert "95.00% ± 0.71" in row and "94.50–95.50%" in row and "6.00 s" in row
    assert "published" not in table


def test_markdown_time_to_target_cell():
    made = entry("seed", "ours", [0.945, 0.935, 0.95], [10.0, 11.0, 12.0])
    row = render_markdown([made], anchors=False).splitlines()[2]
    assert "11.00 s (2/3 to 94%)" in row  # mean over the two seeds that reached it
    never = entry("seed", "ours", [0.5], [1.0])
    assert "not reached (0/1 to 94%)" in render_markdown([never], anchors=False)


def test_markdown_published_anchors_are_marked_and_not_in_ratios():
    ours = entry("speedrun", "ours", [0.95], [6.0])
    table = render_markdown([ours])
    published = [line for line in table.splitlines() if "| published |" in line]
    assert len(published) == len(leaderboard_entries.PUBLISHED)
    assert any(
        "airbench94 " in line and "A100" in line and "94.01% (reported)" in line and "3.83 s to 94.01%" in line
        for line in published
    )
    assert any("Page ResNet-9" in line and "V100" in line for line in published)
    ours_row = next(line for line in table.splitlines() if line.startswith("| speedrun "))
    assert ours_row.endswith("| — | — |")  # no reference in the session: published rows never count


def test_parse_seeds():
    assert parse_seeds("0,1,2") == [0, 1, 2]
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert parse_seeds("0-2, 7") == [0, 1, 2, 7]
    for bad in ("", "a", "1-", "-3", "1,,2"):
        with pytest.raises(ValueError):
            parse_seeds(bad)


FakeData = namedtuple("FakeData", "train_images train_labels test_images test_labels")


def fake_train(train_module, calls):
    def train(config=None, data=None, **_):
        seed = config["training"]["seed"]
        calls.append(("ours", seed, config, data))
        acc = 0.93 + 0.01 * seed
        return summary(
            seed, acc, 10.0 + seed, history((1, 5.0, acc - 0.05), (2, 10.0 + seed, acc)), config=resolve_config(config)
        )

    return train


def run_cli(monkeypatch, tmp_path, calls, *extra):
    import torch

    from speedrun import train as train_module

    data = FakeData(
        torch.zeros(4, 32, 32, 3, dtype=torch.uint8),
        torch.zeros(4, dtype=torch.int64),
        torch.zeros(2, 32, 32, 3, dtype=torch.uint8),
        torch.zeros(2, dtype=torch.int64),
    )
    monkeypatch.setattr(train_module, "train", fake_train(train_module, calls))
    monkeypatch.setattr(leaderboard, "load_data", lambda overrides: data)
    board, table = tmp_path / "board.jsonl", tmp_path / "board.md"
    leaderboard.main(
        ["--leaderboard.seeds", "0-2", "--leaderboard.file", str(board), "--leaderboard.markdown", str(table), *extra]
    )
    return read_entries(str(board)), table.read_text(), data


def test_cli_runs_every_seed_on_data_loaded_once(monkeypatch, tmp_path, capsys):
    calls = []
    entries, table, data = run_cli(monkeypatch, tmp_path, calls, "--training.late_evals_from", "1", "--epochs", "2")
    assert [seed for _, seed, _, _ in calls] == [0, 1, 2]
    assert all(given is data for _, _, _, given in calls)
    for _, seed, config, _ in calls:  # only what was given: train lays it over the recipe
        assert config["training"] == {"late_evals_from": 1, "epochs": 2, "recipe": "seed", "seed": seed}
        assert config["logging"]["folder"].endswith(f"seed{seed}")
    assert len({config["logging"]["folder"] for _, _, config, _ in calls}) == 3
    [made] = entries
    assert made["kind"] == "ours" and made["recipe"] == "seed" and made["seeds"] == [0, 1, 2]
    assert made["accuracies"] == pytest.approx([0.93, 0.94, 0.95])
    assert made["time_to_target"] == [None, 11.0, 12.0] and made["target"] == 0.94
    assert "| seed | ours |" in table and table in capsys.readouterr().out


def test_cli_reference_before_ours_and_compared(monkeypatch, tmp_path):
    from speedrun import reference

    calls = []

    def fake_reference(name, data, folder, seed, device, warmup=True, width=64):
        assert width == 16  # our width: the reference is scaled alike
        calls.append((name, seed, warmup))
        return summary(
            seed, 0.94, 5.0, history((9.9, 5.0, 0.94)), device="fake-gpu", config={"reference": {"name": name}}
        )

    monkeypatch.setattr(reference, "run_reference", fake_reference)
    monkeypatch.setattr(reference, "check_available", lambda device: None)
    entries, table, _ = run_cli(
        monkeypatch,
        tmp_path,
        calls,
        "--leaderboard.reference",
        "train94",
        "--leaderboard.reference_order",
        "before",
        "--model.width",
        "16",
    )
    assert [call[:2] for call in calls] == [
        ("train94", 0),
        ("train94", 1),
        ("train94", 2),
        ("ours", 0),
        ("ours", 1),
        ("ours", 2),
    ]
    assert [call[2] for call in calls[:3]] == [True, False, False]  # warmed up once, before the first seed
    ours, ref = entries
    assert ref["kind"] == "reference" and ref["session"] == ours["session"]
    assert ref["data"] == ours["data"]
    row = next(line for line in table.splitlines() if line.startswith("| seed "))
    assert "2.20× vs airbench train94" in row and "+0.00 vs airbench train94" in row
    assert math.isclose(sum(ours["train_seconds"]) / 3, 11.0)


def test_cli_recipe_and_run_folders(monkeypatch, tmp_path):
    calls = []
    entries, _, _ = run_cli(
        monkeypatch, tmp_path, calls, "--recipe", "speedrun", "--logging.folder", str(tmp_path / "runs")
    )
    assert [config["logging"]["folder"] for _, _, config, _ in calls] == [
        str(tmp_path / "runs" / f"seed{seed}") for seed in (0, 1, 2)
    ]
    assert all(config["training"]["recipe"] == "speedrun" for _, _, config, _ in calls)
    assert entries[0]["name"] == entries[0]["recipe"] == "speedrun"


@pytest.mark.parametrize(
    "bad",
    [["--leaderboard.reference", "train95"], ["--seeds", "x"], ["--recipe", "seed", "--training.recipe", "speedrun"]],
)
def test_cli_rejects_bad_options(monkeypatch, tmp_path, capsys, bad):
    with pytest.raises(SystemExit) as stopped:
        run_cli(monkeypatch, tmp_path, [], *bad)
    assert stopped.value.code in (1, 2) and "error" in capsys.readouterr().err


def test_cli_reference_required_but_missing_fails_before_training(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "airbench", None)  # not installed
    calls = []
    with pytest.raises(SystemExit):
        run_cli(monkeypatch, tmp_path, calls, "--reference", "train94", "--leaderboard.require_reference", "true")
    assert calls == [] and "pip install 'speedrun[reference]'" in capsys.readouterr().err


def test_cli_reference_that_cannot_run_leaves_ours_alone_saying_why(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "airbench", None)  # not installed
    calls = []
    entries, table, _ = run_cli(monkeypatch, tmp_path, calls, "--reference", "train94")
    assert [seed for _, seed, _, _ in calls] == [0, 1, 2]
    [ours] = entries
    assert ours["kind"] == "ours" and "comparisons" not in ours
    assert "pip install 'speedrun[reference]'" in ours["reference_skipped"]["airbench train94"]
    assert "airbench train94 not run: the reference trainer needs airbench" in table
    assert "our seeds run alone, without the reference" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------
# the statistics: Welch's interval, the time ratio, the verdict


def test_welch_interval_by_hand():
    a, b = [1.0, 2.0, 3.0, 4.0, 5.0], [2.0, 4.0, 6.0, 8.0, 10.0]  # variances 2.5 and 10, 5 values each
    se2 = 2.5 / 5 + 10 / 5  # 2.5
    df = se2**2 / ((2.5 / 5) ** 2 / 4 + (10 / 5) ** 2 / 4)  # Welch–Satterthwaite: 6.25 / 1.0625 = 100/17
    half = scipy_stats.t.ppf(0.975, df) * math.sqrt(se2)
    found = welch_interval(a, b)
    assert found["difference"] == pytest.approx(-3.0) and found["df"] == pytest.approx(100 / 17)
    assert (found["low"], found["high"]) == pytest.approx((-3.0 - half, -3.0 + half))
    assert (found["low"], found["high"]) == pytest.approx((-6.8877, 0.8877), abs=1e-4)
    theirs = scipy_stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert (found["low"], found["high"]) == pytest.approx((theirs.low, theirs.high))


def test_welch_interval_without_spread_and_with_too_few_values():
    assert welch_interval([0.9] * 5, [0.8] * 5) == pytest.approx(
        {"difference": 0.1, "low": 0.1, "high": 0.1, "df": None}
    )
    with pytest.raises(ValueError):
        welch_interval([1.0], [1.0, 2.0])


def test_time_ratio_is_of_geometric_means_with_a_log_interval():
    theirs = [1.0, 1.1, 0.9, 1.05, 0.95]
    ours = [2 * t for t in theirs]  # every time doubled: the same spread of the logarithms
    found = ratio_interval(ours, theirs)
    assert found["ratio"] == pytest.approx(2.0)
    assert found["low"] < 2.0 < found["high"] and found["low"] * found["high"] == pytest.approx(4.0)
    logs = welch_interval([math.log(t) for t in ours], [math.log(t) for t in theirs])
    assert (found["low"], found["high"]) == pytest.approx((math.exp(logs["low"]), math.exp(logs["high"])))


def timed_entry(name, kind, accuracies, seconds, totals=None, session="s1"):
    made = entry(name, kind, accuracies, seconds, session=session)
    made["total_seconds"] = totals if totals is not None else [None] * len(seconds)
    return made


def comparison_of(low, high, time_low, time_high):
    return {
        "accuracy": {"difference": (low + high) / 2, "low": low, "high": high, "df": 9.0},
        "total": {"ratio": 1.0, "low": time_low, "high": time_high},
        "loop": None,
        "time_basis": "total",
        "seeds": [10, 10],
    }


@pytest.mark.parametrize(
    "accuracy, time, expected, why",
    [
        ((-0.05, 0.30), (0.80, 0.95), "ahead", "as accurate"),  # the margin itself counts as accurate enough
        ((0.10, 0.30), (0.80, 0.99), "ahead", "faster"),
        ((-0.30, -0.06), (0.50, 0.60), "behind", "less accurate"),  # faster, but wholly below the margin
        ((0.10, 0.30), (1.01, 1.20), "behind", "slower"),  # more accurate, but wholly slower
        ((-0.10, 0.30), (0.80, 0.95), "undecided", "reaches below -0.05"),
        ((0.10, 0.30), (0.90, 1.00), "undecided", "holds 1"),
    ],
)
def test_verdict_rule(accuracy, time, expected, why):
    found, text = verdict(comparison_of(*accuracy, *time))
    assert found == expected and why in text
    assert ACCURACY_MARGIN == 0.05 and MIN_SEEDS == 5


def test_fewer_than_five_seeds_give_no_interval_and_no_verdict():
    ours = timed_entry("speedrun", "ours", [0.95, 0.94, 0.95, 0.94], [5.0, 5.1, 5.2, 5.3])
    ref = timed_entry("airbench train94", "reference", [0.94] * 5, [4.0, 4.1, 4.2, 4.3, 4.4], session="s1")
    found = compare(ours, ref)
    assert found["verdict"] is None and "too few seeds" in found["why"] and "4 and 5" in found["why"]
    assert "low" not in found["accuracy"] and "low" not in found["loop"]
    assert found["accuracy"]["difference"] == pytest.approx(0.5)
    table = render_markdown([ours, ref], anchors=False)
    assert "no verdict: too few seeds for a 95% interval (4 and 5; 5 a side needed)" in table


def test_compare_uses_the_total_where_both_sides_recorded_it():
    ours = timed_entry(
        "speedrun",
        "ours",
        [0.950, 0.951, 0.949, 0.952, 0.948],
        [2.0, 2.1, 1.9, 2.05, 1.95],
        totals=[None, 2.3, 2.1, 2.25, 2.15],
    )  # an entry with a seed of unknown total
    ref = timed_entry(
        "airbench train94",
        "reference",
        [0.940, 0.941, 0.939, 0.942, 0.938],
        [4.0, 4.2, 3.8, 4.1, 3.9],
        totals=[4.5, 4.7, 4.3, 4.6, 4.4],
    )
    found = compare(ours, ref)
    assert found["time_basis"] == "loop" and found["total"]["seeds"] == [4, 5]  # 4 totals: too few for one
    ours["total_seconds"][0] = 2.2
    found = compare(ours, ref)
    assert found["time_basis"] == "total" and found["total"]["seeds"] == [5, 5]
    assert found["total"]["ratio"] == pytest.approx(
        math.exp(
            statistics.fmean(map(math.log, ours["total_seconds"]))
            - statistics.fmean(map(math.log, ref["total_seconds"]))
        )
    )
    assert found["accuracy"]["difference"] == pytest.approx(1.0)
    assert found["accuracy"]["low"] > 0 and found["total"]["high"] < 1
    assert found["verdict"] == "ahead"


def test_markdown_shows_both_clocks_the_intervals_and_the_verdict():
    ours = timed_entry(
        "speedrun",
        "ours",
        [0.905, 0.904, 0.906, 0.903, 0.907],
        [4.6, 4.7, 4.8, 4.65, 4.75],
        totals=[None, 4.9, 5.0, 4.95, 5.05],
    )
    ref = timed_entry(
        "airbench train94",
        "reference",
        [0.906, 0.907, 0.905, 0.908, 0.904],
        [2.0, 2.1, 2.2, 2.05, 2.15],
        totals=[2.5, 2.6, 2.7, 2.55, 2.65],
    )
    ours["clock"], ref["clock"] = "ours: the clock of ours", "airbench: the clock of airbench"
    table = render_markdown([ours, ref], anchors=False)
    row = next(line for line in table.splitlines() if line.startswith("| speedrun "))
    assert "| 4.70 s | 4.97 s (4 of 5 seeds) |" in row  # loop, then total (prepare + loop)
    ref_row = next(line for line in table.splitlines() if line.startswith("| airbench train94 "))
    assert "| 2.10 s | 2.60 s |" in ref_row
    found = compare(ours, ref)
    accuracy, loop = found["accuracy"], found["loop"]
    line = next(line for line in table.splitlines() if line.startswith("- speedrun against airbench train94"))
    assert f"accuracy -0.10 points ({accuracy['low']:+.2f} to {accuracy['high']:+.2f}, {accuracy['df']:.1f} df)" in line
    assert f"loop {loop['ratio']:.2f}× ({loop['low']:.2f}–{loop['high']:.2f}×)" in line
    assert "(5 and 5 seeds)" not in line and "5 and 5 seeds" in line
    assert "**behind**: slower: the loop time ratio interval" in line
    assert "Welch's t" in table and "at or above -0.05 points" in table
    assert "ours: the clock of ours" in table and "airbench: the clock of airbench" in table


# ---------------------------------------------------------------------------------------------------
# the fair clock: our regions, and the one command of a record attempt


def test_our_prepare_is_each_runs_start_up_and_range_test_without_the_build():
    seconds = {
        "build": 9.0,
        "startup": 0.5,
        "range_test": 0.25,
        "compile": 30.0,
        "training": 4.0,
        "evaluation": 1.0,
        "checkpoints": 0.0,
        "plots": 0.0,
        "total": 44.75,
    }
    for cache in ("cold", "warm", "reused", "none"):  # the first run's build and compiling are left out
        assert leaderboard.our_prepare({"seconds": seconds, "compile_cache": cache, "train_seconds": 4.0}) == 0.75
    assert leaderboard.our_prepare({"train_seconds": 1.0}) is None


def record_attempt(tiny_betons, tmp_path, board, table, *options, width, batch):
    """The record attempt's command with train94 as its reference, tiny, on the CPU, 2 seeds of 1 epoch."""
    common = "--recipe speedrun --seeds 0-1 --reference train94 --training.precision fp32 --training.device cpu"
    logging = "--logging.plots false --logging.progress false --logging.checkpoint none"
    leaderboard.main(
        [*common.split(), *options, "--model.width", str(width), "--epochs", "1", "--training.batch_size", str(batch)]
        + ["--training.compile_cache", "", "--data.train_dataset", tiny_betons[0], "--data.val_dataset", tiny_betons[1]]
        + ["--logging.folder", str(tmp_path / "runs"), *logging.split()]
        + ["--leaderboard.file", str(board), "--leaderboard.markdown", str(table)]
    )


def test_cli_records_both_clocks_and_the_comparison_in_json(monkeypatch, tmp_path):
    from speedrun import reference

    calls = []

    def fake_reference(name, data, folder, seed, device, warmup=True, width=64):
        calls.append((name, seed, warmup))
        made = summary(
            seed,
            0.94 + 0.001 * seed,
            5.0 + 0.01 * seed,
            history((9.9, 5.0, 0.94)),
            config={"reference": {"name": name}},
        )
        return {**made, "prepare_seconds": 0.5, "total_seconds": made["train_seconds"] + 0.5}

    def seconds_of(train):
        def timed_train(config=None, data=None, **options):
            result = train(config, data, **options)
            result["seconds"] = {"startup": 1.0, "range_test": 0.0}
            result["compile_cache"] = "none"
            return result

        return timed_train

    monkeypatch.setattr(reference, "run_reference", fake_reference)
    monkeypatch.setattr(reference, "check_available", lambda device: None)
    import torch

    from speedrun import train as train_module

    data = FakeData(*[torch.zeros(2, dtype=torch.uint8)] * 4)
    monkeypatch.setattr(leaderboard, "load_data", lambda overrides: data)
    original = fake_train(train_module, calls)
    monkeypatch.setattr(train_module, "train", seconds_of(original))
    board, table = tmp_path / "board.jsonl", tmp_path / "board.md"
    leaderboard.main(
        [
            "--seeds",
            "0-4",
            "--reference",
            "train94",
            "--leaderboard.file",
            str(board),
            "--leaderboard.markdown",
            str(table),
        ]
    )
    ours, ref = read_entries(str(board))
    assert [call[2] for call in calls if call[0] == "train94"] == [True, False, False, False, False]
    assert ours["prepare_seconds"] == [1.0] * 5  # the first seed's too: its build is charged apart
    assert ours["total_seconds"] == [11.0 + seed for seed in range(5)]
    assert ours["clock"] == leaderboard.OUR_CLOCK and ref["clock"] == reference.CLOCK
    assert ref["prepare_seconds"] == [0.5] * 5 and ref["total_seconds"] == pytest.approx(
        [5.5 + 0.01 * seed for seed in range(5)]
    )
    found = ours["comparisons"]["airbench train94"]
    assert found == json.loads(json.dumps(compare(ours, ref)))  # the JSON holds what the table shows
    assert found["time_basis"] == "total"  # five totals a side: the total's interval decides
    assert found["verdict"] == "behind" and "slower" in found["why"]
    assert "**behind**" in table.read_text()


def test_record_attempt_command_rehearsed_on_the_cpu(tiny_betons, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "airbench", None)  # airbench missing: ours runs alone, saying why
    board, table = tmp_path / "board.jsonl", tmp_path / "board.md"
    record_attempt(tiny_betons, tmp_path, board, table, width=8, batch=64)
    assert "our seeds run alone, without the reference" in capsys.readouterr().err
    [ours] = read_entries(str(board))
    assert ours["recipe"] == "speedrun" and ours["seeds"] == [0, 1] and ours["kind"] == "ours"
    assert all(seconds > 0 for seconds in ours["prepare_seconds"])  # the first run's too: its build apart
    for prepare, loop, total in zip(ours["prepare_seconds"], ours["train_seconds"], ours["total_seconds"]):
        assert total == pytest.approx(prepare + loop, abs=1e-3)
    assert "airbench train94" in ours["reference_skipped"]
    text = table.read_text()
    assert "| speedrun | ours |" in text and "airbench train94 not run" in text


def test_record_attempt_with_airbench_rehearsed_on_the_cpu(tiny_betons, tmp_path, monkeypatch):
    """The record attempt's command with airbench's train94 beside it, both on the CPU at width 4, on
    1,024 random images in memory (airbench's batch): both entries and their comparison are written."""
    from speedrun import reference
    from speedrun.data.betons import CifarData

    try:
        reference.import_airbench()
    except ImportError:
        pytest.skip("airbench not installed (optional: pip install 'speedrun[reference]')")
    generator = torch.Generator().manual_seed(0)
    data = CifarData(
        torch.randint(0, 256, (1024, 32, 32, 3), dtype=torch.uint8, generator=generator),
        torch.randint(0, 10, (1024,), generator=generator),
        torch.randint(0, 256, (64, 32, 32, 3), dtype=torch.uint8, generator=generator),
        torch.randint(0, 10, (64,), generator=generator),
    )
    monkeypatch.setattr(leaderboard, "load_data", lambda overrides: data)
    board, table = tmp_path / "board.jsonl", tmp_path / "board.md"
    record_attempt(tiny_betons, tmp_path, board, table, "--leaderboard.require_reference", "true", width=4, batch=256)
    ours, ref = read_entries(str(board))
    assert (ours["kind"], ref["kind"], ref["name"]) == ("ours", "reference", "airbench train94")
    assert ref["seeds"] == [0, 1] and all(0 <= a <= 1 for a in ref["accuracies"])
    assert all(seconds > 0 for seconds in ref["prepare_seconds"] + ref["train_seconds"])
    comparison = ours["comparisons"]["airbench train94"]
    assert comparison["verdict"] is None and "too few seeds" in comparison["why"]  # 2 seeds: no interval
    assert "airbench train94" in table.read_text()
