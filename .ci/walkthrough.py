#!/usr/bin/env python3
"""Run a guide's code blocks in order, as a reader pasting them would.

A guide in ``docs/`` is a walkthrough when its blocks are meant to be pasted one after the other
from the repository root (``docs/lab-bench.md`` says "Copy them as they are"). This script
extracts its fenced ``sh`` and ``python`` blocks in order and runs them as one bash script with
``set -euo pipefail``: ``sh`` blocks as they are, ``python`` blocks through ``python -`` (the
interpreter the blocks before have put on ``PATH``, as a reader's shell would have it). A block
right after the HTML comment ``<!-- walkthrough: skip REASON -->`` is not run (for blocks that
need an instrument); the comment does not show on the site. Background jobs a block starts (the
emulator service) are stopped when the script ends, whatever happens.

Usage::

    python .ci/walkthrough.py docs/lab-bench.md            # run it (from the repository root)
    python .ci/walkthrough.py docs/lab-bench.md --print    # print the bash script instead

Exit status: that of the bash script, so CI fails on the first command that fails.
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

FENCE = re.compile(
    r"^(?P<skip><!-- walkthrough: skip(?P<reason>[^>]*)-->\n)?"
    r"```(?P<lang>sh|python)\n(?P<code>.*?)^```$",
    flags=re.M | re.S,
)


class Block(NamedTuple):
    """A fenced code block of a guide."""

    line: int  # of the opening fence, 1-based
    language: str  # "sh" or "python"
    code: str
    skip_reason: str | None  # None when the block runs


def blocks(text: str) -> list[Block]:
    """The guide's ``sh`` and ``python`` blocks, in order, with their skip markers."""
    found = []
    for match in FENCE.finditer(text):
        fence_at = match.start("lang") - 3
        reason = match["reason"].strip() if match["skip"] else None
        found.append(Block(text.count("\n", 0, fence_at) + 1, match["lang"], match["code"], reason))
    return found


def script(path: Path) -> str:
    """One bash script that runs the guide's blocks in order, stopping at the first failure."""
    parts = [
        "set -euo pipefail",
        # stop what the blocks left running (services started with &), also on failure
        "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT",
    ]
    for block in blocks(path.read_text()):
        where = f"{path}:{block.line}"
        if block.skip_reason is not None:
            parts.append("echo " + shlex.quote(f"== {where}: skipped, {block.skip_reason}"))
            continue
        parts.append("echo " + shlex.quote(f"== {where}"))
        if block.language == "sh":
            parts.append(block.code)
        else:
            parts.append(f"python - <<'WALKTHROUGH_PYTHON'\n{block.code}WALKTHROUGH_PYTHON")
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run (or print) the walkthrough script of one guide."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("guide", type=Path, help="a Markdown guide, e.g. docs/lab-bench.md")
    parser.add_argument("--print", action="store_true", help="print the bash script, run nothing")
    args = parser.parse_args(argv)
    text = script(args.guide)
    if args.print:
        print(text, end="")
        return 0
    return subprocess.run(["bash", "-c", text], check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
