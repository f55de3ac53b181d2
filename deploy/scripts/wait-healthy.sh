#!/bin/sh
# wait-healthy.sh DOCKER PROJECT [TIMEOUT_SECONDS]: wait until every container of
# the compose project is healthy (or running, for those without a health check).
# Exits 1 naming the laggards, with the tail of their logs, after the timeout or
# as soon as one has exited or turned unhealthy.
docker=${1:?usage: wait-healthy.sh DOCKER PROJECT [TIMEOUT]}
project=${2:?usage: wait-healthy.sh DOCKER PROJECT [TIMEOUT]}
timeout=${3:-240}
start=$(date +%s)
while :; do
	names=$("$docker" ps -a --filter "label=com.docker.compose.project=$project" --format '{{.Names}}')
	[ -n "$names" ] || { echo "wait-healthy: no container of project $project" >&2; exit 1; }
	waiting= failed=
	for n in $names; do
		st=$("$docker" inspect --format '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$n")
		case $st in
		healthy | running) ;;
		unhealthy | exited | dead) failed="$failed $n($st)" ;;
		*) waiting="$waiting $n($st)" ;;
		esac
	done
	elapsed=$(( $(date +%s) - start ))
	if [ -z "$waiting$failed" ]; then
		echo "stack $project: $(echo $names | wc -w) containers healthy after ${elapsed} s"
		exit 0
	fi
	if [ -n "$failed" ] || [ "$elapsed" -ge "$timeout" ]; then
		echo "stack $project not healthy after ${elapsed} s:$failed$waiting" >&2
		for n in $failed $waiting; do
			c=${n%%(*}
			echo "--- $c" >&2
			"$docker" logs --tail 15 "$c" 2>&1 | sed 's/^/    /' >&2
		done
		exit 1
	fi
	sleep 1
done
