#!/usr/bin/env bash
# Builds the faultline image without pulling anything: the static binary comes from the
# local Rust toolchain, the image is FROM scratch (deploy/docker/Dockerfile.local).
#
#   deploy/docker/build-local.sh [TAG]        # default tag: faultline:<crate version>
#
# Environment: CARGO_TARGET_DIR is honoured; PROFILE=release (default) or another cargo
# profile; CA_BUNDLE overrides the CA certificates copied into the image
# (default /etc/ssl/certs/ca-certificates.crt). Prints the image ID on the last line.
set -euo pipefail
cd "$(dirname "$0")/../.."

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
tag=${1:-faultline:${version}}
profile=${PROFILE:-release}
triple="$(uname -m)-unknown-linux-gnu"
target_dir=${CARGO_TARGET_DIR:-target}
ca_bundle=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}

echo "== building the static faultline binary ($profile, $triple)" >&2
if [ "$profile" = dev ]; then
  # The test suite's profile: only the final link is static (`cargo rustc` passes the flag to
  # the binary alone), so the dependencies the suite already built are reused instead of
  # every one being built again for the target triple (minutes of CI). The result replaces
  # target/debug/faultline until the next plain build relinks it.
  cargo rustc --locked --profile dev -p faultline-agent --bin faultline \
    -- -C target-feature=+crt-static >&2
  bin="$target_dir/debug/faultline"
else
  RUSTFLAGS='-C target-feature=+crt-static' \
    cargo build --locked --profile "$profile" -p faultline-agent --bin faultline --target "$triple" >&2
  bin="$target_dir/$triple/$profile/faultline"
fi
# A FROM scratch image has no dynamic loader: refuse a binary that needs one.
if readelf -l "$bin" 2>/dev/null | grep -q 'Requesting program interpreter'; then
  echo "error: $bin is dynamically linked; the image needs a static binary" >&2
  exit 1
fi
[ -r "$ca_bundle" ] || { echo "error: CA bundle $ca_bundle not readable (set CA_BUNDLE)" >&2; exit 1; }

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "$bin" "$ctx/faultline"
cp "$ca_bundle" "$ctx/ca-certificates.crt"
cp deploy/docker/Dockerfile.local "$ctx/Dockerfile"

echo "== docker build -t $tag (FROM scratch)" >&2
# The classic builder: no buildx plugin, no registry.
DOCKER_BUILDKIT=0 docker build -q -t "$tag" "$ctx"
