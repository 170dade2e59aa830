#!/usr/bin/env bash
# Builds the faultline image without pulling anything: the static binary comes from the
# local Rust toolchain (deploy/build-binary.sh), the image is FROM scratch (deploy/docker/Dockerfile.local).
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
ca_bundle=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}

# The shipped binary (static, not position-independent, hot code laid out together: ADR 0022).
bin=$(deploy/build-binary.sh | tail -n1)
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
