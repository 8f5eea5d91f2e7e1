"""The container image recipe, checked without a container runtime (.ci/run builds it where there is one)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def lint(text: str) -> list[str]:
    """What the repository's Dockerfile must never do; an empty list when it is fine."""
    steps = instructions(text)
    problems = []
    final = steps[max(i for i, (k, _) in enumerate(steps) if k == "FROM") :]
    users = [arguments for keyword, arguments in final if keyword == "USER"]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        problems.append("the final stage must end as a non-root USER")
    entrypoints = [arguments for keyword, arguments in final if keyword == "ENTRYPOINT"]
    if entrypoints != ['["meshgen"]']:
        problems.append('the final stage needs ENTRYPOINT ["meshgen"] (exec form)')
    for keyword, arguments in steps:
        if keyword == "ADD" and re.search(r"https?://|git@", arguments):
            problems.append(f"ADD of a URL: {arguments}")
        if keyword == "FROM" and (":" not in arguments.split()[0] or arguments.split()[0].endswith(":latest")):
            problems.append(f"FROM without a pinned tag: {arguments}")
        if keyword == "RUN" and re.search(r"curl|wget", arguments) and re.search(r"\|\s*(ba)?sh", arguments):
            problems.append(f"RUN pipes a download into a shell: {arguments}")
    return problems


def test_the_dockerfile_passes_the_lint() -> None:
    assert lint((ROOT / "Dockerfile").read_text()) == []


def test_the_image_leaves_out_the_dev_templates_symlink() -> None:
    assert "meshgen/templates" in (ROOT / ".dockerignore").read_text().splitlines()


def test_the_lint_catches_what_it_is_for() -> None:
    bad = (
        "FROM python:latest\nADD https://example.com/x.tgz /x\nRUN curl -s https://x | sh\n"
        "USER root\nENTRYPOINT meshgen\n"
    )
    assert lint(bad) == [
        "the final stage must end as a non-root USER",
        'the final stage needs ENTRYPOINT ["meshgen"] (exec form)',
        "FROM without a pinned tag: python:latest",
        "ADD of a URL: https://example.com/x.tgz /x",
        "RUN pipes a download into a shell: curl -s https://x | sh",
    ]
    assert "the final stage must end as a non-root USER" in lint('FROM python:3.11-slim\nENTRYPOINT ["meshgen"]\n')
