"""One coverage-guided fuzz run (atheris + libFuzzer) of a target of tests/fuzz/targets.py.

    python bench/fuzz.py TARGET [libFuzzer args and corpus folders ...]

yoloseg's Python code is instrumented for coverage; the compiled kernels are exercised but not
instrumented. bench/fuzz.sh runs every target for a bounded time and reports the statistics.
"""

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "fuzz"))
with atheris.instrument_imports(include=["yoloseg", "targets"]):
    import targets


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in targets.TARGETS:
        sys.exit(f"usage: fuzz.py TARGET [libFuzzer args]; targets: {', '.join(targets.TARGETS)}")
    name = sys.argv[1]

    def one_input(data: bytes):
        targets.run(name, data)

    atheris.Setup([sys.argv[0], *sys.argv[2:]], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
