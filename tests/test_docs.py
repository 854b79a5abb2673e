"""The front page and docs/: short enough to read, showing the plots, and no link leads nowhere.

Markdown only: nothing here imports torch.
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FRONT_PAGE = ROOT / "README.md"
PAGES = [FRONT_PAGE, *sorted((ROOT / "docs").glob("*.md"))]
PLOTS = ("lr_test.png", "curves.png", "augmented.png")
MAX_LINES = 200
MAX_PLOT_BYTES = 300_000

LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")  # [text](target), ![alt](image)
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
CODE = re.compile(r"`[^`\n]*`")


def prose(text):
    """The text without code blocks and inline code, whose brackets are not links."""
    return CODE.sub("", FENCE.sub("", text))


def links(path):
    return LINK.findall(prose(path.read_text()))


def slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path):
    """Every heading's anchor in a markdown file, with GitHub's -1, -2 for repeats."""
    seen, result = {}, set()
    for line in FENCE.sub("", path.read_text()).splitlines():
        match = re.match(r"#{1,6} (.+)", line)
        if match:
            base = slug(match.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            result.add(base if count == 0 else f"{base}-{count}")
    return result


def test_the_front_page_is_at_most_200_lines():
    lines = FRONT_PAGE.read_text().splitlines()
    assert len(lines) <= MAX_LINES, f"README.md is {len(lines)} lines; move the detail to docs/"


def test_the_front_page_shows_the_three_plots():
    images = [target for target in links(FRONT_PAGE) if target.endswith(".png")]
    for name in PLOTS:
        target = f"docs/figures/{name}"
        assert target in images, f"README.md does not show {target}"
        data = (ROOT / target).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", target
        assert len(data) < MAX_PLOT_BYTES, f"{target}: {len(data):,} bytes, keep a plot under {MAX_PLOT_BYTES:,}"


def test_the_helpers_read_links_and_anchors():
    assert slug("The seed recipe's defaults") == "the-seed-recipes-defaults"
    assert slug("`speedrun/system/`: the machine and the files") == "speedrunsystem-the-machine-and-the-files"
    assert slug("Speed on a CPU") == "speed-on-a-cpu"
    text = "See [a](docs/a.md#b), ![c](d.png) and `[not](a link)`.\n```\n[nor](this)\n```\n"
    assert LINK.findall(prose(text)) == ["docs/a.md#b", "d.png"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_reaches_a_file(page):
    """Every relative link (and image) of README.md and docs/*.md names a file or folder that exists, and a
    link with #anchor a heading of that page."""
    broken = []
    for target in links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading #{anchor} in {file.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_the_docs_are_linked_from_the_front_page():
    """Every page under docs/ can be reached from README.md, directly."""
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in links(FRONT_PAGE)}
    assert set(PAGES[1:]) <= linked, sorted(str(p.relative_to(ROOT)) for p in set(PAGES[1:]) - linked)
