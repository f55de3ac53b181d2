#!/usr/bin/env bash
# build-prometheus.sh OUT: a static Prometheus server binary at OUT, compiled from the
# github.com/prometheus/prometheus module on the Go module proxy (Debian's
# /usr/bin/prometheus is dynamically linked, so it cannot go into a FROM scratch
# image). Built without the builtinassets tag: no web UI pages, the HTTP API (which is
# all the stack and its drills use) is complete. OUT is reused when it was built from
# the same version.
set -euo pipefail
out=$(realpath -m "${1:?usage: build-prometheus.sh OUT}")
version=${PROMETHEUS_VERSION:-v0.316.0}
go=${GO:-go}
if [ -x "$out" ] && [ "$(cat "$out.version" 2>/dev/null)" = "$version" ]; then
	echo "prometheus $version: reusing $out"
	exit 0
fi
dir=$(GOFLAGS=-mod=mod "$go" mod download -json "github.com/prometheus/prometheus@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -d "$dir" ] || { echo "build-prometheus: module github.com/prometheus/prometheus@$version not found" >&2; exit 1; }
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
cp -r "$dir/." "$src/"
chmod -R u+w "$src"
mkdir -p "$(dirname "$out")"
echo "prometheus $version: building from $dir (cold: minutes)"
start=$(date +%s)
(cd "$src" && GOWORK=off CGO_ENABLED=0 "$go" build -trimpath -ldflags='-s -w' -o "$out.tmp" ./cmd/prometheus)
mv "$out.tmp" "$out"
echo "$version" >"$out.version"
echo "prometheus $version: built $out in $(( $(date +%s) - start )) s"
