#!/usr/bin/env bash
# build-jaeger.sh OUT: a static Jaeger (all-in-one, v2) binary at OUT, built from its Go
# module (go install refuses it: its go.mod has replace directives). Reuses OUT when it
# already exists for the same version. Cold (empty Go build cache) on 2 cores: 3.5 min
# measured here, up to ~11 min reported elsewhere; ~2.3 GB of memory.
set -euo pipefail
out=${1:?usage: build-jaeger.sh OUT}
version=${JAEGER_VERSION:-v1.76.0}
go=${GO:-go}
if [ -x "$out" ] && [ "$(cat "$out.version" 2>/dev/null)" = "$version" ]; then
	echo "jaeger $version: reusing $out"
	exit 0
fi
dir=$("$go" mod download -json "github.com/jaegertracing/jaeger@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -d "$dir" ] || { echo "build-jaeger: module github.com/jaegertracing/jaeger@$version not found" >&2; exit 1; }
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
cp -r "$dir/." "$src/"
chmod -R u+w "$src"
mkdir -p "$(dirname "$out")"
echo "jaeger $version: building from $dir (cold: minutes, ~2.3 GB of memory)"
start=$(date +%s)
(cd "$src" && CGO_ENABLED=0 "$go" build -trimpath -ldflags='-s -w' -o "$out.tmp" ./cmd/jaeger)
mv "$out.tmp" "$out"
echo "$version" >"$out.version"
echo "jaeger $version: built $out in $(( $(date +%s) - start )) s"
