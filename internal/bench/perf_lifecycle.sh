#!/usr/bin/env bash
# perf_lifecycle.sh: per-connection CPU, context switches and system calls of
# the engine's lifecycle benchmarks (bench_test.go), counted by perf stat
# around whole test binaries, modes and binaries interleaved round by round
# so that a shared machine's load falls on all of them alike.
#
#   go test -c -o /tmp/new.test .          # and, to compare, an older build as /tmp/old.test
#   internal/bench/perf_lifecycle.sh BenchmarkLifecycle "naive loop loop-busy" 5 5000 /tmp/new.test [/tmp/old.test]
#   internal/bench/perf_lifecycle.sh BenchmarkLifecycleServing "naive loop" 5 5000 /tmp/new.test
#   # 16 clients at once, unpaced, releases that wake nobody:
#   internal/bench/perf_lifecycle.sh BenchmarkLifecycleConcurrent "naive loop" 5 5000 /tmp/new.test
#   # a peer that closed, or reset, before the server's close (net/http's Connection: close, wrk):
#   internal/bench/perf_lifecycle.sh BenchmarkLifecycleServing "naive-peerclosed loop-peerclosed naive-peerreset loop-peerreset" 5 5000 /tmp/new.test
#
# A mode's ratio against naive is meaningful within one round only: compare
# loop with naive, loop-peerclosed with naive-peerclosed, and so on.
#
# Prints CSV: per connection, the benchmark's own cpu-ns/op (whole process,
# both ends) and perf's task-clock, context switches and system calls, the
# last three including the test binary's start-up (a few ms in all). Needs
# perf (Debian: linux-perf) and permission to count (root, or
# kernel.perf_event_paranoid <= 1 for raw_syscalls).
set -euo pipefail
bench=$1 modes=$2 rounds=$3 n=$4
shift 4
echo "round,binary,mode,n,cpu_us,task_clock_us,context_switches,syscalls"
for r in $(seq "$rounds"); do
	for bin in "$@"; do
		for mode in $modes; do
			out=$(perf stat -x, -e task-clock,context-switches,raw_syscalls:sys_enter \
				"$bin" -test.run '^$' -test.bench "^$bench\$/^$mode\$" -test.benchtime "${n}x" 2>&1)
			awk -F, -v r="$r" -v b="$bin" -v m="$mode" -v n="$n" '
				/^Benchmark/ { split($0, f, /[ \t]+/); for (i in f) if (f[i] == "cpu-ns/op") cpu = f[i-1] }
				$3 == "task-clock" { tc = $1 }
				$3 == "context-switches" { cs = $1 }
				$3 == "raw_syscalls:sys_enter" { sc = $1 }
				END { printf "%s,%s,%s,%d,%.1f,%.1f,%.2f,%.1f\n", r, b, m, n, cpu/1000, tc*1000/n, cs/n, sc/n }' <<<"$out"
		done
	done
done
