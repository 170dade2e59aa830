#!/usr/bin/env bash
# Builds every fuzz target and runs each for a bounded time; fails on any crash.
#
#   tests/fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]
#
# SECONDS_PER_TARGET defaults to 60 (CI's figure: a minute per target); run longer by hand.
# With TARGET names only those run. FUZZ_JOBS targets run at once (default: the number of
# cores), each a single libFuzzer process, so 12 targets of 60 s take ~6 min on 2 cores. Needs cargo-fuzz (`cargo install cargo-fuzz --locked`); the stable
# toolchain is made to accept cargo-fuzz's -Z flags with RUSTC_BOOTSTRAP=1.
#
# Everything generated stays under target/fuzz/ (build output, the growing corpus, crash
# artifacts): the seed corpus is copied from agent/tests/fixtures/ and tests/fuzz/seeds/
# on every run. A crash leaves its input in target/fuzz/artifacts/<target>/; reproduce it
# with `RUSTC_BOOTSTRAP=1 cargo fuzz run --dev --fuzz-dir tests/fuzz <target> <file>` and
# turn it into a regression test next to the parser.
set -euo pipefail

secs="${1:-60}"
jobs="${FUZZ_JOBS:-$(nproc)}"
shift || true
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="$root/target/fuzz"
fixtures="$root/agent/tests/fixtures"
export RUSTC_BOOTSTRAP=1

command -v cargo-fuzz >/dev/null || {
    echo "cargo-fuzz is not installed: cargo install cargo-fuzz --locked" >&2
    exit 1
}

# Seeds per target: directories of real inputs (recursively) under the fixtures, plus the
# hand-written ones in seeds/<target>/.
seed_dirs() {
    case "$1" in
    host_proc) echo "$fixtures/real/proc $fixtures/many-cpus $fixtures/no-pressure $fixtures/no-swap $fixtures/spaces" ;;
    cgroup) echo "$fixtures/cgroup-v1 $fixtures/cgroup-v2 $fixtures/cgroup-hybrid" ;;
    backup_output) echo "$fixtures/backup" ;;
    *) echo "" ;;
    esac
}

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cd "$here" && cargo fuzz list --fuzz-dir "$here")
fi

echo "== building ${#targets[@]} fuzz targets"
start=$(date +%s)
cargo fuzz build --dev --fuzz-dir "$here" --target-dir "$out"
echo "   built in $(($(date +%s) - start)) s"

bin_dir="$out/x86_64-unknown-linux-gnu/debug"

# One target: seed its corpus, fuzz it for $secs, leave "ok" or "crashed" in its status file.
fuzz_one() {
    local t="$1" corpus="$out/corpus/$1" artifacts="$out/artifacts/$1"
    mkdir -p "$corpus" "$artifacts"
    for d in $(seed_dirs "$t") "$here/seeds/$t"; do
        [ -d "$d" ] || continue
        # Flattened copies named by content: the same seed is never added twice.
        find "$d" -type f -size -1024k -print0 | while IFS= read -r -d '' f; do
            cp "$f" "$corpus/seed-$(sha1sum "$f" | cut -c1-16)"
        done
    done
    echo "== $t: ${secs}s, $(find "$corpus" -type f | wc -l) inputs in the corpus"
    # -timeout: one input taking over 10 s is a hang; -rss_limit_mb bounds a runaway
    # allocation; -max_len lets whole /proc files through.
    if "$bin_dir/$t" "$corpus" \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -artifact_prefix="$artifacts/" -print_final_stats=1 \
        >"$out/$t.log" 2>&1; then
        echo ok >"$out/$t.status"
        echo "   $t: $(grep -E '^stat::number_of_executed_units|^stat::peak_rss_mb' "$out/$t.log" | tr '\n' ' ')"
    else
        echo crashed >"$out/$t.status"
    fi
}

# At most $jobs at once; each job's lines are whole, so parallel output stays readable.
start=$(date +%s)
for t in "${targets[@]}"; do
    rm -f "$out/$t.status"
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
    fuzz_one "$t" &
done
wait

failed=()
for t in "${targets[@]}"; do
    if [ "$(cat "$out/$t.status" 2>/dev/null)" != ok ]; then
        failed+=("$t")
        echo "!! $t crashed (or did not finish); last lines of $out/$t.log:" >&2
        tail -40 "$out/$t.log" >&2 || true
    fi
done
echo "   fuzzed ${#targets[@]} targets, $jobs at a time, in $(($(date +%s) - start)) s"

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzzing found crashes in: ${failed[*]} (inputs in $out/artifacts/)" >&2
    exit 1
fi
echo "== no crashes in ${#targets[@]} targets (${secs}s each)"
