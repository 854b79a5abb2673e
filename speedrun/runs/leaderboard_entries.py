"""Leaderboard entries: statistics over seeds, the JSON-lines file, and the markdown table.

An entry is one recipe run over several seeds in one session (one process, one device):

    {"name", "kind": "ours" | "reference" | "published", "recipe", "config_hash", "device", "versions",
     "data": {"source", "train_sha256", "test_sha256"}, "seeds", "accuracies", "train_seconds",
     "prepare_seconds", "total_seconds", "warmup_seconds", "clock", "time_to_target", "target",
     "timestamp", "session"}

plus, on our entries of a session with a reference, "comparisons" ({reference name: `compare`'s result})
and, where a reference could not run, "reference_skipped" (why). Per seed, 'train_seconds' is the timed
training loop, 'prepare_seconds' the per-run preparation charged to it (None where it could not be told
apart from the once-per-process build), 'total_seconds' their sum (the honest total), 'warmup_seconds'
the untimed warm-up (compiling, or airbench's warm-up run); 'clock' says what each region covers.

Entries are appended as JSON lines to benchmarks/results/leaderboard.jsonl; `render_markdown` turns them
into a table where each of our entries is compared with the reference runs of the same session, and
published results (other people's numbers on their hardware) are listed below for orientation only.

Ours against a reference is a statistical statement (`compare`, `verdict`): the accuracy difference
(ours - reference, points) with its 95% confidence interval from Welch's t, and the time ratio (ours /
reference) as the ratio of geometric means with its 95% interval from Welch's t on the logarithms of the
seconds; with fewer than MIN_SEEDS seeds on either side there is no interval and no verdict.
"""

import datetime
import hashlib
import json
import math
import os
import statistics
import uuid

# Keys that change from run to run without changing what is trained, left out of the config hash.
HASH_IGNORED_KEYS = ("seed",)
HASH_IGNORED_SECTIONS = ("logging", "leaderboard")

# Seeds a side below which a 95% interval says too little to decide on, so none is given.
MIN_SEEDS = 5
CONFIDENCE = 0.95
# The accuracy a record may give up against the reference, in points (the record attempt's target).
ACCURACY_MARGIN = 0.05

VERDICT_RULE = (
    f"ahead when the accuracy difference's {CONFIDENCE:.0%} interval starts at or above "
    f"-{ACCURACY_MARGIN} points and the time ratio's lies wholly below 1; behind when the accuracy "
    f"interval lies wholly below -{ACCURACY_MARGIN} points or the time ratio's wholly above 1; "
    f"undecided otherwise. The time is the total (prepare + loop) where both sides recorded it for "
    f"{MIN_SEEDS} seeds or more, else the loop; no verdict with fewer than {MIN_SEEDS} seeds a side"
)

# Other people's reported results, on their hardware: shown for orientation, never used in ratios.
PUBLISHED = [
    dict(name="seed recipe, 24 epochs at ~34 s/epoch", device="not stated", accuracy=0.781, seconds=34 * 24),
    dict(name="Page ResNet-9, 24 epochs", device="V100", accuracy=0.94, seconds=79),
    dict(name="Page ResNet-9, 10 epochs + extra tricks", device="V100", accuracy=0.94, seconds=26),
    dict(name="ffcv CIFAR-10 example", device="A100", accuracy=0.93, seconds=36),
    dict(name="hlb-CIFAR10", device="A100", accuracy=0.94, seconds=6.3),
    dict(name="airbench94", device="A100", accuracy=0.9401, seconds=3.83),
    dict(name="airbench94_muon", device="A100", accuracy=0.9401, seconds=2.59),
    dict(name="airbench96", device="A100", accuracy=0.960, seconds=27.3),
]


# ---------------------------------------------------------------------------------------------------
# statistics


def seed_stats(values):
    """Mean, sample standard deviation (ddof=1; 0 for a single value), min, max and count."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("seed_stats needs at least one value")
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": std, "min": min(values), "max": max(values), "n": len(values)}


def time_to_target(history, target):
    """Training seconds at the first evaluation whose test accuracy is >= target, or None.

    No interpolation between evaluations: a result counts only once it has been measured.
    """
    for evaluation in history:
        if evaluation["test_acc"] >= target:
            return evaluation["train_seconds"]
    return None


def run_stats(accuracies, train_seconds, times_to_target, target):
    """Statistics over the seeds of one entry; time-to-target only over the seeds that reached it."""
    reached = [t for t in times_to_target if t is not None]
    return {
        "accuracy": seed_stats(accuracies),
        "train_seconds": seed_stats(train_seconds),
        "time_to_target": seed_stats(reached) if reached else None,
        "reached": len(reached),
        "runs": len(accuracies),
        "target": target,
    }


def summarise_runs(summaries, target):
    """Statistics over training summaries (one per seed): accuracy, train time, time to target."""
    return run_stats(
        [s["final_test_acc"] for s in summaries],
        [s["train_seconds"] for s in summaries],
        [time_to_target(s["history"], target) for s in summaries],
        target,
    )


def welch_interval(a, b, confidence=CONFIDENCE):
    """mean(a) - mean(b) and its confidence interval from Welch's t (unequal variances; the
    Welch-Satterthwaite degrees of freedom), by scipy.stats.ttest_ind(equal_var=False). Two samples
    without spread have a point for an interval."""
    from scipy import stats

    a, b = [float(v) for v in a], [float(v) for v in b]
    if min(len(a), len(b)) < 2:
        raise ValueError("Welch's interval needs two values a side at least")
    difference = statistics.fmean(a) - statistics.fmean(b)
    if statistics.variance(a) == 0 and statistics.variance(b) == 0:
        return {"difference": difference, "low": difference, "high": difference, "df": None}
    result = stats.ttest_ind(a, b, equal_var=False)
    interval = result.confidence_interval(confidence)
    return {"difference": difference, "low": float(interval.low), "high": float(interval.high), "df": float(result.df)}


def ratio_interval(a, b, confidence=CONFIDENCE):
    """The ratio of geometric means of a over b and its confidence interval: Welch's interval of the
    difference of the logarithms, exponentiated."""
    logs = welch_interval([math.log(v) for v in a], [math.log(v) for v in b], confidence)
    return {
        "ratio": math.exp(logs["difference"]),
        "low": math.exp(logs["low"]),
        "high": math.exp(logs["high"]),
        "df": logs["df"],
    }


def known(values):
    return [v for v in values or [] if v is not None]


def compare(ours, reference):
    """Ours against a reference entry: the accuracy difference (points) and the time ratios, loop and
    total, each with its 95% interval where both sides have MIN_SEEDS values or more, and the verdict."""
    times = {
        "loop": (ours["train_seconds"], reference["train_seconds"]),
        "total": (known(ours.get("total_seconds")), known(reference.get("total_seconds"))),
    }
    result = {
        "reference": reference["name"],
        "seeds": [len(ours["accuracies"]), len(reference["accuracies"])],
        "min_seeds": MIN_SEEDS,
        "confidence": CONFIDENCE,
        "accuracy_margin": ACCURACY_MARGIN,
    }
    ours_acc, ref_acc = [100 * v for v in ours["accuracies"]], [100 * v for v in reference["accuracies"]]
    enough = min(len(ours_acc), len(ref_acc)) >= MIN_SEEDS
    result["accuracy"] = (
        welch_interval(ours_acc, ref_acc)
        if enough
        else {"difference": statistics.fmean(ours_acc) - statistics.fmean(ref_acc)}
    )
    for name, (a, b) in times.items():
        if not (a and b):
            result[name] = None
        elif min(len(a), len(b)) >= MIN_SEEDS:
            result[name] = {**ratio_interval(a, b), "seeds": [len(a), len(b)]}
        else:
            result[name] = {
                "ratio": math.exp(statistics.fmean(map(math.log, a)) - statistics.fmean(map(math.log, b))),
                "seeds": [len(a), len(b)],
            }
    result["time_basis"] = "total" if result["total"] and "low" in result["total"] else "loop"
    result["verdict"], result["why"] = verdict(result)
    return result


def verdict(comparison):
    """('ahead' | 'behind' | 'undecided' | None, why): the rule of VERDICT_RULE; None with too few seeds."""
    accuracy, time = comparison["accuracy"], comparison[comparison["time_basis"]]
    if "low" not in accuracy or not time or "low" not in time:
        ours, theirs = comparison["seeds"]
        return None, f"too few seeds for a {CONFIDENCE:.0%} interval ({ours} and {theirs}; {MIN_SEEDS} a side needed)"
    basis = comparison["time_basis"]
    acc_text = f"accuracy interval {accuracy['low']:+.2f} to {accuracy['high']:+.2f} points"
    time_text = f"{basis} time ratio interval {time['low']:.2f}–{time['high']:.2f}×"
    if accuracy["high"] < -ACCURACY_MARGIN:
        return "behind", f"less accurate: the {acc_text} lies below -{ACCURACY_MARGIN}"
    if time["low"] > 1:
        return "behind", f"slower: the {time_text} lies above 1"
    if accuracy["low"] >= -ACCURACY_MARGIN and time["high"] < 1:
        return "ahead", (
            f"as accurate (the {acc_text} starts at or above -{ACCURACY_MARGIN}) and faster "
            f"(the {time_text} lies below 1)"
        )
    doubts = [f"the {acc_text} reaches below -{ACCURACY_MARGIN}"] if accuracy["low"] < -ACCURACY_MARGIN else []
    doubts += [f"the {time_text} holds 1"] if time["high"] >= 1 else []
    return "undecided", " and ".join(doubts)


# ---------------------------------------------------------------------------------------------------
# entries and the JSON-lines file


def config_hash(config):
    """First 12 hex digits of the sha256 of the canonical JSON of `config`, without seed/logging keys."""

    def strip(tree, top):
        return {
            key: strip(value, False) if isinstance(value, dict) else value
            for key, value in tree.items()
            if key not in HASH_IGNORED_KEYS and not (top and key in HASH_IGNORED_SECTIONS)
        }

    canonical = json.dumps(strip(config, True), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def new_session():
    """An id shared by every entry of one invocation: same process, same device, same data."""
    return datetime.datetime.now().strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


def data_identity(data):
    """Where the data came from and checksums of the betons trained on (their JSON sidecars)."""
    train, test = data.get("train_meta") or {}, data.get("test_meta") or {}
    return {
        "source": train.get("source"),
        "train_sha256": train.get("beton_sha256"),
        "test_sha256": test.get("beton_sha256"),
    }


def make_entry(summaries, *, name, kind, target, session, recipe=None, clock=None):
    """One leaderboard entry from the training summaries of several seeds of the same config; `clock`
    says what its regions (prepare, loop) cover."""
    first = summaries[0]
    return {
        "name": name,
        "kind": kind,
        "recipe": recipe or first.get("recipe") or name,
        "config_hash": config_hash(first["config"]),
        "device": first["device"],
        "versions": first["versions"],
        "data": data_identity(first.get("data") or {}),
        "seeds": [s["seed"] for s in summaries],
        "accuracies": [s["final_test_acc"] for s in summaries],
        "train_seconds": [s["train_seconds"] for s in summaries],
        "prepare_seconds": [s.get("prepare_seconds") for s in summaries],
        "total_seconds": [s.get("total_seconds") for s in summaries],
        "warmup_seconds": [s.get("compile_seconds") for s in summaries],
        "clock": clock,
        "time_to_target": [time_to_target(s["history"], target) for s in summaries],
        "target": target,
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "session": session,
    }


def published_entries():
    """The published anchors as entries: one result each, 'time to target' = time to their accuracy."""
    return [
        {
            "name": p["name"],
            "kind": "published",
            "device": p["device"],
            "seeds": [],
            "accuracies": [p["accuracy"]],
            "train_seconds": [p["seconds"]],
            "time_to_target": [p["seconds"]],
            "target": p["accuracy"],
        }
        for p in PUBLISHED
    ]


def append_entry(path, entry):
    """Append one entry as a single JSON line (one write call, so concurrent appends do not interleave)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    line = json.dumps(entry, sort_keys=True) + "\n"
    with open(path, "a") as f:
        f.write(line)


def read_entries(path):
    """Every entry of a leaderboard file; a line that is not a JSON object is an error naming it."""
    entries = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}, line {number}: not valid JSON ({error.msg})") from None
            if not isinstance(entry, dict):
                raise ValueError(f"{path}, line {number}: expected a JSON object, got {type(entry).__name__}")
            entries.append(entry)
    return entries


# ---------------------------------------------------------------------------------------------------
# the markdown table

COLUMNS = [
    "name",
    "kind",
    "device",
    "seeds",
    "test acc (mean ± std)",
    "min–max",
    "loop time (mean)",
    "total time (mean)",
    "time to target",
    "time ours/ref",
    "acc ours−ref (points)",
]


def entry_stats(entry):
    return run_stats(entry["accuracies"], entry["train_seconds"], entry["time_to_target"], entry["target"])


def format_time_to_target(stats, published=False):
    target = f"{100 * stats['target']:g}%"
    if published:
        return f"{stats['time_to_target']['mean']:.2f} s to {target}"
    count = f"{stats['reached']}/{stats['runs']}"
    if stats["time_to_target"] is None:
        return f"not reached ({count} to {target})"
    return f"{stats['time_to_target']['mean']:.2f} s ({count} to {target})"


def format_total(entry):
    """The mean honest total (prepare + loop), and over how many seeds where some have none."""
    totals = known(entry.get("total_seconds"))
    if not totals:
        return "—"
    shown, runs = f"{statistics.fmean(totals):.2f} s", len(entry["accuracies"])
    return shown if len(totals) == runs else f"{shown} ({len(totals)} of {runs} seeds)"


def same_session_references(entry, entries):
    return [ref for ref in entries if ref["kind"] == "reference" and ref.get("session") == entry.get("session")]


def comparisons(entry, entries):
    """'time ours/ref' and 'acc ours−ref' cells: against each reference entry of the same session (ratio
    and difference of the arithmetic means of the loop's seconds and of the accuracies)."""
    if entry["kind"] != "ours":
        return "", ""
    ours = entry_stats(entry)
    ratios, diffs = [], []
    for ref in same_session_references(entry, entries):
        theirs = entry_stats(ref)
        ratio = ours["train_seconds"]["mean"] / theirs["train_seconds"]["mean"]
        diff = 100 * (ours["accuracy"]["mean"] - theirs["accuracy"]["mean"])
        ratios.append(f"{ratio:.2f}× vs {ref['name']}")
        diffs.append(f"{diff:+.2f} vs {ref['name']}")
    return "; ".join(ratios) or "—", "; ".join(diffs) or "—"


def table_row(entry, entries):
    stats = entry_stats(entry)
    acc, seconds = stats["accuracy"], stats["train_seconds"]
    published = entry["kind"] == "published"
    ratio, diff = comparisons(entry, entries)
    return [
        entry["name"],
        entry["kind"],
        entry["device"],
        ", ".join(str(s) for s in entry["seeds"]) or "—",
        f"{100 * acc['mean']:.2f}% " + ("(reported)" if published else f"± {100 * acc['std']:.2f}"),
        "—" if published else f"{100 * acc['min']:.2f}–{100 * acc['max']:.2f}%",
        f"{seconds['mean']:.2f} s",
        "—" if published else format_total(entry),
        format_time_to_target(stats, published),
        ratio,
        diff,
    ]


def format_ratio(name, time):
    if time is None:
        return None
    ours, theirs = time["seeds"]
    interval = (
        f" ({time['low']:.2f}–{time['high']:.2f}×)" if "low" in time else f" (no interval: {ours} and {theirs} seeds)"
    )
    return f"{name} {time['ratio']:.2f}×{interval}"


def comparison_line(entry, comparison):
    """One line of markdown: ours against one reference, the intervals and the verdict."""
    accuracy = comparison["accuracy"]
    acc_text = f"accuracy {accuracy['difference']:+.2f} points"
    if "low" in accuracy:
        df = f", {accuracy['df']:.1f} df" if accuracy["df"] is not None else ""
        acc_text += f" ({accuracy['low']:+.2f} to {accuracy['high']:+.2f}{df})"
    times = [format_ratio(name, comparison[name]) for name in ("total", "loop")]
    time_text = "time ours/ref " + ", ".join(t for t in times if t)
    found = (
        f"**{comparison['verdict']}**: {comparison['why']}"
        if comparison["verdict"]
        else f"no verdict: {comparison['why']}"
    )
    ours, theirs = comparison["seeds"]
    return (
        f"- {entry['name']} against {comparison['reference']} (session {entry.get('session')}; {ours} and "
        f"{theirs} seeds): {acc_text}; {time_text}; {found}."
    )


def comparison_lines(entries):
    """(lines of our entries against the references of their session, lines of references not run)."""
    compared, skipped = [], []
    for entry in entries:
        if entry["kind"] != "ours":
            continue
        compared += [comparison_line(entry, compare(entry, ref)) for ref in same_session_references(entry, entries)]
        skipped += [
            f"- {entry['name']} (session {entry.get('session')}): {name} not run: {why}"
            for name, why in (entry.get("reference_skipped") or {}).items()
        ]
    return compared, skipped


def render_markdown(entries, anchors=True):
    """A markdown table of the entries, then our entries against their references (intervals and
    verdicts), then (with `anchors`) the published results, marked as such."""
    rows = [table_row(entry, entries) for entry in entries]
    rows += [table_row(entry, []) for entry in (published_entries() if anchors else [])]
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    compared, skipped = comparison_lines(entries)
    if compared:
        lines += [
            "",
            f"Ours against the reference of the same session: the accuracy difference (ours − ref, "
            f"points) with its {CONFIDENCE:.0%} confidence interval from Welch's t, and the time "
            f"ratio (ours / ref) as the ratio of geometric means with its {CONFIDENCE:.0%} interval "
            f"(Welch's t on the logarithms of the seconds); verdict: {VERDICT_RULE}.",
            "",
            *compared,
        ]
    if skipped:
        lines += ["", "References that could not run beside ours:", "", *skipped]
    lines += [
        "",
        "Time to target: training seconds at the first evaluation whose test accuracy reaches the "
        "target (no interpolation), averaged over the seeds that reached it; reference runs are "
        "evaluated once, at the end. Ratios and differences compare an entry with the reference runs "
        "of the same session (same process, device, data).",
    ]
    lines += [
        "Clock: each side leaves a once-per-process build untimed (allocation, compiling or capture, "
        "warm-up), charges a per-run prepare, and times its training loop; 'loop time' is the loop, "
        "'total time' prepare + loop."
    ]
    lines += sorted({entry["clock"] for entry in entries if entry.get("clock")})
    if anchors:
        lines += [
            "Rows of kind **published** are results reported by their authors on the hardware shown, "
            "not measured here; their time is to their own reported accuracy, and they are never used "
            "in ratios."
        ]
    return "\n".join(lines) + "\n"
