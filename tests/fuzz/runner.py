"""
Run one fuzz target under atheris (libFuzzer for Python), or list the targets.

Every C{tests/fuzz/fuzz_<name>.py} module defines C{check(data: bytes) -> None}: it feeds C{data} to one
parser and lets through only the errors that parser documents, asserting what must hold of its answer.
Anything else it raises is a finding. Its seeds and every finding fixed since (as a regression) are the
files in C{tests/fuzz/corpus/<name>/}, which C{tests/fuzz/test_corpus.py} replays in the unit tests.

    python -m tests.fuzz.runner --list
    python -m tests.fuzz.runner NAME [--seconds 60] [libFuzzer options...]

New inputs go to C{$RELAY_FUZZ_DIR/<name>/} (default C{/tmp/relay-fuzz}), never into the committed seeds,
and a failing input to C{$RELAY_FUZZ_DIR/<name>-crash-...}. atheris is the C{fuzz} extra:
C{pip install -e '.[fuzz]'}.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"


def targets() -> list[str]:
    """The names of the fuzz targets, sorted."""
    return sorted(p.stem[len("fuzz_") :] for p in HERE.glob("fuzz_*.py"))


def load(name: str) -> Callable[[bytes], None]:
    """The C{check} function of target C{name}."""
    module = importlib.import_module(f"tests.fuzz.fuzz_{name}")
    check: Callable[[bytes], None] = module.check
    return check


def seeds(name: str) -> list[Path]:
    """The committed inputs of target C{name}: seeds and regressions."""
    folder = CORPUS / name
    return sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.runner", description=__doc__.split("\n\n")[0])
    parser.add_argument("name", nargs="?", help="the target (see --list)")
    parser.add_argument("--list", action="store_true", help="print the targets and exit")
    parser.add_argument("--seconds", type=int, default=60, help="stop after this long (default 60)")
    args, rest = parser.parse_known_args(argv)
    if args.list or not args.name:
        for name in targets():
            doc = (importlib.import_module(f"tests.fuzz.fuzz_{name}").__doc__ or "").strip()
            print(f"{name}\t{doc.splitlines()[0] if doc else ''}")
        return 0
    if args.name not in targets():
        print(f"runner: no fuzz target {args.name!r} (see --list)", file=sys.stderr)
        return 2
    try:
        import atheris
    except ImportError:
        print("runner: atheris is not installed: pip install -e '.[fuzz]'", file=sys.stderr)
        return 2
    # Only the project's own code gets coverage hooks: instrumenting every loaded function (instrument_all)
    # took minutes per start and broke tomllib's parser.
    with atheris.instrument_imports(include=["relay", "bindings"]):
        check = load(args.name)
    work = Path(os.environ.get("RELAY_FUZZ_DIR", "/tmp/relay-fuzz"))
    (work / args.name).mkdir(parents=True, exist_ok=True)
    fuzzer_argv = [
        sys.argv[0],
        f"-max_total_time={args.seconds}",
        f"-artifact_prefix={work}/{args.name}-",
        *rest,
        str(work / args.name),
    ]
    if (CORPUS / args.name).is_dir():
        fuzzer_argv.append(str(CORPUS / args.name))
    atheris.Setup(fuzzer_argv, check)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
