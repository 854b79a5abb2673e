"""The front page's library example runs as printed, on tiny data with a tiny config laid into it: the
imports, loading betons, train, predict and the bare net."""

import os
import re
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
# what the example trains with, replaced so that it runs in seconds on 256 images
PRINTED_CONFIG = '{"training": {"epochs": 24, "seed": 1}}'
TINY_CONFIG = (
    '{"training": {"epochs": 1, "seed": 1, "batch_size": 64, "device": "cpu", "precision": "fp32", "tta": 0},'
    ' "model": {"width": 8}, "lr": {"lr_max": 0.02}, "logging": {"plots": False, "progress": False}}'
)


def library_example():
    """The README's python block."""
    [block] = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)
    return block


def test_the_readme_library_example_runs(tiny_betons, tmp_path, capsys):
    code = library_example()
    assert PRINTED_CONFIG in code
    (tmp_path / "data").mkdir()
    for name, beton in zip(("cifar10_train.beton", "cifar10_test.beton"), tiny_betons):
        os.symlink(beton, tmp_path / "data" / name)
    Image.fromarray(np.full((32, 32, 3), 200, dtype=np.uint8)).save(tmp_path / "cat.jpg")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        namespace = {}
        exec(compile(code.replace(PRINTED_CONFIG, TINY_CONFIG), "README.md", "exec"), namespace)
    finally:
        os.chdir(cwd)
    summary, net = namespace["summary"], namespace["net"]
    assert 0 <= summary["final_test_acc"] <= 1 and (tmp_path / summary["folder"]).is_dir()
    assert sum(p.numel() for p in net.parameters()) == 6_573_130
    assert "cat.jpg" in capsys.readouterr().out
