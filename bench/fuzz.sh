#!/usr/bin/env bash
# Coverage-guided fuzzing of every target in tests/fuzz/targets.py, SECONDS_PER_TARGET each (default 60),
# one process at a time. New inputs go to $WORK/corpus/<target> (default WORK=build/fuzz), crashes to
# $WORK/crashes/<target>-*; the checked-in corpus tests/fuzz/corpus/<target> seeds each run. Prints one
# line per target: executions, corpus size, crash files. Needs the fuzz extra (pip install ".[fuzz]").
#   bench/fuzz.sh [TARGET ...]            MERGE=1 bench/fuzz.sh   (also merge new coverage into the
#                                                                    checked-in corpus, minimised)
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
case "$PY" in */*) PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")" ;; esac  # absolute, symlink kept (venv)
SECS=${SECONDS_PER_TARGET:-60}
WORK=${WORK:-build/fuzz}
mkdir -p "$WORK/corpus" "$WORK/crashes" "$WORK/logs"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cd tests/fuzz && $PY -c "import targets; print('\n'.join(targets.TARGETS))" 2>/dev/null)
fi
printf "%-24s %12s %8s %8s\n" target executions corpus crashes
for t in "${targets[@]}"; do
  mkdir -p "$WORK/corpus/$t"
  log="$WORK/logs/$t.log"
  OMP_NUM_THREADS=2 $PY bench/fuzz.py "$t" "$WORK/corpus/$t" "tests/fuzz/corpus/$t" -max_total_time="$SECS" \
    -timeout=20 -rss_limit_mb=6144 -max_len=16384 -print_final_stats=1 \
    -artifact_prefix="$WORK/crashes/$t-" >"$log" 2>&1
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  corpus=$(ls "$WORK/corpus/$t" "tests/fuzz/corpus/$t" 2>/dev/null | grep -vc ':$\|^$')
  crashes=$(ls "$WORK/crashes" 2>/dev/null | grep -c "^$t-")
  printf "%-24s %12s %8s %8s\n" "$t" "${execs:-?}" "$corpus" "$crashes"
  if [ "${MERGE:-0}" = 1 ]; then
    $PY bench/fuzz.py "$t" -merge=1 "tests/fuzz/corpus/$t" "$WORK/corpus/$t" >>"$log" 2>&1
  fi
done
