#!/bin/sh
# pick-docker.sh: print the docker client the Makefile uses, or nothing when
# there is none. Every `docker` on PATH is a candidate, in PATH order; the first
# one that builds with its defaults wins: a client with the buildx plugin, or one
# older than 23 (whose default is the classic builder). A client >= 23 without
# buildx refuses to build with BuildKit ("buildx component is missing"), so it is
# only the fallback (the Makefile builds with DOCKER_BUILDKIT=0, which it accepts).
# Here: /usr/local/bin/docker is 28.2 without buildx, /usr/bin/docker is Debian's
# 20.10: the second is chosen.
first=
for d in $(which -a docker 2>/dev/null); do
	[ -x "$d" ] || continue
	[ -n "$first" ] || first=$d
	if "$d" buildx version >/dev/null 2>&1; then
		echo "$d"
		exit 0
	fi
	v=$("$d" --version 2>/dev/null | sed -n 's/^Docker version \([0-9][0-9]*\)\..*/\1/p')
	if [ -n "$v" ] && [ "$v" -lt 23 ]; then
		echo "$d"
		exit 0
	fi
done
echo "$first"
