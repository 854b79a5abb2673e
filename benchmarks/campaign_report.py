"""The campaign's answer: figures, campaign.json, campaign.md and the archive of its run folders; and
`report`, which merges the parts of a visit into one answer, the leaderboard and the README's section."""
import datetime
import json
import os
import re
import tarfile
from pathlib import Path

from campaign_plan import ARCHIVE, LEFT_OUT_OF_ARCHIVE, README_MARKERS, ROOT, STEPS, TIMED
from speedrun import leaderboard_entries  # no torch: the campaign itself never touches the device
from speedrun.atomic import replacing


def figure(name, text, *, value=None, timed=None, command=None, accuracy=None, tflops=None, gbps=None):
    """One reported number: its text, the value behind it, what the clock covered, the command that
    measured it, the accuracy that came with it and the rate compared with a measured ceiling."""
    return {"name": name, "text": text, "value": value, "timed": timed, "command": command,
            "accuracy": accuracy, "tflops": tflops, "gbps": gbps}


def pct(value):
    return f"{100 * value:.2f}%"


def now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def slugify(name):
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def environment_of(campaign):
    for step in campaign["steps"]:
        if step["name"] == "environment" and step["status"] == "passed":
            return step["result"]
    return {}


def fraction(fig, ceilings):
    """A figure's rate as a fraction of the measured ceiling (matrix product or copy), or None."""
    if fig.get("tflops") and ceilings.get("tflops"):
        return fig["tflops"] / ceilings["tflops"], "matmul"
    if fig.get("gbps") and ceilings.get("gbps"):
        return fig["gbps"] / ceilings["gbps"], "copy"
    return None


def cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def step_note(step):
    result = step.get("result") or {}
    return step.get("reason") or step.get("error") or result.get("note") or ""


def command_number(commands, command):
    """'c3' for the third command seen; the commands are listed in full once, under the table."""
    if not command:
        return ""
    return f"c{commands.setdefault(command, len(commands) + 1)}"


def render(campaign):
    """campaign.md: the header, every step's status, every figure, the timed regions, what failed."""
    env = environment_of(campaign)
    versions = campaign.get("versions", {})
    commands = {}  # each command once, numbered in order of appearance
    lines = [f"# Campaign: {campaign['device']}", "",
             f"{campaign['size']} campaign, {campaign['started']}; torch {versions.get('torch')}, "
             f"triton {versions.get('triton')}, CUDA {versions.get('cuda')}, cuDNN {campaign.get('cudnn')}, "
             f"driver {env.get('nvidia_smi', {}).get('driver_version', 'not read')}. On CUDA, cuDNN autotuning "
             f"is on for our runs and the reference alike.", "",
             "Run as: " + "; ".join(f"`{command}`" for command in campaign["commands"]), "",
             "## Steps", "", "| # | step | status | seconds (budget) | what | note |", "|---|---|---|---|---|---|"]
    for number, step in enumerate(campaign["steps"], 1):
        lines.append(f"| {number} | {step['name']} | **{step['status']}** | {step.get('seconds', 0):.0f} "
                     f"({step['budget_s']}) | {cell(step['what'])} | {cell(step_note(step))} |")
    lines += ["", "## Figures", "", "Fractions are of this device's measured ceilings (environment step): "
              "TFLOP/s of the matrix-product rate in the training precision, GB/s of the copy bandwidth.", "",
              "| step | figure | value | of ceiling | accuracy | device | timed | command |",
              "|---|---|---|---|---|---|---|---|"]
    for step in campaign["steps"]:
        for fig in (step.get("result") or {}).get("figures", []):
            share = fraction(fig, env)
            lines.append("| " + " | ".join(cell(value) for value in [
                step["name"], fig["name"], fig["text"], f"{share[0]:.1%} of {share[1]}" if share else "",
                pct(fig["accuracy"]) if fig.get("accuracy") is not None else "", step.get("device", campaign["device"]),
                fig.get("timed") or "", command_number(commands, fig.get("command"))]) + " |")
    lines += ["", "## What each clock covers", ""] + [f"- **{key}**: {text}" for key, text in TIMED.items()]
    lines += ["", "## Commands (WORK is the campaign's work folder)", ""]
    lines += [f"- c{number}: `{command}`" for command, number in commands.items()]
    failures = [step for step in campaign["steps"] if step["status"] == "failed"]
    for step in failures:
        lines += ["", f"## {step['name']}: {step['error']}", "", "```", step.get("tail") or "(no output)", "```"]
        for name, part in ((step.get("result") or {}).get("variants") or (step.get("result") or {}).get("checks")
                           or {}).items():
            if part.get("status") == "failed":
                lines += ["", f"{name}: {part['error']}", "", "```", part.get("tail") or "(no output)", "```"]
    return "\n".join(lines) + "\n"


def keep_in_archive(info):
    return None if info.name.endswith(LEFT_OUT_OF_ARCHIVE) or "/caches" in info.name else info


def write_answer(campaign, out, work=None):
    """campaign.json, campaign.md and (given the work folder) the archive of its run folders and logs."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "campaign.json").write_text(json.dumps(campaign, indent=2, sort_keys=True, default=str) + "\n")
    (out / "campaign.md").write_text(render(campaign))
    if work is not None:
        with replacing(out / ARCHIVE) as temporary, tarfile.open(temporary, "w:gz") as archive:
            for child in sorted(work.iterdir()):
                if child.is_dir() and child.name not in ("data", "synthetic-source"):
                    archive.add(child, arcname=child.name, filter=keep_in_archive)


def merge_campaigns(campaigns):
    """One campaign from several parts: each step's latest record (a step repeated in several parts,
    like `data`, keeps its last run), in campaign order; the header of the part with the environment."""
    by_name = {}
    for campaign in campaigns:
        for step in campaign["steps"]:
            by_name[step["name"]] = step
    first = next((c for c in campaigns if environment_of(c)), campaigns[0])
    return {**first, "commands": [command for c in campaigns for command in c["commands"]],
            "started": min(c["started"] for c in campaigns), "finished": max(c.get("finished", "") for c in campaigns),
            "steps": [by_name[name] for name in STEPS if name in by_name]}


def merge_archives(folders, out):
    """One archive holding each part's archive under the part's folder name."""
    with replacing(out / ARCHIVE) as temporary, tarfile.open(temporary, "w:gz") as merged:
        for folder in folders:
            path = folder / ARCHIVE
            if not path.exists():
                continue
            with tarfile.open(path) as part:
                for member in part.getmembers():
                    data = part.extractfile(member) if member.isfile() else None
                    member.name = f"{folder.name}/{member.name}"
                    merged.addfile(member, data)


def readme_section(campaign, folder):
    """The results section of benchmarks/README.md: the step table and the figures, from campaign.md."""
    text = render(campaign)
    body = text[text.index("## Steps"):].replace("## ", "#### ")
    return (f"{README_MARKERS[0]}\n### Campaign on {campaign['device']} ({campaign['started'][:10]})\n\n"
            f"From `{folder}/campaign.md` (generated by `python benchmarks/campaign.py report`); leaderboard "
            f"in `{folder}/leaderboard.md`, run folders in `{folder}/{ARCHIVE}`.\n\n"
            f"{body.strip()}\n{README_MARKERS[1]}")


def update_readme(path, section):
    text = path.read_text()
    start, end = README_MARKERS
    if start not in text or end not in text:
        raise ValueError(f"{path} has no campaign results markers ({start} ... {end})")
    path.write_text(text[:text.index(start)] + section + text[text.index(end) + len(end):])


def report(options):
    folders = [Path(folder) for folder in options.parts]
    campaigns = [json.loads((folder / "campaign.json").read_text()) for folder in folders]
    campaign = merge_campaigns(campaigns)
    out = Path(options.out or ROOT / "benchmarks" / "results" / slugify(campaign["device"]))
    write_answer(campaign, out)
    merge_archives(folders, out)
    entries = [entry for step in campaign["steps"] for entry in (step.get("result") or {}).get("entries", [])]
    (out / "leaderboard.md").write_text(leaderboard_entries.render_markdown(entries))
    readme = options.readme if options.readme is not None else (
        "" if campaign["size"] == "smoke" else str(ROOT / "benchmarks" / "README.md"))
    if readme:
        shown = os.path.relpath(out, ROOT) if out.resolve().is_relative_to(ROOT) else out.name
        update_readme(Path(readme), readme_section(campaign, shown))
    updated = f"; updated {readme}" if readme else ""
    print(f"wrote {out}/campaign.json, campaign.md, leaderboard.md, {ARCHIVE}{updated}")
    return campaign
