#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for a bounded time (FUZZ_SECONDS each,
# default 10; longer on demand: FUZZ_SECONDS=600 bash scripts/fuzz.sh, or
# name targets: bash scripts/fuzz.sh ring untar). One build for all targets
# (release, debug assertions on, no sanitizer: the code under test is safe
# Rust, where a memory bug is a panic already, and ASan would triple the
# build on 2 cores). Stable toolchain only: cargo-fuzz needs nightly flags,
# so RUSTC_BOOTSTRAP=1. New inputs go to fuzz/target/corpus/<target> (the
# checked-in fuzz/corpus/<target> seeds it and is not written to). A crash
# fails the step and prints the artifact's path and how to replay it.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.2
seconds=${FUZZ_SECONDS:-10}
export RUSTC_BOOTSTRAP=1

if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
  echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install --locked --quiet cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi

# Largest input per target: frames and bodies are small; an archive needs
# room for a few entries.
declare -A max_len=(
  [frame_msgpack]=4096 [frame_json]=4096 [http_body]=4096 [langsmith_frame]=4096
  [ring]=4096 [files_path]=2048 [untar]=16384
)
if [ $# -gt 0 ]; then targets=("$@"); else
  mapfile -t targets < <(cargo fuzz list --fuzz-dir fuzz); fi

build=(-s none --debug-assertions --codegen-units 16)
start=$SECONDS
cargo fuzz build "${build[@]}" --fuzz-dir fuzz
echo "fuzz: built the targets in $((SECONDS - start)) s"

status=0
summary=()
for t in "${targets[@]}"; do
  work=fuzz/target/corpus/$t
  mkdir -p "$work" "fuzz/corpus/$t" "fuzz/artifacts/$t"
  log=fuzz/target/$t.log
  # The file targets' scratch trees (libFuzzer exits without dropping
  # them) stay under the ignored target directory.
  export TMPDIR=$PWD/fuzz/target/tmp
  rm -rf "$TMPDIR" && mkdir -p "$TMPDIR"
  set +e
  cargo fuzz run "${build[@]}" --fuzz-dir fuzz "$t" "$work" "fuzz/corpus/$t" -- \
    -max_total_time="$seconds" -max_len="${max_len[$t]:-4096}" -rss_limit_mb=2048 \
    -timeout=10 -print_final_stats=1 >"$log" 2>&1
  rc=$?
  set -e
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  line="$t: ${runs:-?} runs in ${seconds} s ($(( ${runs:-0} / (seconds > 0 ? seconds : 1) )) execs/s)"
  if [ "$rc" != 0 ]; then
    status=1
    # The panic and its input, then libFuzzer's own end.
    grep -A 3 -m 3 'panicked at' "$log" || true
    tail -n 25 "$log"
    artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
    line="$line FAILED (exit $rc); artifact: ${artifact:-none, see $log}"
    [ -n "$artifact" ] && line="$line; replay: RUSTC_BOOTSTRAP=1 cargo fuzz run ${build[*]} --fuzz-dir fuzz $t $artifact"
  fi
  echo "fuzz: $line"
  summary+=("$line")
done
echo
printf 'fuzz: %s\n' "${summary[@]}"
failed=$(printf '%s\n' "${summary[@]}" | grep -c FAILED || true)
# Counted in scripts/test-all.sh's total, one test per target.
echo "# pass $(( ${#summary[@]} - failed ))"
echo "# fail $failed"
exit "$status"
