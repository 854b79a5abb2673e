"""Where a run's wall time goes: every second from its start charged to one part, so that the parts add
up to the whole. A command's first run starts with its process (interpreter and imports included); a
later run of the same process (a seed sweep's next seed) when it is called.

    clock = Clock(process_start())
    ...                                  # imports, the data loaded
    clock.charge("build")                # the seconds since the last charge go to the build
    ...                                  # the run's config, folder and fresh net
    clock.charge("startup")

'build' is what a process does once for all its runs (the interpreter and imports, the data read into
memory, the step built), so that a seed sweep's later runs have none of it; 'startup' and 'range_test'
are each run's own preparation; 'compile' the step's warm-up (compiling or capturing).
"""

import os
import time

PARTS = ("build", "startup", "range_test", "compile", "training", "evaluation", "checkpoints", "plots")
LABELS = {"range_test": "range test"}


def process_start():
    """This process's start on the perf_counter clock: from /proc (Linux: the kernel's start time of the
    process, in clock ticks after boot), else now."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rpartition(")")[2].split()[19])  # field 22, counted after the command name
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        age = uptime - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        age = 0.0
    return time.perf_counter() - max(age, 0.0)


class Clock:
    """Seconds charged to each of PARTS since `started` (a perf_counter reading)."""

    def __init__(self, started=None):
        self.started = self.mark = time.perf_counter() if started is None else started
        self.seconds = dict.fromkeys(PARTS, 0.0)

    def charge(self, part):
        """The seconds since the last charge (or the start) go to `part`."""
        now = time.perf_counter()
        self.seconds[part] += now - self.mark
        self.mark = now

    def table(self):
        """Every part's seconds and their total, the wall time from the start to the last charge."""
        return {
            **{part: round(seconds, 3) for part, seconds in self.seconds.items()},
            "total": round(self.mark - self.started, 3),
        }

    def line(self):
        table = self.table()
        parts = " + ".join(f"{LABELS.get(part, part)} {table[part]:.1f}" for part in PARTS)
        return f"speedrun: seconds: total {table['total']:.1f} = {parts}"
