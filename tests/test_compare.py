"""speedrun.compare: arms over the same seeds, read from their summaries, each against the first with
Welch's interval; the committed proxy table reproduced from its files; a tiny comparison run end to end
and resumed; and the command line's errors, each in one line."""

import json
import shlex
import statistics
from pathlib import Path

import pytest

from speedrun import compare

ROOT = Path(__file__).resolve().parents[1]
COMMITTED_PROXY = ROOT / "benchmarks" / "results" / "cpu-intel-xeon-2-cores-amx-proxy-record-ideas"
# the tiny comparison: 2 arms x 2 seeds, width 8, one epoch of 256 images on the CPU
TINY_OPTIONS = shlex.split(
    "--training.precision fp32 --training.device cpu --model.width 8 --epochs 1 --training.batch_size 64 "
    "--lr.lr_max 0.02 --training.compile_cache '' --logging.plots false --logging.progress false "
    "--logging.checkpoint none"
)


def nothing_runs(*args, **kwargs):
    pytest.fail(f"nothing is left to run, yet {args[0] if args else kwargs} ran")


def test_committed_proxy_table_is_reproduced_from_its_files(monkeypatch):
    """Compare's reader and table, on the committed proxy's seed summaries (nothing run, nothing written),
    give the committed proxy.json's accuracies, statistics and intervals, and proxy.md's first columns."""
    committed = json.loads((COMMITTED_PROXY / "proxy.json").read_text())
    monkeypatch.setattr(compare.subprocess, "run", nothing_runs)
    arms = [(name, row["options"]) for name, row in committed["arms"].items()]
    table, text = compare.run_comparison(str(COMMITTED_PROXY), arms, committed["seeds"], common=[])
    assert list(table) == list(committed["arms"])
    for name, row in committed["arms"].items():
        assert table[name]["accuracy"] == row["accuracy"] and table[name]["train_seconds"] == row["train_seconds"]
        for key in ("mean", "std", "min", "max", "n"):
            assert table[name]["stats"][key] == pytest.approx(row["stats"][key], rel=1e-12)
        if "minus_base" in row:
            assert table[name]["minus_base"] == pytest.approx(row["minus_base"])
        else:
            assert "minus_base" not in table[name]
        assert table[name].get("paired_minus_base") == row.get("paired_minus_base")
        assert table[name]["seeds_per_hour"] > 0 and table[name]["reached"] == 0  # none reaches 94% at width 16
    rows = [line for line in (COMMITTED_PROXY / "proxy.md").read_text().splitlines() if line.startswith("| ")][2:]
    for row in rows:  # arm, options, accuracies, mean ± sd and the interval: the same cells
        assert any(line.startswith(row.rsplit("|", 2)[0]) for line in text.splitlines()), row


def tiny_comparison(tiny_betons, out):
    data = ["--data.train_dataset", tiny_betons[0], "--data.val_dataset", tiny_betons[1]]
    compare.main(
        ["--out", str(out), "--seeds", "0-1", "--arm", "base=", "--arm", "lr-0.01=--lr.lr_max 0.01"]
        + TINY_OPTIONS
        + data
    )
    return json.loads((out / "compare.json").read_text())


def test_tiny_comparison_end_to_end_then_resumed(tiny_betons, tmp_path, monkeypatch):
    out = tmp_path / "compare"
    saved = tiny_comparison(tiny_betons, out)
    assert saved["seeds"] == [0, 1] and saved["base"] == "base" and list(saved["arms"]) == ["base", "lr-0.01"]
    assert "--training.epochs" in saved["common_options"]  # --epochs spelled out, for a reference arm too
    for arm, row in saved["arms"].items():
        summaries = [json.loads((out / arm / f"seed{seed}" / "summary.json").read_text()) for seed in (0, 1)]
        assert row["accuracy"] == [s["final_test_acc"] for s in summaries]
        assert row["train_seconds"] == [round(s["train_seconds"], 2) for s in summaries]
        assert row["total_seconds"] == [round(s["seconds"]["total"], 2) for s in summaries]
        assert (
            row["seeds_per_hour"] == pytest.approx(2 / sum(row["total_seconds"]) * 3600) and row["seeds_per_hour"] > 0
        )
        assert row["stats"]["mean"] == pytest.approx(statistics.fmean(row["accuracy"]))
    lr_config = (out / "lr-0.01" / "seed0" / "config.yaml").read_text()
    assert "lr_max: 0.01" in lr_config  # the arm's options laid over the common ones
    difference = saved["arms"]["lr-0.01"]["minus_base"]["difference"]
    means = [statistics.fmean(saved["arms"][arm]["accuracy"]) for arm in ("lr-0.01", "base")]
    assert difference == pytest.approx(100 * (means[0] - means[1]))
    assert "minus_base" not in saved["arms"]["base"]
    assert "| lr-0.01 | `--lr.lr_max 0.01` |" in (out / "compare.md").read_text()

    monkeypatch.setattr(compare.subprocess, "run", nothing_runs)  # every seed has its summary: read, not rerun
    assert tiny_comparison(tiny_betons, out)["arms"] == saved["arms"]


def test_an_interrupted_seed_alone_runs_again_into_its_folder(tmp_path, monkeypatch):
    """A seed folder without a summary (a run cut short) runs again, with --logging.overwrite; the seeds
    with one do not."""
    (tmp_path / "base" / "seed0").mkdir(parents=True)
    (tmp_path / "base" / "seed0" / "summary.json").write_text("{}")
    (tmp_path / "base" / "seed1").mkdir()
    commands = []
    monkeypatch.setattr(compare.subprocess, "run", lambda command, **kwargs: commands.append(command))
    compare.run_arm(str(tmp_path), "base", "--training.lookahead 5", [0, 1], ["--model.width", "8"])
    [command] = commands
    assert command[command.index("--seeds") + 1] == "1" and "--logging.overwrite" in command
    assert command[-2:] == ["--training.lookahead", "5"] and str(tmp_path / "base") in command
    reference = compare.arm_command("O", "ab", "train96", "0,1", ["--model.width", "8"])
    assert reference[1:5] == ["-m", "speedrun.reference", "--name", "train96"] and "--model.width" in reference


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--arm", "base"], "an arm is NAME=OPTIONS"),
        (["--arm", "a/b="], "an arm is NAME=OPTIONS"),
        (["--arm", "base=train95"], "expected training options"),
        (["--arm", "base=--training.epochs '8"], "arm base:"),
        (["--arm", "base=--logging.folder x"], "--logging.folder is set by the comparison"),
        (["--arm", "base=", "--arm", "base=--training.epochs 8"], "arm names repeat: base"),
        (["--arm", "base=", "--arm", "la=--training.lookahead 5", "--seeds", "3"], "needs 2 seeds or more"),
        (["--arm", "base=", "--seeds", "0-x"], "bad seeds"),
        (["--arm", "base=", "--training.seeds", "0-4"], "--training.seeds is set by the comparison"),
    ],
)
def test_errors_are_one_line_with_exit_status_2(arguments, message, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(compare.subprocess, "run", nothing_runs)
    with pytest.raises(SystemExit) as exit_:
        compare.main(["--out", str(tmp_path), *arguments])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_.value.code == 2 and message in error and error.startswith("python -m speedrun.compare: error:")
