"""The device and how to compute on it: one policy for training, the LR test, evaluation, predict and
the benchmarks.

    policy = device_policy(pick_device("auto"), precision="auto", compile="auto")
    model = policy.prepare(model)            # channels-last when the policy says so
    with policy.autocast(): ...              # bf16 autocast, or nothing

Precision `auto` is bf16 autocast on CUDA and on CPUs that multiply bf16 in hardware (x86 with
AVX-512 BF16 or AMX, Arm with the BF16 extension, read from the CPU's flags in /proc/cpuinfo), and
float32 elsewhere: a CPU without them emulates bf16 and runs it many times slower than float32.
Channels-last is on by default everywhere (measured faster on CUDA and on the CPU), and on CUDA cuDNN
autotunes its convolutions (`torch.backends.cudnn.benchmark`). `compile auto`
compiles on CUDA only: on the CPU, eager channels-last already runs at the float32 matrix-product
ceiling and compiling costs minutes (benchmarks/README.md has the figures).
"""
import contextlib
import functools
import os
import platform
from dataclasses import dataclass

import torch

PRECISIONS = ("auto", "bf16", "fp32")
COMPILE_CHOICES = ("auto", "on", "off")
BF16_CPU_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}  # x86 AVX-512 BF16 / AMX; Arm FEAT_BF16


def pick_device(name="auto"):
    """'auto' (or None) = CUDA when present; asking for CUDA without one is an error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda was asked for, but torch sees no CUDA device")
    if name in ("auto", None):
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def _cpuinfo_field(names):
    """The first value of any of `names` in /proc/cpuinfo ('' where there is none)."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key.strip() in names:
                return value.strip()
    return ""


@functools.cache
def cpu_flags():
    """The CPU's feature flags (x86 'flags', Arm 'Features'), empty where the OS does not list them."""
    return frozenset(_cpuinfo_field({"flags", "Features"}).split())


def has_native_bf16(flags):
    return bool(BF16_CPU_FLAGS & set(flags))


def device_name(device):
    """The GPU's name, or 'cpu <model> <N> cores', so that results from different machines stay apart."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = _cpuinfo_field({"model name"}) or platform.processor()
    return f"cpu {model} {os.cpu_count()} cores"


def synchronize(device):
    """Wait for the device's queued work, so that a host clock reading means something."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class Policy:
    """How the net computes on one device: precision, memory format, compilation, CPU threads."""
    device: torch.device
    bf16: bool
    channels_last: bool
    compile: bool
    why: str  # how the precision was chosen

    @property
    def input_dtype(self):
        """The dtype the loader writes batches in: bf16 halves the bytes when the net computes in it."""
        return torch.bfloat16 if self.bf16 else torch.float32

    def autocast(self):
        if self.bf16:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def prepare(self, model):
        """The model on the device, in the policy's memory format. On CUDA this also turns on cuDNN's
        autotuning: the loop's shapes are fixed, so each convolution's fastest algorithm is found once,
        and the reference trainer it is timed against runs with it too."""
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def compiled(self, module):
        return torch.compile(module) if self.compile else module

    def describe(self):
        threads = f", {torch.get_num_threads()} threads" if self.device.type == "cpu" else ""
        return (f"{device_name(self.device)}{threads}: {'bf16 autocast' if self.bf16 else 'float32'} "
                f"({self.why}), {'channels-last' if self.channels_last else 'NCHW'}, "
                f"{'torch.compile' if self.compile else 'eager'}")


def choose_precision(device, precision="auto", flags=None):
    """(bf16?, why) for `precision` auto|bf16|fp32 on `device`; `flags` defaults to this CPU's."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {'|'.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision == "bf16", "asked for"
    if device.type == "cuda":
        return True, "auto: CUDA"
    if has_native_bf16(cpu_flags() if flags is None else flags):
        return True, "auto: this CPU has native bf16"
    return False, "auto: this CPU has no native bf16"


def device_policy(device, precision="auto", compile="auto", channels_last=True, flags=None):
    """The Policy for `device` from the training options of the same names."""
    device = torch.device(device)
    if compile not in COMPILE_CHOICES:
        raise ValueError(f"compile must be one of {'|'.join(COMPILE_CHOICES)}, got {compile!r}")
    bf16, why = choose_precision(device, precision, flags)
    compiling = compile == "on" or (compile == "auto" and device.type == "cuda")
    return Policy(device, bf16, bool(channels_last), compiling, why)


def policy_from_config(training, device):
    """The Policy a run's `training` section asks for on `device`."""
    return device_policy(device, training["precision"], training["compile"], training["channels_last"])
