#!/usr/bin/env bash
# perf_happy.sh: what the happy path's server does per request, plain and
# through linger.Listener, counted by perf stat around the server process
# alone ("linger bench happyserver"), while wrk loads it with
# "Connection: close" (every connection closed by the server, so every one
# lingers). Each round runs plain, linger, linger, plain, so that a shared
# machine's load falls on both alike; compare the modes within a round.
#
#   go build -o /tmp/linger ./cmd/linger
#   internal/bench/perf_happy.sh /tmp/linger 6 3            # rounds, seconds per measurement
#   internal/bench/perf_happy.sh /tmp/linger 6 3 -c16 -t1   # wrk's flags (these are the default)
#
# Prints CSV: wrk's requests and requests/s and p99, then per request the
# server's task-clock (CPU), context switches and system calls (perf
# counts from when the server listens to a second after wrk ends, when
# the last connections have closed), and how the connections ended. Needs perf
# (Debian: linux-perf), wrk, and permission to count (root, or
# kernel.perf_event_paranoid <= 1 for raw_syscalls).
set -euo pipefail
bin=$1 rounds=$2 d=$3
shift 3
wrkflags=("$@")
[ ${#wrkflags[@]} -gt 0 ] || wrkflags=(-c16 -t1)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "round,mode,requests,requests_per_s,p99,cpu_us_per_req,context_switches_per_req,syscalls_per_req,outcomes"
for r in $(seq "$rounds"); do
	for mode in plain linger linger plain; do
		# The server serves until its stdin, a FIFO held open here, closes.
		rm -f "$tmp/in" && mkfifo "$tmp/in"
		"$bin" bench happyserver -mode "$mode" <"$tmp/in" >"$tmp/srv" &
		srvpid=$!
		exec {hold}>"$tmp/in"
		for _ in $(seq 100); do [ -s "$tmp/srv" ] && break; sleep 0.05; done
		read -r url pid <"$tmp/srv"
		perf stat -x, -e task-clock,context-switches,raw_syscalls:sys_enter -p "$pid" -o "$tmp/perf" -- sleep $((d + 1)) &
		perfpid=$!
		out=$(wrk "${wrkflags[@]}" -d"${d}s" --latency -H "Connection: close" "$url")
		wait "$perfpid"
		exec {hold}>&-
		wait "$srvpid"
		outcomes=$(sed -n 's/^outcomes: //p' "$tmp/srv" | tr ' ' ';')
		req=$(awk '/requests in/ {print $1}' <<<"$out")
		rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
		p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
		awk -F, -v r="$r" -v m="$mode" -v req="$req" -v rps="$rps" -v p99="$p99" -v oc="$outcomes" '
			$3 == "task-clock" { tc = $1 }
			$3 == "context-switches" { cs = $1 }
			$3 == "raw_syscalls:sys_enter" { sc = $1 }
			END { printf "%s,%s,%d,%.0f,%s,%.1f,%.2f,%.1f,%s\n", r, m, req, rps, p99, tc * 1000 / req, cs / req, sc / req, oc }' "$tmp/perf"
	done
done
