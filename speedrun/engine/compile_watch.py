"""What the compiler really did for a run's step, from torch's own counters, so that a run reports the
mode that ran rather than the one asked for.

    watch = CompileWatch()             # before the warm-up
    ...                                # compile (or capture) the step on warm-up batches
    report = watch.stop()              # CUDA-graph skips and their reasons, graphs, graph breaks
    ran = mode_that_ran(policy, report)

Inductor skips CUDA graphs for a graph it cannot replay (an input it mutates that is not static, a CPU
operation, ...) and then runs it as plain whole-step inductor: it bumps counters["inductor"]
["cudagraph_skips"] and logs the reason on its `cudagraphs` logger, which is where the reasons are read.
Anything dynamo compiles after the warm-up is a recompile the timed epochs pay for (`frames_compiled`).
"""

import logging

from torch._dynamo.utils import counters
from torch._inductor import cudagraph_utils

SKIP_PREFIX = "skipping cudagraphs"


def frames_compiled():
    """The frames dynamo has compiled in this process so far."""
    return counters["frames"]["total"]


def read_counters():
    return {
        "cudagraph_skips": counters["inductor"]["cudagraph_skips"],
        "graph_breaks": sum(counters["graph_break"].values()),
        "graphs": counters["stats"]["unique_graphs"],
    }


class SkipReasons(logging.Handler):
    """The CUDA-graph skip messages inductor logs while attached."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.reasons = []

    def emit(self, record):
        message = record.getMessage()
        if message.startswith(SKIP_PREFIX):
            self.reasons.append(message.splitlines()[0])


class CompileWatch:
    """Counts what torch compiles, and why it skipped CUDA graphs, from its start to `stop`."""

    def __init__(self):
        self.start = read_counters()
        self.skips = SkipReasons()
        cudagraph_utils.cudagraphs_log.addHandler(self.skips)

    def stop(self):
        """{cudagraph_skips, cudagraph_skip_reasons, graphs, graph_breaks} since the start."""
        cudagraph_utils.cudagraphs_log.removeHandler(self.skips)
        now = read_counters()
        return {**{key: now[key] - self.start[key] for key in now}, "cudagraph_skip_reasons": self.skips.reasons}


NOTHING_COMPILED = {"cudagraph_skips": 0, "graph_breaks": 0, "graphs": 0, "cudagraph_skip_reasons": []}


def mode_that_ran(policy, report):
    """The compile mode a run's step really ran in: 'no' (eager), the policy's mode, or whole-step where
    CUDA graphs were asked for and inductor skipped them."""
    if not policy.compile:
        return "no"
    if policy.compile_mode == "cudagraph" and report.get("cudagraph_skips"):
        return "whole-step"
    return policy.compile_mode
