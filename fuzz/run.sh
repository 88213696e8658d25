#!/usr/bin/env bash
# Builds every fuzz target and runs each for SECONDS (default 30) from its committed seeds
# (fuzz/seeds/<target>) plus whatever earlier runs on this machine found (fuzz/corpus/<target>,
# not committed); exits non-zero on the first crash, whose input libFuzzer leaves in
# fuzz/artifacts/<target>/. cargo-fuzz is installed once per machine, outside the clone, keyed
# by its version. Runs on stable Rust: no sanitizer (`-s none`), libFuzzer's coverage only.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-30}"
version=0.13.1
root="$HOME/.cache/mesh/cargo-fuzz-$version"
if [ ! -x "$root/bin/cargo-fuzz" ]; then
    cargo install cargo-fuzz --locked --version "$version" --root "$root"
fi
export PATH="$root/bin:$PATH"
cargo fuzz build -s none
for target in $(cargo fuzz list); do
    mkdir -p "fuzz/corpus/$target"
    echo "fuzz: $target for ${seconds}s"
    log="$(mktemp)"
    status=0
    cargo fuzz run -s none "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log" 2>&1 || status=$?
    # libFuzzer's chatter stays in the log; its verdict, and any crash, are shown.
    grep -E '^(Done|stat::number_of_executed_units|==[0-9]+==|SUMMARY)|panicked' "$log" || true
    if [ "$status" -ne 0 ]; then
        tail -n 40 "$log" >&2
        echo "fuzz: $target failed; the input is in fuzz/artifacts/$target/" >&2
        exit 1
    fi
    rm -f "$log"
done
