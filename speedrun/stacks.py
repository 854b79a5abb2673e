"""Where a run that seems stuck is: `kill -USR1 <pid>` prints every thread's Python stack to stderr and
the process goes on. It tells a long compile, an autotuning search and a wait on another rank apart.
No torch here: the GPU campaign, which never touches the device, sends the signal."""
import faulthandler
import signal

STACKS_SIGNAL = getattr(signal, "SIGUSR1", None)  # None on Windows


def dump_stacks_on_signal():
    if STACKS_SIGNAL is not None:
        faulthandler.register(STACKS_SIGNAL, all_threads=True)
