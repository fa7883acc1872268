#!/usr/bin/env bash
# Builds the fuzz targets and runs each for a bounded time.
#
#   bash fuzz/run.sh [seconds-per-target] [target ...]
#
# Default: 15 s for each of signature, form, normalise, config and accepted
# (about 75 s of fuzzing, plus the build: about 6 minutes the first time on a
# 2-core machine, seconds after that). Exits non-zero when any target
# crashes, fails one of its assertions, runs out of memory or hangs on one
# input; the failing input is kept under fuzz/artifacts/<target>/ and
# printed in base64 in the log, so a CI failure can be reproduced locally:
#
#   echo '<base64>' | base64 -d > crash && cargo fuzz run <target> crash
#
# cargo-fuzz drives libFuzzer and passes rustc flags that only nightly
# accepts (-Zsanitizer=address, the sanitizer-coverage passes). Only the
# stable toolchain is installed here, so RUSTC_BOOTSTRAP=1 lets stable
# rustc accept them; nothing else about the build changes.
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-15}"
shift || true
if [ "$#" -gt 0 ]; then targets=("$@"); else targets=(signature form normalise config accepted); fi

export RUSTC_BOOTSTRAP=1
# Its own directory beside the main build's: instrumented artifacts never
# mix with the test build, and CI on the same machine reuses both.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hookrelay-target}/fuzz"

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz"
  cargo install cargo-fuzz --locked --version '^0.13'
fi

echo "fuzz: building ${targets[*]} (target dir $CARGO_TARGET_DIR)"
# Every target of fuzz/Cargo.toml at once: one build shares the
# instrumented hookrelay library, where one build per target would not.
cargo fuzz build

failed=()
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  args=(-max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1)
  if [ -f "fuzz/dict/$t.dict" ]; then args+=(-dict="fuzz/dict/$t.dict"); fi
  log="$(mktemp)"
  # The first corpus directory collects what this run finds (gitignored);
  # the committed seeds are read only.
  if cargo fuzz run "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- "${args[@]}" >"$log" 2>&1; then
    runs="$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\1 inputs in \2 s/p' "$log" | tail -1)"
    cov="$(grep -o 'cov: [0-9]*' "$log" | tail -1 || true)"
    echo "fuzz: $t ok (${runs:-?}, ${cov:-cov: ?}, corpus $(find "fuzz/corpus/$t" -type f | wc -l) files)"
  else
    failed+=("$t")
    echo "fuzz: $t FAILED; the end of its log:"
    grep -v '^#[0-9]' "$log" | tail -60
  fi
  rm -f "$log"
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz: failing targets: ${failed[*]} (inputs in fuzz/artifacts/)"
  exit 1
fi
echo "fuzz: ${#targets[@]} targets ran ${secs} s each without a failure"
