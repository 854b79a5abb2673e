"""Leaderboard entries: statistics over seeds, the JSON-lines file, and the markdown table.

An entry is one recipe run over several seeds in one session (one process, one device):

    {"name", "kind": "ours" | "reference" | "published", "recipe", "config_hash", "device", "versions",
     "data": {"source", "train_sha256", "test_sha256"}, "seeds", "accuracies", "train_seconds",
     "time_to_target", "target", "timestamp", "session"}

Entries are appended as JSON lines to benchmarks/results/leaderboard.jsonl; `render_markdown` turns them
into a table where each of our entries is compared with the reference runs of the same session, and
published results (other people's numbers on their hardware) are listed below for orientation only.
"""
import datetime
import hashlib
import json
import os
import statistics
import uuid

# Keys that change from run to run without changing what is trained, left out of the config hash.
HASH_IGNORED_KEYS = ("seed",)
HASH_IGNORED_SECTIONS = ("logging", "leaderboard")

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
    return run_stats([s["final_test_acc"] for s in summaries], [s["train_seconds"] for s in summaries],
                     [time_to_target(s["history"], target) for s in summaries], target)


# ---------------------------------------------------------------------------------------------------
# entries and the JSON-lines file


def config_hash(config):
    """First 12 hex digits of the sha256 of the canonical JSON of `config`, without seed/logging keys."""
    def strip(tree, top):
        return {key: strip(value, False) if isinstance(value, dict) else value
                for key, value in tree.items()
                if key not in HASH_IGNORED_KEYS and not (top and key in HASH_IGNORED_SECTIONS)}
    canonical = json.dumps(strip(config, True), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def new_session():
    """An id shared by every entry of one invocation: same process, same device, same data."""
    return datetime.datetime.now().strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


def data_identity(data):
    """Where the data came from and checksums of the betons trained on (their JSON sidecars)."""
    train, test = data.get("train_meta") or {}, data.get("test_meta") or {}
    return {"source": train.get("source"), "train_sha256": train.get("beton_sha256"),
            "test_sha256": test.get("beton_sha256")}


def make_entry(summaries, *, name, kind, target, session, recipe=None):
    """One leaderboard entry from the training summaries of several seeds of the same config."""
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
        "time_to_target": [time_to_target(s["history"], target) for s in summaries],
        "target": target,
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "session": session,
    }


def published_entries():
    """The published anchors as entries: one result each, 'time to target' = time to their accuracy."""
    return [{"name": p["name"], "kind": "published", "device": p["device"], "seeds": [],
             "accuracies": [p["accuracy"]], "train_seconds": [p["seconds"]],
             "time_to_target": [p["seconds"]], "target": p["accuracy"]} for p in PUBLISHED]


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

COLUMNS = ["name", "kind", "device", "seeds", "test acc (mean ± std)", "min–max", "train time (mean)",
           "time to target", "time ours/ref", "acc ours−ref (points)"]


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


def comparisons(entry, entries):
    """'time ours/ref' and 'acc ours−ref' cells: against each reference entry of the same session."""
    if entry["kind"] != "ours":
        return "", ""
    ours = entry_stats(entry)
    ratios, diffs = [], []
    for ref in entries:
        if ref["kind"] == "reference" and ref.get("session") == entry.get("session"):
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
        format_time_to_target(stats, published),
        ratio,
        diff,
    ]


def render_markdown(entries, anchors=True):
    """A markdown table of the entries, then (with `anchors`) the published results, marked as such."""
    rows = [table_row(entry, entries) for entry in entries]
    rows += [table_row(entry, []) for entry in (published_entries() if anchors else [])]
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += ["", "Time to target: training seconds at the first evaluation whose test accuracy reaches the "
              "target (no interpolation), averaged over the seeds that reached it; reference runs are "
              "evaluated once, at the end. Ratios and differences compare an entry with the reference runs "
              "of the same session (same process, device, data)."]
    if anchors:
        lines += ["Rows of kind **published** are results reported by their authors on the hardware shown, "
                  "not measured here; their time is to their own reported accuracy, and they are never used "
                  "in ratios."]
    return "\n".join(lines) + "\n"
