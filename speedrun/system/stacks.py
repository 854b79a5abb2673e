"""Where a run that seems stuck is: `kill -USR1 <pid>` prints every thread's Python stack to stderr and
the process goes on. It tells a long compile, an autotuning search and a wait on another rank apart.
No torch here: the GPU campaign, which never touches the device, sends the signal."""

import faulthandler
import io
import signal
import sys

STACKS_SIGNAL = getattr(signal, "SIGUSR1", None)  # None on Windows


def dump_stacks_on_signal():
    """Register the dump on the process's own stderr: a replaced sys.stderr (a notebook's, pytest's
    capture) may have no file descriptor, and the dump writes to one from the signal handler."""
    if STACKS_SIGNAL is None:
        return
    for stream in (sys.stderr, sys.__stderr__):
        try:
            faulthandler.register(STACKS_SIGNAL, file=stream, all_threads=True)
            return
        except (AttributeError, ValueError, io.UnsupportedOperation):  # no descriptor behind this stream
            continue
