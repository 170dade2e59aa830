#!/usr/bin/env bash
# Builds the faultline binary that the image and the systemd install ship, and prints its
# path on the last line:
#
#   deploy/build-binary.sh            # target/<arch>-unknown-linux-gnu/release/faultline
#
# - static (`+crt-static`): no shared libraries, so a FROM scratch image can run it and no
#   page of libc, libm, libgcc_s or the dynamic loader is mapped besides the few it calls;
# - not position-independent (`relocation-model=static`): its read-only data needs no
#   relocation at start, so those pages stay clean file pages the kernel can reclaim instead
#   of 1.6 MiB of private memory;
# - the code a steady collection cycle runs laid out together (`agent/hot-sections.txt`, gold's
#   `--section-ordering-file`; regenerate with `benches/hot_sections.py`), so that the kernel's
#   fault-around maps few pages beside it.
# docs/adr/0022-shipped-binary-layout.md gives the measurements and what is traded (no ASLR of
# the executable's own image).
#
# Environment: CARGO_TARGET_DIR is honoured; PROFILE=release (default) or another cargo profile.
# PROFILE=dev (the test suite's, through build-local.sh) passes the flags to the final crate
# alone (`cargo rustc`), so the dependencies the suite already built are reused instead of every
# one being built again for the target triple (minutes of CI); its dependencies stay
# position-independent code, which links into the fixed-address binary all the same. The result
# replaces target/debug/faultline until the next plain build relinks it.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=${PROFILE:-release}
triple="$(uname -m)-unknown-linux-gnu"
target_dir=${CARGO_TARGET_DIR:-target}
flags="-C target-feature=+crt-static -C relocation-model=static"
if cc -fuse-ld=gold -Wl,--version 2>/dev/null | grep -q 'GNU gold'; then
  flags="$flags -C link-arg=-fuse-ld=gold -C link-arg=-Wl,--section-ordering-file=$PWD/agent/hot-sections.txt"
else
  echo "warning: no ld.gold (Debian: binutils): built without the hot-code layout, which leaves ~2 MiB more of the binary resident" >&2
fi
# The ordering file is an argument to the linker, which cargo does not track: a newer file than
# the last binary relinks it (through the binary crate's own source).
last="$target_dir/$triple/$profile/faultline"
[ "$profile" = dev ] && last="$target_dir/debug/faultline"
if [ -e "$last" ] && [ agent/hot-sections.txt -nt "$last" ]; then
  touch agent/src/main.rs
fi
echo "== building the shipped faultline binary ($profile, $triple, static)" >&2
if [ "$profile" = dev ]; then
  # shellcheck disable=SC2086 # the flags are words
  cargo rustc --locked --profile dev -p faultline-agent --bin faultline -- $flags >&2
  echo "$target_dir/debug/faultline"
else
  RUSTFLAGS="$flags" cargo build --locked --profile "$profile" -p faultline-agent --bin faultline --target "$triple" >&2
  echo "$target_dir/$triple/$profile/faultline"
fi
