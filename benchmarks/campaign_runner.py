"""Running the campaign's commands: each in a process group of its own, under its step's time budget,
its output kept; one record per step (passed, failed with the output's last lines, or skipped)."""

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from campaign_plan import MIN_STEP_S, ROOT, SIZES, STACKS_WAIT_S, TAIL_LINES
from campaign_report import now, step_note

from speedrun.system.stacks import STACKS_SIGNAL


class Skip(Exception):
    """A step or part that cannot run here; the message says why."""


class StepError(Exception):
    """A failed step or part: the message, the last lines of the output behind it, what was measured."""

    def __init__(self, message, tail="", result=None):
        super().__init__(message)
        self.tail, self.result = tail, result


class StepTimeout(StepError):
    pass


class BudgetSpent(Skip):
    """No time left in the step for the next command: that part is skipped, the step has failed."""


@dataclass
class Context:
    """What the steps share: sizes, folders, the children's environment, the current step's deadline."""

    size_name: str
    work: Path
    source: str
    env: dict
    python: str = sys.executable
    step: str = ""
    deadline: float = float("inf")
    budget: float = None  # the current step's, in seconds
    campaign_deadline: float = float("inf")
    overrides: dict = field(default_factory=dict)
    cache: dict = field(default_factory=dict)

    @property
    def size(self):
        return {**SIZES[self.size_name], **self.overrides}

    @property
    def folder(self):
        return self.work / self.step

    @property
    def betons(self):
        return self.work / "data" / "train.beton", self.work / "data" / "test.beton"


@dataclass
class Done:
    returncode: int
    output: str
    command: str
    wall_s: float = None  # from the process's start to its end, on the campaign's clock


def display(ctx, argv):
    """A command as a reader would type it: `python`, paths relative to the work folder."""
    words = ["python" if word == ctx.python else str(word).replace(str(ctx.work), "WORK") for word in argv]
    return shlex.join(words)


def tail(text, lines=TAIL_LINES):
    return "\n".join(text.rstrip().splitlines()[-lines:])


def start(ctx, label, argv, env=None):
    """Start `argv` in a process group of its own (so a timeout kills all it started), output to
    <step folder>/<label>.log."""
    if time.monotonic() >= ctx.deadline:
        raise BudgetSpent(f"{label}: {deadline_name(ctx)} was spent before it could start")
    log = ctx.folder / f"{label}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as handle:
        process = subprocess.Popen(
            [str(word) for word in argv],
            cwd=ROOT,
            env={**ctx.env, **(env or {})},
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    process.label, process.log, process.command = label, log, display(ctx, argv)
    process.started = time.monotonic()
    return process


def deadline_name(ctx):
    """What the step's deadline is: its own budget, or the campaign's --total-s when that ends first."""
    if ctx.deadline >= ctx.campaign_deadline:
        return "the campaign's --total-s"
    return f"the step's budget ({'?' if ctx.budget is None else f'{ctx.budget:g}'} s)"


def kill(process, dump_stacks=False):
    """Kill `process` and all it started; with `dump_stacks`, first ask it for its threads' stacks (the
    trainer and the benchmark print them on SIGUSR1), so that the log says where it was stuck. Returns
    whether its log grew meanwhile: a process without the handler dies of the signal instead, and on a
    GPU machine two runs outlived it without printing anything."""
    printed = False
    try:
        if dump_stacks and STACKS_SIGNAL is not None:
            size = process.log.stat().st_size
            os.kill(process.pid, STACKS_SIGNAL)
            try:
                process.wait(timeout=STACKS_WAIT_S)
            except subprocess.TimeoutExpired:
                printed = process.log.stat().st_size > size
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()
    return printed


def finish(ctx, process, check=True, limit_s=None):
    """Wait for `process` until the step's deadline, or `limit_s` after now when that comes first; raise
    on a timeout, or on failure with `check`."""
    own_limit = limit_s is not None and time.monotonic() + limit_s < ctx.deadline
    wait_s = limit_s if own_limit else ctx.deadline - time.monotonic()
    try:
        returncode = process.wait(timeout=max(0.0, wait_s))
    except subprocess.TimeoutExpired:
        stacks = kill(process, dump_stacks=True)
        what = f"its own limit ({limit_s:g} s)" if own_limit else f"the end of {deadline_name(ctx)}"
        where = f" (its threads' stacks at that moment end {process.log.name})" if stacks else ""
        raise StepTimeout(
            f"timeout: {process.label} was still running at {what} and was killed{where}",
            tail(process.log.read_text(errors="replace")),
        ) from None
    output = process.log.read_text(errors="replace")
    if check and returncode:
        raise StepError(f"{process.label} exited with status {returncode}: {process.command}", tail(output))
    return Done(returncode, output, process.command, time.monotonic() - process.started)


def run(ctx, label, argv, env=None, check=True, limit_s=None):
    return finish(ctx, start(ctx, label, argv, env), check, limit_s)


def run_parts(parts, results=None):
    """Run each named part in order, recording its result, skip or failure into `results` as it goes (a
    part may read those before it), so that one failing part leaves the others their turn; returns
    (results, names of the failed parts)."""
    results, failed = {} if results is None else results, []
    for name, part in parts.items():
        try:
            results[name] = {"status": "passed", **part()}
        except Skip as why:
            results[name] = {"status": "skipped", "reason": str(why)}
        except StepError as error:
            results[name] = {"status": "failed", "error": str(error), "tail": error.tail, **(error.result or {})}
            failed.append(name)
    return results, failed


def fail_if_any(failed, result, what):
    if failed:
        raise StepError(f"{what} failed: {', '.join(failed)}", result=result)
    return result


def nvidia_smi(ctx, fields):
    """`nvidia-smi --query-gpu` as a dict, or a note saying why there is none."""
    if not shutil.which("nvidia-smi"):
        return {"note": "nvidia-smi not found (no NVIDIA driver here)"}
    done = run(ctx, "nvidia-smi", ["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader"], check=False)
    values = [value.strip() for value in done.output.splitlines()[0].split(",")] if done.output else []
    return dict(zip(fields.split(","), values)) if not done.returncode else {"note": tail(done.output, 3)}


def run_step(ctx, name, function, budget):
    """Run one step under its budget; its record: status passed / failed (error, last lines) / skipped."""
    ctx.step = name
    if name != "data":  # a step's runs start afresh; the betons are kept for the next part
        shutil.rmtree(ctx.folder, ignore_errors=True)
    ctx.folder.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    ctx.budget, ctx.deadline = budget, min(started + budget, ctx.campaign_deadline)
    what = " ".join((function.__doc__ or "").strip().split("\n\n")[0].split())
    record = {"name": name, "what": what, "budget_s": budget}
    try:
        if ctx.campaign_deadline - started < MIN_STEP_S:  # a short budget of its own is no reason to skip
            raise Skip(f"the campaign's --total-s left {max(0, ctx.campaign_deadline - started):.0f} s for it")
        record.update(status="passed", result=function(ctx))
    except BudgetSpent as why:
        record.update(status="failed", error=f"timeout: {why}", tail="")
    except Skip as why:
        record.update(status="skipped", reason=str(why))
    except StepError as error:
        record.update(status="failed", error=str(error), tail=error.tail, result=error.result)
    except Exception as error:  # a bug in a step must not cost the others their turn
        record.update(status="failed", error=f"{type(error).__name__}: {error}", tail=tail(traceback.format_exc()))
    record["seconds"] = round(time.monotonic() - started, 2)
    return record


def run_steps(ctx, plan, campaign, after_each):
    """Each (name, function, budget) of `plan` in turn, whatever became of the one before; each record
    goes into `campaign`, then `after_each` writes the answer so far."""
    for name, function, budget in plan:
        print(f"campaign: {name} (budget {budget} s)", file=sys.stderr, flush=True)
        at_start = clocks(ctx)
        record = run_step(ctx, name, function, budget)
        record.update(device=campaign["device"], clocks_at_start=at_start)
        campaign["steps"].append(record)
        print(
            f"campaign: {name} {record['status']} in {record['seconds']:.0f} s {step_note(record)}",
            file=sys.stderr,
            flush=True,
        )
        campaign["finished"] = now()
        after_each()
    return campaign


def probe_header(ctx):
    """Device, versions and cuDNN of this machine, read by a child process (the campaign never imports
    torch, so a broken device cannot take the bookkeeping down with it)."""
    code = (
        "import json, torch; from speedrun.system.device import device_name, pick_device; "
        "from speedrun.system.runlog import versions; print(json.dumps({'device': device_name(pick_device('auto')), "
        "'versions': versions(), 'cudnn': torch.backends.cudnn.version() if torch.cuda.is_available() else None}))"
    )
    ctx.step, ctx.deadline = "probe", time.monotonic() + 120
    try:
        return json.loads(run(ctx, "probe", [ctx.python, "-c", code]).output.splitlines()[-1])
    except (StepError, ValueError, IndexError) as error:
        return {"device": "unknown", "versions": {}, "probe_error": str(error)}


def clocks(ctx):
    """The GPU's clocks and temperature now, to show every step ran at the same clocks."""
    if not shutil.which("nvidia-smi"):
        return None
    ctx.step, ctx.deadline = "clocks", time.monotonic() + 10
    try:
        return nvidia_smi(ctx, "clocks.sm,clocks.mem,temperature.gpu,power.draw")
    except StepError:
        return None
