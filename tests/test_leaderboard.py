"""Multi-seed statistics, time to target, the leaderboard file, its markdown table and the CLI."""
import math
from collections import namedtuple

import pytest

from speedrun import leaderboard, leaderboard_entries
from speedrun.config import parse_seeds, resolve_config
from speedrun.leaderboard_entries import (append_entry, config_hash, make_entry, read_entries,
                                          render_markdown, seed_stats, summarise_runs, time_to_target)


def history(*points):
    """[(epoch, train_seconds, test_acc), ...] -> per-evaluation dicts like the trainer's."""
    return [{"epoch": e, "train_seconds": t, "test_acc": a, "test_loss": 1.0, "lr": 0.1}
            for e, t, a in points]


SOURCE = {"kind": "download", "checksum": "md5:1"}


def summary(seed, acc, seconds, evaluations, device="fake-gpu", config=None):
    return {"final_test_acc": acc, "best_test_acc": acc, "train_seconds": seconds, "compile_seconds": 1.0,
            "device": device, "versions": {"torch": "x"}, "seed": seed,
            "config": config or {"training": {"seed": seed, "epochs": 10}},
            "data": {"train": "/somewhere/train.beton", "test": "/somewhere/test.beton",
                     "train_meta": {"beton_sha256": "abc", "source": SOURCE},
                     "test_meta": {"beton_sha256": "def", "source": SOURCE}},
            "history": evaluations}


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
    runs = [summary(0, 0.945, 10.0, history((1, 5.0, 0.90), (2, 10.0, 0.945))),
            summary(1, 0.935, 11.0, history((1, 5.5, 0.90), (2, 11.0, 0.935))),
            summary(2, 0.950, 12.0, history((1, 6.0, 0.941), (2, 12.0, 0.950)))]
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
    entries = [entry("seed", "ours", [0.945, 0.935, 0.95], [10.0, 11.0, 12.5]),
               entry("airbench train94", "reference", [0.9401], [3.83]),
               entry("speedrun", "ours", [0.1 + 0.2], [1 / 3], session="s2")]
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
    assert any("airbench94 " in line and "A100" in line and "94.01% (reported)" in line
               and "3.83 s to 94.01%" in line for line in published)
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
        return summary(seed, acc, 10.0 + seed, history((1, 5.0, acc - 0.05), (2, 10.0 + seed, acc)),
                       config=resolve_config(config))
    return train


def run_cli(monkeypatch, tmp_path, calls, *extra):
    from speedrun import train as train_module
    import torch
    data = FakeData(torch.zeros(4, 32, 32, 3, dtype=torch.uint8), torch.zeros(4, dtype=torch.int64),
                    torch.zeros(2, 32, 32, 3, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64))
    monkeypatch.setattr(train_module, "train", fake_train(train_module, calls))
    monkeypatch.setattr(leaderboard, "load_data", lambda overrides: data)
    board, table = tmp_path / "board.jsonl", tmp_path / "board.md"
    leaderboard.main(["--leaderboard.seeds", "0-2", "--leaderboard.file", str(board),
                      "--leaderboard.markdown", str(table), *extra])
    return read_entries(str(board)), table.read_text(), data


def test_cli_runs_every_seed_on_data_loaded_once(monkeypatch, tmp_path, capsys):
    calls = []
    entries, table, data = run_cli(monkeypatch, tmp_path, calls, "--training.late_evals_from", "1",
                                   "--epochs", "2")
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

    def fake_reference(name, data, folder, seed, device, warmup=True):
        calls.append((name, seed, warmup))
        return summary(seed, 0.94, 5.0, history((9.9, 5.0, 0.94)), device="fake-gpu",
                       config={"reference": {"name": name}})

    monkeypatch.setattr(reference, "run_reference", fake_reference)
    monkeypatch.setattr(reference, "check_available", lambda device: None)
    entries, table, _ = run_cli(monkeypatch, tmp_path, calls, "--leaderboard.reference", "train94",
                                "--leaderboard.reference_order", "before")
    assert [call[:2] for call in calls] == [("train94", 0), ("train94", 1), ("train94", 2),
                                           ("ours", 0), ("ours", 1), ("ours", 2)]
    assert [call[2] for call in calls[:3]] == [True, False, False]  # warmed up once, before the first seed
    ours, ref = entries
    assert ref["kind"] == "reference" and ref["session"] == ours["session"]
    assert ref["data"] == ours["data"]
    row = next(line for line in table.splitlines() if line.startswith("| seed "))
    assert "2.20× vs airbench train94" in row and "+0.00 vs airbench train94" in row
    assert math.isclose(sum(ours["train_seconds"]) / 3, 11.0)


def test_cli_recipe_and_run_folders(monkeypatch, tmp_path):
    calls = []
    entries, _, _ = run_cli(monkeypatch, tmp_path, calls, "--recipe", "speedrun",
                            "--logging.folder", str(tmp_path / "runs"))
    assert [config["logging"]["folder"] for _, _, config, _ in calls] == [
        str(tmp_path / "runs" / f"seed{seed}") for seed in (0, 1, 2)]
    assert all(config["training"]["recipe"] == "speedrun" for _, _, config, _ in calls)
    assert entries[0]["name"] == entries[0]["recipe"] == "speedrun"


@pytest.mark.parametrize("bad", [["--leaderboard.reference", "train95"], ["--seeds", "x"],
                                 ["--recipe", "seed", "--training.recipe", "speedrun"]])
def test_cli_rejects_bad_options(monkeypatch, tmp_path, capsys, bad):
    with pytest.raises(SystemExit) as stopped:
        run_cli(monkeypatch, tmp_path, [], *bad)
    assert stopped.value.code in (1, 2) and "error" in capsys.readouterr().err


def test_cli_reference_without_cuda_fails_before_training(monkeypatch, tmp_path, capsys):
    from speedrun import reference
    calls = []
    monkeypatch.setattr(reference, "import_airbench", lambda: None)
    with pytest.raises(SystemExit):
        run_cli(monkeypatch, tmp_path, calls, "--reference", "train94")
    assert calls == [] and "CUDA only" in capsys.readouterr().err
