#!/usr/bin/env bash
# Fuzz the firmware's frame receiver and message parser for a bounded time (libFuzzer, with
# ASan + UBSan), starting from a corpus of valid frames; prints executions, time and crashes.
#
#   firmware/fuzz/run_fuzz.sh [SECONDS]      (default 60; needs clang)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
python="${PYTHON:-../.venv/bin/python}"
make -s fuzz
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$python" fuzz/make_corpus.py "$work/corpus" >/dev/null
mkdir -p "$work/crashes"
status=0
./build/fuzz-proto -max_total_time="$seconds" -max_len=4096 -print_final_stats=1 \
    -artifact_prefix="$work/crashes/" "$work/corpus" >"$work/log" 2>&1 || status=$?
execs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$work/log" | grep -o '[0-9]*$' || true)"
crashes="$(find "$work/crashes" -type f | wc -l)"
echo "fuzz-proto: ${execs:-?} executions in ${seconds} s, crashes: ${crashes}, exit ${status}"
if [ "$crashes" != 0 ] || [ "$status" != 0 ]; then
    tail -40 "$work/log"
    mkdir -p build/crashes && cp "$work"/crashes/* build/crashes/ 2>/dev/null || true
    exit 1
fi
