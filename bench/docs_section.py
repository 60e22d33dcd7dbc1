"""Replace one benchmark's section of docs/benchmarks.md, between its markers, keeping the rest."""

from __future__ import annotations

from pathlib import Path

INTRO = ("# Benchmarks\n\nEvery figure here was produced by a script in `bench/` whose command is given with it. "
         "Machines are noisy, so figures are ratios against a baseline run in the same session or process.\n")


def write_section(path: Path, name: str, body: str) -> None:
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    text = path.read_text() if path.exists() else INTRO
    section = f"{begin}\n{body.rstrip()}\n{end}"
    if begin in text and end in text:
        text = text.split(begin, 1)[0] + section + text.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    path.write_text(text)
