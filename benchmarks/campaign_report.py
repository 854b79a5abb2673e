"""The campaign's answer: figures, campaign.json, campaign.md and the archive of its run folders; and
`report`, which merges the parts of a visit into one answer, the leaderboard and the README's section."""

import datetime
import json
import os
import re
import tarfile
from pathlib import Path

from campaign_plan import ARCHIVE, LEFT_OUT_OF_ARCHIVE, README_MARKERS, ROOT, STEPS, TIMED

from speedrun.runs import leaderboard_entries  # no torch: the campaign itself never touches the device
from speedrun.system.atomic import replacing


def figure(name, text, *, value=None, timed=None, command=None, accuracy=None, tflops=None, gbps=None):
    """One reported number: its text, the value behind it, what the clock covered, the command that
    measured it, the accuracy that came with it and the rate compared with a measured ceiling."""
    return {
        "name": name,
        "text": text,
        "value": value,
        "timed": timed,
        "command": command,
        "accuracy": accuracy,
        "tflops": tflops,
        "gbps": gbps,
    }


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


def command_records(campaign):
    """The campaign's commands, each {command, started, finished, wall_s} (and the part it ran as, once
    merged); a campaign.json from before commands were timed holds their text alone."""
    return [{"command": command} if isinstance(command, str) else command for command in campaign.get("commands", [])]


def command_line(record):
    """One command of the campaign for campaign.md: the part it ran as, its text, its wall time."""
    part = f"{record['part']}: " if record.get("part") else ""
    if record.get("wall_s") is None:
        timing = "wall time not recorded"
    else:
        timing = f"{record['started']} to {record['finished']}, {record['wall_s']:.0f} s"
    note = f" ({record['note']})" if record.get("note") else ""
    return f"- {part}`{record['command']}`: {timing}{note}"


def where(step):
    """' (part)' for a record of a merged campaign."""
    return f" ({step['part']})" if step.get("part") else ""


def seconds_text(step):
    return "not recorded" if step.get("seconds") is None else f"{step['seconds']:.0f}"


def command_number(commands, command):
    """'c3' for the third command seen; the commands are listed in full once, under the table."""
    if not command:
        return ""
    return f"c{commands.setdefault(command, len(commands) + 1)}"


def render(campaign):
    """campaign.md: the header, every command and its wall time, every step's status (each record of a
    step that ran in several parts, marked with its part), every figure, the timed regions, what failed."""
    env = environment_of(campaign)
    versions = campaign.get("versions", {})
    commands = {}  # each command once, numbered in order of appearance
    steps = campaign["steps"]
    by_part = any(step.get("part") for step in steps)  # a merged campaign: which part each record is from
    lines = [
        f"# Campaign: {campaign['device']}",
        "",
        f"{campaign['size']} campaign, {campaign['started']}; torch {versions.get('torch')}, "
        f"triton {versions.get('triton')}, CUDA {versions.get('cuda')}, cuDNN {campaign.get('cudnn')}, "
        f"driver {env.get('nvidia_smi', {}).get('driver_version', 'not read')}. On CUDA, cuDNN autotuning "
        f"is on for our runs and the reference alike.",
        "",
        "Run as, each command's wall time from its start to its end:",
        "",
    ]
    lines += [command_line(record) for record in command_records(campaign)]
    column, rule = (" part |", "---|") if by_part else ("", "")
    lines += [
        "",
        "## Steps",
        "",
        f"| # | step | status |{column} seconds (budget) | what | note |",
        f"|---|---|---|{rule}---|---|---|",
    ]
    for number, step in enumerate(steps, 1):
        part = f" {cell(step.get('part', ''))} |" if by_part else ""
        note = step_note(step)
        if step.get("reconstructed"):
            note = "reconstructed from the archive's run files (below)" + (f"; {note}" if note else "")
        lines.append(
            f"| {number} | {step['name']} | **{step['status']}** |{part} {seconds_text(step)} "
            f"({step['budget_s']}) | {cell(step['what'])} | {cell(note)} |"
        )
    lines += [
        "",
        "## Figures",
        "",
        "Fractions are of this device's measured ceilings (environment step): "
        "TFLOP/s of the matrix-product rate in the training precision, GB/s of the copy bandwidth.",
        "",
        f"| step |{column} figure | value | of ceiling | accuracy | device | timed | command |",
        f"|---|{rule}---|---|---|---|---|---|---|",
    ]
    for step in steps:
        part = step.get("part", "") + (" (reconstructed)" if step.get("reconstructed") else "")
        for fig in (step.get("result") or {}).get("figures", []):
            share = fraction(fig, env)
            lines.append(
                "| "
                + " | ".join(
                    cell(value)
                    for value in [
                        step["name"],
                        *([part] if by_part else []),
                        fig["name"],
                        fig["text"],
                        f"{share[0]:.1%} of {share[1]}" if share else "",
                        pct(fig["accuracy"]) if fig.get("accuracy") is not None else "",
                        step.get("device", campaign["device"]),
                        fig.get("timed") or "",
                        command_number(commands, fig.get("command")),
                    ]
                )
                + " |"
            )
    clocks = campaign.get("timed_regions") or TIMED  # as they were when the campaign ran
    lines += ["", "## What each clock covers", ""] + [f"- **{key}**: {text}" for key, text in clocks.items()]
    lines += ["", "## Commands (WORK is the campaign's work folder)", ""]
    lines += [f"- c{number}: `{command}`" for command, number in commands.items()]
    rebuilt = [step for step in steps if step.get("reconstructed")]
    if rebuilt:
        lines += ["", "## Reconstructed records", ""]
        lines += [f"- {step['name']}{where(step)}: {step['reconstructed']}" for step in rebuilt]
    for step in (step for step in steps if step["status"] == "failed"):
        lines += [
            "",
            f"## {step['name']}{where(step)}: {step['error']}",
            "",
            "```",
            step.get("tail") or "(no output)",
            "```",
        ]
        for name, part in (
            (step.get("result") or {}).get("variants") or (step.get("result") or {}).get("checks") or {}
        ).items():
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


def merge_campaigns(campaigns, names=None):
    """One campaign from several parts: every part's record of every step, each marked with the part it
    came from (`names`, default part1, part2, ...), in campaign order and, within a step that ran in
    several parts (like `data`), in the parts' order; every part's commands with their wall times; the
    header of the part with the environment."""
    names = list(names) if names else [f"part{number}" for number in range(1, len(campaigns) + 1)]
    order = {name: index for index, name in enumerate(STEPS)}
    records = [
        {**step, "part": step.get("part") or name}
        for campaign, name in zip(campaigns, names)
        for step in campaign["steps"]
    ]
    commands = [
        {**record, "part": record.get("part") or name}
        for campaign, name in zip(campaigns, names)
        for record in command_records(campaign)
    ]
    first = next((c for c in campaigns if environment_of(c)), campaigns[0])
    return {
        **first,
        "commands": commands,
        "timed_regions": first.get("timed_regions") or TIMED,
        "started": min(c["started"] for c in campaigns),
        "finished": max(c.get("finished", "") for c in campaigns),
        "steps": sorted(records, key=lambda step: order.get(step["name"], len(STEPS))),
    }


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


def readme_section(campaign, folder, others=()):
    """The results section of benchmarks/README.md: the step table and the figures, from campaign.md;
    `others`, the folders of this device's other visits."""
    text = render(campaign)
    body = text[text.index("## Steps") :].replace("## ", "#### ")
    visits = "; other visits: " + ", ".join(f"`{other}/`" for other in others) if others else ""
    return (
        f"{README_MARKERS[0]}\n### Campaign on {campaign['device']} ({campaign['started'][:10]}{visits})\n\n"
        f"From `{folder}/campaign.md` (generated by `python benchmarks/campaign.py report`); leaderboard "
        f"in `{folder}/leaderboard.md`, run folders in `{folder}/{ARCHIVE}`.\n\n"
        f"{body.strip()}\n{README_MARKERS[1]}"
    )


def other_visits(out, device):
    """The other folders beside `out` holding a campaign of `device`: <device>, <device>-visit-N."""
    slug = slugify(device)
    return sorted(
        folder
        for folder in out.parent.iterdir()
        if folder.resolve() != out.resolve()
        and (folder.name == slug or folder.name.startswith(f"{slug}-visit-"))
        and (folder / "campaign.json").exists()
    )


def update_readme(path, section):
    text = path.read_text()
    start, end = README_MARKERS
    if start not in text or end not in text:
        raise ValueError(f"{path} has no campaign results markers ({start} ... {end})")
    path.write_text(text[: text.index(start)] + section + text[text.index(end) + len(end) :])


def report(options):
    folders = [Path(folder) for folder in options.parts]
    campaigns = [json.loads((folder / "campaign.json").read_text()) for folder in folders]
    campaign = merge_campaigns(campaigns, [folder.name for folder in folders])
    out = Path(options.out or ROOT / "benchmarks" / "results" / slugify(campaign["device"]))
    write_answer(campaign, out)
    merge_archives(folders, out)
    entries = [entry for step in campaign["steps"] for entry in (step.get("result") or {}).get("entries", [])]
    (out / "leaderboard.md").write_text(leaderboard_entries.render_markdown(entries))
    readme = (
        options.readme
        if options.readme is not None
        else ("" if campaign["size"] == "smoke" else str(ROOT / "benchmarks" / "README.md"))
    )
    if readme:

        def shown(folder):
            return os.path.relpath(folder, ROOT) if folder.resolve().is_relative_to(ROOT) else folder.name

        others = [shown(folder) for folder in other_visits(out, campaign["device"])]
        update_readme(Path(readme), readme_section(campaign, shown(out), others))
    updated = f"; updated {readme}" if readme else ""
    print(f"wrote {out}/campaign.json, campaign.md, leaderboard.md, {ARCHIVE}{updated}")
    return campaign
