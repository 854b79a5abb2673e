"""The device and how to compute on it: one policy for training, the LR test, evaluation, predict and
the benchmarks.

    policy = device_policy(pick_device("auto"), precision="auto", compile="auto")
    model = policy.prepare(model)            # channels-last when the policy says so
    with policy.autocast(): ...              # bf16 autocast, or nothing

Precision `auto` is bf16 autocast on CUDA and on CPUs that multiply bf16 in hardware (x86 with
AVX-512 BF16 or AMX, Arm with the BF16 extension, read from the CPU's flags in /proc/cpuinfo), and
float32 elsewhere: a CPU without them emulates bf16 and runs it many times slower than float32.
Channels-last is on by default everywhere (measured faster on CUDA and on the CPU), and on CUDA cuDNN
autotunes its convolutions (`torch.backends.cudnn.benchmark`).

`compile auto` compiles where compiling was measured to pay: on CUDA only. On a CPU, with or without
native bf16, the eager step was as fast as any compiled one (the benchmark's `step_modes` stage times
them side by side in one process; benchmarks/README.md has the figures).

What is compiled, when compiling (`compile_mode`):
    auto          the fastest measured: cudagraph on CUDA, whole-step elsewhere; where this torch cannot
                  compile the whole step, eager (faster than `default` on CUDA), with the reason printed
    default       the net's forward; loss, backward and optimizer run eagerly
    max-autotune  the same, with inductor's kernel autotuning (no CUDA graphs, to compare the kernels alone)
    whole-step    the LR read, forward, loss, backward, optimizer update and weight average as one graph
    cudagraph     the whole step, replayed as a CUDA graph from static buffers (CUDA only; whole-step
                  elsewhere)
"""

import contextlib
import dataclasses
import functools
import os
import platform
import sys
import time
from dataclasses import dataclass

import torch

PRECISIONS = ("auto", "bf16", "fp32")
COMPILE_CHOICES = ("auto", "on", "off")
COMPILE_MODES = ("auto", "default", "max-autotune", "whole-step", "cudagraph")
WHOLE_STEP_MODES = ("whole-step", "cudagraph")
COMPILE_BACKEND = "inductor"  # what torch.compile generates code with; another backend takes no mode
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


def timed(fn, device, events=False):
    """(fn(), seconds). The host's clock between two synchronisations of `device`, or with `events`
    (CUDA only) CUDA events around the call: the device's time, without a host round trip in it."""
    if events:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        result = fn()
        end.record()
        end.synchronize()
        return result, start.elapsed_time(end) / 1e3
    synchronize(device)
    started = time.perf_counter()
    result = fn()
    synchronize(device)
    return result, time.perf_counter() - started


@contextlib.contextmanager
def torch_threads(count=None):
    """Run with `count` torch threads (None: as they are), then put the count back, whatever the body
    set it to (importing ffcv sets it to one)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(count or saved)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


@dataclass(frozen=True)
class Policy:
    """How the net computes on one device: precision, memory format, compilation, CPU threads."""

    device: torch.device
    bf16: bool
    channels_last: bool
    compile: bool
    why: str  # how the precision was chosen
    compile_mode: str = "default"  # what is compiled (see the module docstring)

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

    @property
    def whole_step(self):
        """Whether the train step is compiled as one graph (else the net's forward is, if anything)."""
        return self.compile and self.compile_mode in WHOLE_STEP_MODES

    def compiled(self, module):
        """The module with its forward compiled (eval nets, and the train net outside whole-step modes);
        a module already compiled, or a wrapper (DDP) around one, is returned as it is."""
        if not self.compile or _is_compiled(module) or _is_compiled(getattr(module, "module", None)):
            return module
        return _compile(module, "max-autotune-no-cudagraphs" if self.compile_mode == "max-autotune" else None)

    def compiled_step(self, step):
        """The whole train step compiled as one graph; autograd ops are traced into it. Static shapes: the
        steps of a resolution curriculum, one per image side, share their code, and dynamo would make the
        side a symbol from the second one on; static, each side is a graph of its own."""
        torch._dynamo.config.trace_autograd_ops = True
        return _compile(step, "reduce-overhead" if self.compile_mode == "cudagraph" else None, dynamic=False)

    def mark_static(self, tensors):
        """Tell torch.compile that `tensors` (a whole step's inputs and the state it updates in place)
        keep their address: CUDA graphs then read and write them where they are, instead of copying
        them into the graph's own buffers on every replay or skipping the graph for an input it
        mutates. Guarded: a tensor that moved anyway would recompile, not be read from stale memory."""
        for tensor in tensors:
            torch._dynamo.mark_static_address(tensor)

    def fall_back(self, reason, tell=True):
        """This policy with compile mode default; `tell` says why on stderr."""
        say(tell, f"speedrun: compile mode {self.compile_mode} falls back to default: {reason}")
        return dataclasses.replace(self, compile_mode="default")

    def describe(self):
        threads = f", {torch.get_num_threads()} threads" if self.device.type == "cpu" else ""
        return (
            f"{device_name(self.device)}{threads}: {'bf16 autocast' if self.bf16 else 'float32'} "
            f"({self.why}), {'channels-last' if self.channels_last else 'NCHW'}, "
            f"{f'torch.compile {self.compile_mode}' if self.compile else 'eager'}"
        )


def _is_compiled(module):
    return isinstance(module, torch._dynamo.eval_frame.OptimizedModule)


def _compile(fn, mode, dynamic=None):
    """torch.compile with the backend of this module; a mode only where the backend takes one."""
    if COMPILE_BACKEND != "inductor":
        mode = None
    return torch.compile(fn, backend=COMPILE_BACKEND, mode=mode, dynamic=dynamic)


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


def compiles_by_default(device):
    """What `compile auto` decides: compile on CUDA only. On a CPU the eager step was the fastest,
    in native bf16 too: the seed net's step at batch 512 on a 2-core Xeon with AMX ran eagerly in 1.94 s,
    with its forward compiled in 1.99 s, compiled whole in 2.07 s (benchmarks/results/
    cpu-intel-xeon-2-cores-amx-step-modes-bf16.json), and compiling costs its own seconds."""
    return device.type == "cuda"


def device_policy(
    device, precision="auto", compile="auto", channels_last=True, flags=None, compile_mode="auto", tell=True
):
    """The Policy for `device` from the training options of the same names; `tell` prints on stderr
    why a mode asked for, or chosen by `auto`, was replaced."""
    device = torch.device(device)
    if compile not in COMPILE_CHOICES:
        raise ValueError(f"compile must be one of {'|'.join(COMPILE_CHOICES)}, got {compile!r}")
    if compile_mode not in COMPILE_MODES:
        raise ValueError(f"compile_mode must be one of {'|'.join(COMPILE_MODES)}, got {compile_mode!r}")
    bf16, why = choose_precision(device, precision, flags)
    compiling = compile == "on" or (compile == "auto" and compiles_by_default(device))
    chosen = compile_mode == "auto"
    if chosen:
        compile_mode = "cudagraph" if device.type == "cuda" else "whole-step"
    policy = Policy(device, bf16, bool(channels_last), compiling, why, compile_mode)
    if compiling and compile_mode == "cudagraph" and device.type != "cuda":
        say(
            tell,
            "speedrun: compile mode cudagraph needs a CUDA device: compiling the whole step without "
            "CUDA graphs (whole-step)",
        )
        policy = dataclasses.replace(policy, compile_mode="whole-step")
    obstacle = whole_step_obstacle() if policy.whole_step else None
    if obstacle and chosen:  # the next fastest measured: eager (the forward alone compiled was slower)
        say(tell, f"speedrun: the whole step is not compiled ({obstacle}): the step runs eagerly")
        policy = dataclasses.replace(policy, compile=False, compile_mode="default")
    elif obstacle:
        policy = policy.fall_back(obstacle, tell)
    return policy


def say(tell, message):
    if tell:
        print(message, file=sys.stderr)


def whole_step_obstacle():
    """Why this torch cannot compile a train step as one graph, or None. (Under torchrun the step
    averages its own gradients: distributed.averaging.)"""
    if not hasattr(torch._dynamo.config, "trace_autograd_ops"):
        return f"torch {torch.__version__} cannot trace backward into a graph"
    return None


def policy_from_config(training, device, tell=True):
    """The Policy a run's `training` section asks for on `device`."""
    return device_policy(
        device,
        training["precision"],
        training["compile"],
        training["channels_last"],
        compile_mode=training.get("compile_mode", "auto"),
        tell=tell,
    )
