"""The device policy (precision, memory format, compilation) and torch's thread count around ffcv."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from speedrun.runs.config import defaults
from speedrun.system import device as device_module
from speedrun.system.device import choose_precision, device_policy, has_native_bf16, policy_from_config

ROOT = Path(__file__).resolve().parents[1]
CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.mark.parametrize(
    "flags, native",
    [
        ({"avx2", "avx512f", "avx512_bf16"}, True),  # x86 with AVX-512 BF16
        ({"avx2", "amx_bf16", "amx_tile"}, True),  # x86 with AMX
        ({"fp", "asimd", "bf16"}, True),  # Arm with FEAT_BF16
        ({"avx2", "fma", "avx512f"}, False),  # AVX-512 without its BF16 extension
        (set(), False),  # flags unknown
    ],
)
def test_native_bf16_is_read_from_the_cpu_flags(flags, native):
    assert has_native_bf16(flags) is native


def test_auto_precision_is_bf16_on_cuda_and_on_cpus_with_native_bf16_only():
    assert choose_precision(CUDA, "auto", flags=set())[0] is True
    assert choose_precision(CPU, "auto", flags={"avx512_bf16"}) == (True, "auto: this CPU has native bf16")
    assert choose_precision(CPU, "auto", flags={"avx2"}) == (False, "auto: this CPU has no native bf16")
    assert choose_precision(CPU, "bf16", flags={"avx2"}) == (True, "asked for")
    assert choose_precision(CUDA, "fp32") == (False, "asked for")
    with pytest.raises(ValueError, match="auto|bf16|fp32"):
        choose_precision(CPU, "fp16")


def test_policy_compiles_on_cuda_only_unless_asked_and_says_what_it_uses():
    assert device_policy(CPU, "fp32", "auto").compile is False
    assert device_policy(CPU, "fp32", "on").compile is True
    assert device_policy(CPU, "bf16", "auto").compile is False  # measured: eager is the fastest there too
    assert device_policy(CUDA, "auto", "auto", flags=set()).compile is True
    assert device_policy(CUDA, "auto", "off", flags=set()).compile is False
    with pytest.raises(ValueError, match="compile"):
        device_policy(CPU, "fp32", "sometimes")
    policy = device_policy(CPU, "bf16", "off", channels_last=True)
    assert policy.input_dtype == torch.bfloat16
    text = policy.describe()
    for part in ("cpu", f"{torch.get_num_threads()} threads", "bf16 autocast", "channels-last", "eager"):
        assert part in text, text
    assert "float32" in device_policy(CPU, "fp32").describe()


def test_policy_prepares_the_model_and_autocasts_as_it_says():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(144, 2))
    inputs = torch.randn(2, 3, 8, 8)
    fast = device_policy(CPU, "bf16", "off", channels_last=True)
    prepared = fast.prepare(model)
    assert prepared[0].weight.is_contiguous(memory_format=torch.channels_last)
    with fast.autocast():
        assert prepared(inputs).dtype == torch.bfloat16
    plain = device_policy(CPU, "fp32", "off", channels_last=False)
    with plain.autocast():
        assert plain.prepare(torch.nn.Conv2d(3, 4, 3))(inputs).dtype == torch.float32


CPU_FLAG_SETS = {  # what /proc/cpuinfo lists, abridged, and what `auto` must make of it
    "x86 AVX2, no bf16": ("flags", "fpu sse4_2 avx avx2 fma", False),
    "x86 AVX-512 BF16": ("flags", "fpu avx2 avx512f avx512bw avx512_bf16", True),
    "x86 AMX": ("flags", "fpu avx2 avx512f amx_tile amx_int8 amx_bf16", True),
    "Arm BF16": ("Features", "fp asimd sve i8mm bf16", True),
    "Arm without BF16": ("Features", "fp asimd crc32", False),
    "none listed": ("flags", "", False),
}


@pytest.mark.reads_cpu_flags
@pytest.mark.parametrize("name", CPU_FLAG_SETS)
def test_auto_policy_for_each_cpu_flag_set(name, monkeypatch):
    """/proc/cpuinfo faked: precision auto is bf16 where the CPU multiplies bf16 natively, float32
    elsewhere; compile auto runs the step eagerly on either, as measured."""
    field, flags, native = CPU_FLAG_SETS[name]
    monkeypatch.setattr(device_module, "_cpuinfo_field", lambda names: flags if field in names else "")
    device_module.cpu_flags.cache_clear()
    try:
        policy = device_policy(CPU)
    finally:
        device_module.cpu_flags.cache_clear()
    assert (policy.bf16, policy.compile, policy.whole_step) == (native, False, False)
    assert policy.why == f"auto: this CPU has {'native' if native else 'no native'} bf16"
    assert policy.compile_mode == "whole-step"  # what compiling would compile here: --training.compile on
    assert policy.input_dtype == (torch.bfloat16 if native else torch.float32)


def test_compile_mode_auto_is_the_fastest_measured_and_falls_back_saying_why(monkeypatch, capsys):
    default = policy_from_config(defaults()["training"], CUDA)  # the default command's step on a GPU
    assert (default.compile, default.compile_mode, default.bf16) == (True, "cudagraph", True)
    assert device_policy(CUDA, "bf16", "auto").compile_mode == "cudagraph"
    assert device_policy(CPU, "fp32", "on").compile_mode == "whole-step"
    assert capsys.readouterr().err == ""  # chosen, not replaced
    monkeypatch.setattr(device_module, "whole_step_obstacle", lambda: "this torch cannot")
    chosen = device_policy(CUDA, "bf16", "auto")
    assert (chosen.compile, chosen.whole_step) == (False, False)  # eager: faster than the forward compiled
    assert "the whole step is not compiled (this torch cannot): the step runs eagerly" in capsys.readouterr().err
    asked = device_policy(CPU, "fp32", "on", compile_mode="whole-step")
    assert (asked.compile, asked.compile_mode) == (True, "default")
    assert "compile mode whole-step falls back to default: this torch cannot" in capsys.readouterr().err
    device_policy(CPU, "fp32", "on", compile_mode="whole-step", tell=False)
    assert capsys.readouterr().err == ""


def test_auto_cannot_read_the_cpu_in_a_test_that_did_not_ask_to():
    """tests/conftest.py: a test that trains with precision auto fails on every machine alike."""
    with pytest.raises(AssertionError, match="set --training.precision"):
        device_policy(CPU)


@pytest.mark.reads_cpu_flags
def test_cpu_flags_come_from_the_os(monkeypatch):
    monkeypatch.setattr(device_module, "_cpuinfo_field", lambda names: "fpu avx2 avx512_bf16")
    device_module.cpu_flags.cache_clear()
    try:
        assert "avx512_bf16" in device_module.cpu_flags()
        assert device_policy(CPU).bf16 is True
    finally:
        device_module.cpu_flags.cache_clear()


THREADS_SCRIPT = """
import importlib, pkgutil, sys, tempfile, os
import numpy as np
import torch
torch.set_num_threads(2)
sys.path.insert(0, {root!r})
import speedrun
for module in pkgutil.walk_packages(speedrun.__path__, "speedrun."):
    importlib.import_module(module.name)
import write_beton
from speedrun.data.betons import load_beton
folder = tempfile.mkdtemp()
rng = np.random.default_rng(0)
images = rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
labels = rng.integers(0, 10, 20)
write_beton.write_beton(os.path.join(folder, "t.beton"), images, labels, {{"source": "test"}}, num_workers=1)
assert len(load_beton(os.path.join(folder, "t.beton"), "cpu")[1]) == 20
print(torch.get_num_threads())
"""


def test_importing_and_using_ffcv_keeps_torchs_thread_count():
    # a fresh process: ffcv sets the count only on its first import
    done = subprocess.run(
        [sys.executable, "-c", THREADS_SCRIPT.format(root=str(ROOT))],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-1] == "2"
