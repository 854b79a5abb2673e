"""write_beton.py: betons hold exactly the source, are written atomically, and are not rewritten needlessly."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, learnable_arrays

import write_beton
from speedrun.data.betons import load_beton
from speedrun.data.cifar import SourceError
from write_beton import OutputError, write_betons


def betons(tmp_path):
    return str(tmp_path / "out" / "train.beton"), str(tmp_path / "out" / "test.beton")


def test_betons_hold_the_source_and_describe_it(tiny_betons, tiny_arrays, tiny_archive):
    for path, split in zip(tiny_betons, ("train", "test")):
        images, labels = load_beton(path, "cpu")
        np.testing.assert_array_equal(images.numpy(), getattr(tiny_arrays, f"{split}_images"))
        np.testing.assert_array_equal(labels.numpy(), getattr(tiny_arrays, f"{split}_labels"))
        description = json.loads(open(path + ".json").read())
        assert description["split"] == split and description["count"] == len(labels)
        assert description["image_size"] == [32, 32, 3]
        assert list(description["class_counts"].values()) == np.bincount(labels.numpy(), minlength=10).tolist()
        assert description["source"]["kind"] == "binary-archive"
        assert description["source"]["checksum"].startswith("md5:")
        assert description["ffcv_version"] == "1.0.2"


def test_second_run_skips_and_a_new_source_rewrites(make_binary_archive, tmp_path, capsys):
    train, test = betons(tmp_path)
    archive = make_binary_archive(learnable_arrays(20, 10))
    assert write_betons(str(archive), train, test, num_workers=2) is True
    stamp = os.stat(train).st_mtime_ns
    assert write_betons(str(archive), train, test, num_workers=2) is False
    assert "skipped" in capsys.readouterr().out
    assert os.stat(train).st_mtime_ns == stamp

    other = make_binary_archive(learnable_arrays(30, 10, seed=5), name="other.tar.gz")
    assert write_betons(str(other), train, test, num_workers=1) is True
    assert len(load_beton(train, "cpu")[1]) == 30


def test_damaged_beton_is_rewritten(make_binary_archive, tmp_path):
    train, test = betons(tmp_path)
    archive = make_binary_archive(learnable_arrays(20, 10))
    write_betons(str(archive), train, test, num_workers=1)
    with open(test, "r+b") as file:
        file.truncate(1000)
    assert write_betons(str(archive), train, test, num_workers=1) is True
    assert len(load_beton(test, "cpu")[1]) == 10


def test_unwritable_output_fails_before_reading_the_source(tmp_path):
    (tmp_path / "a_file").write_text("")
    unreachable = "http://127.0.0.1:9/cifar-10-binary.tar.gz"  # reading the source would fail differently
    with pytest.raises(OutputError, match="cannot write betons into"):
        write_betons(
            "download",
            str(tmp_path / "a_file" / "train.beton"),
            str(tmp_path / "test.beton"),
            cache_dir=tmp_path / "cache",
            url=unreachable,
        )
    with pytest.raises(OutputError, match="same file"):
        write_betons("download", str(tmp_path / "x.beton"), str(tmp_path / "x.beton"), url=unreachable)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only folders")
def test_read_only_output_folder(tmp_path):
    (tmp_path / "locked").mkdir(mode=0o500)
    with pytest.raises(OutputError, match="cannot write betons into .*locked"):
        write_betons("download", str(tmp_path / "locked" / "train.beton"), str(tmp_path / "test.beton"))


@pytest.mark.parametrize("interruption", [RuntimeError("disk on fire"), KeyboardInterrupt()])
def test_interrupted_write_leaves_nothing_behind(make_binary_archive, tmp_path, monkeypatch, interruption):
    from ffcv.writer import DatasetWriter

    def write_half_then_fail(self, dataset, **options):
        with open(self.fname, "wb") as file:
            file.write(b"\0" * 5000)
        raise interruption

    monkeypatch.setattr(DatasetWriter, "from_indexed_dataset", write_half_then_fail)
    train, test = betons(tmp_path)
    with pytest.raises(type(interruption)):
        write_betons(str(make_binary_archive(learnable_arrays(20, 10))), train, test, num_workers=1)
    assert os.listdir(tmp_path / "out") == []


def test_a_full_disk_leaves_the_previous_betons_intact(make_binary_archive, tmp_path, monkeypatch):
    import errno

    from ffcv.writer import DatasetWriter

    train, test = betons(tmp_path)
    write_betons(str(make_binary_archive(learnable_arrays(20, 10, seed=1), "first.tar.gz")), train, test, num_workers=1)
    before = {name: (tmp_path / "out" / name).read_bytes() for name in os.listdir(tmp_path / "out")}

    def fill_the_disk(self, dataset, **options):
        with open(self.fname, "wb") as file:
            file.write(b"\0" * 5000)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(DatasetWriter, "from_indexed_dataset", fill_the_disk)
    with pytest.raises(OSError, match="No space left"):
        write_betons(
            str(make_binary_archive(learnable_arrays(20, 10, seed=2), "second.tar.gz")), train, test, num_workers=1
        )
    after = {name: (tmp_path / "out" / name).read_bytes() for name in os.listdir(tmp_path / "out")}
    assert after == before  # same files, same bytes, no temporary left over


def test_too_little_free_space_is_refused_before_writing(make_binary_archive, tmp_path, monkeypatch):
    import shutil

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=1 << 20))
    train, test = betons(tmp_path)
    with pytest.raises(OutputError, match="not enough disk space"):
        write_betons(str(make_binary_archive(learnable_arrays(20, 10))), train, test, num_workers=1)
    assert os.listdir(tmp_path / "out") == []


def test_interrupted_ffcv_workers_are_stopped(make_binary_archive, tmp_path, monkeypatch):
    import multiprocessing
    import time

    def slow_sample(self, index):
        time.sleep(60)  # keeps ffcv's workers busy until they are stopped

    def progress_bar_interrupted(**options):
        raise KeyboardInterrupt  # stands in for Ctrl-C while ffcv waits for its workers

    # ffcv creates its progress bar right after starting its worker processes.
    monkeypatch.setattr("ffcv.writer.tqdm", progress_bar_interrupted)
    monkeypatch.setattr(write_beton._Samples, "__getitem__", slow_sample)
    train, test = betons(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        write_betons(str(make_binary_archive(learnable_arrays(20, 10))), train, test, num_workers=2)
    assert multiprocessing.active_children() == []
    assert os.listdir(tmp_path / "out") == []


def test_source_errors_propagate(tmp_path):
    with pytest.raises(SourceError, match="no such file or folder"):
        write_betons(str(tmp_path / "nowhere"), *betons(tmp_path))


def run_cli(*args):
    return subprocess.run(
        [sys.executable, str(ROOT / "write_beton.py"), *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_cli_writes_then_skips(tiny_archive, tiny_arrays, tmp_path):
    train, test = betons(tmp_path)
    args = [
        "--data.source",
        str(tiny_archive),
        "--data.train_dataset",
        train,
        "--data.val_dataset",
        test,
        "--data.num_workers",
        "1",
    ]
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    np.testing.assert_array_equal(load_beton(test, "cpu")[0].numpy(), tiny_arrays.test_images)
    second = run_cli(*args)
    assert second.returncode == 0 and "skipped" in second.stdout


def test_cli_reports_a_bad_source_in_one_line(tmp_path):
    result = run_cli("--data.source", str(tmp_path / "nowhere"), "--data.train_dataset", betons(tmp_path)[0])
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error:") and "no such file or folder" in result.stderr


def test_cli_help_lists_every_option():
    result = run_cli("--help")
    assert result.returncode == 0
    for option in ("source", "cache_dir", "trust_pickles", "num_workers", "train_dataset", "val_dataset"):
        assert f"data.{option}" in result.stdout
