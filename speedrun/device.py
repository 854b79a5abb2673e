"""The device: which one to use, its name in results, waiting for it, and its autocast."""
import contextlib
import os
import platform

import torch


def pick_device(name="auto"):
    """'auto' (or None) = CUDA when present; asking for CUDA without one is an error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda was asked for, but torch sees no CUDA device")
    if name in ("auto", None):
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def device_name(device):
    """The GPU's name, or 'cpu <model> <N> cores', so that results from different machines stay apart."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    return f"cpu {model} {os.cpu_count()} cores"


def synchronize(device):
    """Wait for the device's queued work, so that a host clock reading means something."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def autocast_for(device):
    """A context factory: bf16 autocast on CUDA, nothing on the CPU (which trains in float32)."""
    if device.type == "cuda":
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext
