#!/usr/bin/env bash
# Runs every test of rbypass: unit and integration tests (the namespace and
# TAP tests need root; without it they say "skipped" and pass), a bounded
# fuzzing run of the receive path, and the demo (the main job) as a test.
#
#   scripts/test.sh            everything
#   FUZZ_SECONDS=0 scripts/test.sh   skip fuzzing
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_SECONDS="${FUZZ_SECONDS:-45}"

if [[ "$FUZZ_SECONDS" != 0 ]]; then
    if cargo fuzz --version >/dev/null 2>&1; then
        for target in rx_path tcp_input; do
            echo "== fuzzing $target for ${FUZZ_SECONDS}s"
            # cargo-fuzz needs nightly flags; the stable toolchain accepts them with RUSTC_BOOTSTRAP.
            (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" --sanitizer none -- \
                -max_total_time="$FUZZ_SECONDS" -max_len=2048 -rss_limit_mb=2048 -print_final_stats=1 2>&1 | tail -n 6)
        done
    else
        echo "== fuzzing skipped: cargo-fuzz is not installed (cargo install cargo-fuzz; CI installs it)"
    fi
fi

echo "== cargo build --release (the CLI and librbypass.so, which tests/preload.rs runs)"
cargo build --release 2>&1 | grep -vE '^\s+(Compiling|Checking|Downloaded|Downloading) ' || true

echo "== cargo test (release, one build for tests, benches' code and the CLI)"
log="$(mktemp)"
status=0
cargo test --release --workspace --all-targets >"$log" 2>&1 || status=$?
grep -vE '^\s+(Compiling|Checking|Downloaded|Downloading) ' "$log" || true
grep -E '^test result' "$log" | awk '{p+=$4; f+=$6} END {printf "total: %d passed, %d failed\n", p, f}'
rm -f "$log"
exit "$status"
