"""Mutation testing: do the behavioural tests catch security mistakes on their own, without the goldens?

``python scripts/mutants.py`` applies each mutant of the catalogue (scripts/mutant_catalogue.py) to a
private copy of the project, runs the tests that should catch it with golden comparisons excluded
(``-m "not golden"``), and reports killed / survived and the test that killed it.

    python scripts/mutants.py                 # the whole catalogue (docs/testing.md has the figures)
    python scripts/mutants.py --ci            # the fixed CI subset (every one must be killed)
    python scripts/mutants.py --only envoy-method-prefix nginx-method-anchor
    python scripts/mutants.py --list

Each copy is a directory beside a link to ``../shared`` with the package laid out as installed
(``meshgen/templates`` inside the package), so ``python -m pytest`` in it imports the mutated code and
templates, never the checkout's. Exit status: 0 when the run met its goal (``--ci``: all killed; full: at
least 95 %, no stale mutant), 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from mutant_catalogue import CATALOGUE, Mutant  # noqa: E402

GOAL = 0.95
TIMEOUT = 900  # seconds per mutant: a mutant that hangs the tests counts as killed (and is reported)
FAILED = re.compile(r"^(?:FAILED|ERROR) (\S+)", re.M)


@dataclass(frozen=True)
class Result:
    mutant: Mutant
    outcome: str  # killed | survived | stale | timeout
    killer: str
    seconds: float


def shared_reference() -> Path:
    override = os.environ.get("MESHGEN_SHARED_REFERENCE")
    return Path(override) if override else ROOT.parent / "shared" / "reference"


def make_copy(workspace: Path) -> Path:
    """A copy of the tracked files, laid out like the installed package, beside ../shared."""
    copy = workspace / "main"
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in files:
        source = ROOT / name
        if not source.is_file():
            continue
        target = copy / ("meshgen/" + name if name.startswith("templates/") else name)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    (copy / "templates").symlink_to("meshgen/templates")
    (workspace / "shared").symlink_to(shared_reference().parent)
    return copy


def apply(copy: Path, mutant: Mutant) -> dict[Path, str] | None:
    """Apply the mutant's edits; the original texts to restore, or None if a snippet is not found once."""
    originals: dict[Path, str] = {}
    for edit in mutant.edits:
        path = copy / edit.path
        text = originals.get(path, path.read_text(encoding="utf-8"))
        originals.setdefault(path, text)
        current = path.read_text(encoding="utf-8")
        if current.count(edit.find) != 1:
            for restore, original in originals.items():
                restore.write_text(original, encoding="utf-8")
            return None
        path.write_text(current.replace(edit.find, edit.replace), encoding="utf-8")
    return originals


def run_mutant(copy: Path, mutant: Mutant) -> Result:
    started = time.monotonic()
    originals = apply(copy, mutant)
    if originals is None:
        return Result(mutant, "stale", "a snippet to mutate is not in the code (update the catalogue)", 0.0)
    try:
        command = [
            sys.executable,
            "-m",
            "pytest",
            "-x",
            "-q",
            "-p",
            "no:cacheprovider",
            "-m",
            "not golden",
            "--no-header",
            "-rfE",
            *mutant.tests,
        ]
        env = {
            **os.environ,
            "MESHGEN_SHARED_REFERENCE": str(copy.parent / "shared" / "reference"),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        try:
            done = subprocess.run(
                command, cwd=copy, capture_output=True, text=True, timeout=TIMEOUT, env=env, check=False
            )
        except subprocess.TimeoutExpired:
            return Result(mutant, "timeout", f"no result in {TIMEOUT} s", time.monotonic() - started)
        killers = FAILED.findall(done.stdout)
        if done.returncode == 0:
            return Result(mutant, "survived", "", time.monotonic() - started)
        if done.returncode in (2, 3, 4) and not killers:  # interrupted, internal or usage error
            tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
            return Result(mutant, "killed", "collection error: " + " / ".join(tail), time.monotonic() - started)
        return Result(
            mutant, "killed", killers[0] if killers else f"exit {done.returncode}", time.monotonic() - started
        )
    finally:
        for path, original in originals.items():
            path.write_text(original, encoding="utf-8")


def snippet_check(copy: Path, mutant: Mutant) -> Result:
    originals = apply(copy, mutant)
    if originals is None:
        return Result(mutant, "stale", "a snippet to mutate is not in the code (update the catalogue)", 0.0)
    for path, original in originals.items():
        path.write_text(original, encoding="utf-8")
    return Result(mutant, "applies", "", 0.0)


def check_copy(copy: Path) -> None:
    """The copy must import its own package and templates, or every mutant would 'survive'."""
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import meshgen, meshgen.templates; print(meshgen.__file__, meshgen.templates.__file__)",
        ],
        cwd=copy,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if not all(Path(p).resolve().is_relative_to(copy.resolve()) for p in probe):
        raise SystemExit(f"mutants: the copy imports {probe}, not its own code; is the project installed -e?")


def report(results: list[Result]) -> str:
    lines = ["| mutant | where | breaks | result | killed by | s |", "|---|---|---|---|---|---|"]
    for r in results:
        where = ", ".join(dict.fromkeys(edit.path for edit in r.mutant.edits))
        lines.append(f"| {r.mutant.name} | {where} | {r.mutant.breaks} | {r.outcome} | {r.killer} | {r.seconds:.0f} |")
    counted = [r for r in results if r.outcome != "stale"]
    killed = sum(r.outcome in ("killed", "timeout") for r in counted)
    share = killed / len(counted) if counted else 1.0
    lines.append("")
    lines.append(
        f"killed {killed} of {len(counted)} ({share:.0%}); stale {len(results) - len(counted)}; goal {GOAL:.0%}"
    )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ci", action="store_true", help="only the fixed CI subset; every one must be killed")
    parser.add_argument("--only", nargs="*", default=[], metavar="NAME")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--snippets", action="store_true", help="only check that every mutant still applies")
    args = parser.parse_args()
    mutants = [m for m in CATALOGUE if (not args.ci or m.ci) and (not args.only or m.name in args.only)]
    unknown = set(args.only) - {m.name for m in CATALOGUE}
    if unknown:
        raise SystemExit(f"mutants: unknown {sorted(unknown)}")
    if args.list:
        for m in mutants:
            print(f"{m.name:40} {'ci ' if m.ci else '   '}{m.breaks}")
        return 0
    with tempfile.TemporaryDirectory(prefix="meshgen-mutants-") as temp:
        workers = [make_copy(Path(temp) / f"w{i}") for i in range(max(1, min(args.jobs, len(mutants))))]
        for copy in workers:
            check_copy(copy)
        queue = list(mutants)
        results: dict[str, Result] = {}

        def work(copy: Path) -> None:
            while True:
                try:
                    mutant = queue.pop(0)
                except IndexError:
                    return
                result = run_mutant(copy, mutant) if not args.snippets else snippet_check(copy, mutant)
                results[mutant.name] = result
                print(f"{result.outcome:9} {mutant.name} ({result.seconds:.0f} s) {result.killer}", flush=True)

        with ThreadPoolExecutor(len(workers)) as pool:
            list(pool.map(work, workers))
    ordered = [results[m.name] for m in mutants]
    print()
    print(report(ordered))
    survived = [r for r in ordered if r.outcome in ("survived", "stale")]
    if args.ci or args.only or args.snippets:
        return 1 if survived else 0
    counted = [r for r in ordered if r.outcome != "stale"]
    killed = sum(r.outcome in ("killed", "timeout") for r in counted)
    return 0 if counted and killed / len(counted) >= GOAL and len(counted) == len(ordered) else 1


if __name__ == "__main__":
    sys.exit(main())
