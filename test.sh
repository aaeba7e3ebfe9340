#!/usr/bin/env bash
# Runs linger's tests: the command the README gives and CI runs.
#
# As root on Debian it first installs the packages the tests use (curl and
# openssl as real clients, iproute2 and nftables for network namespaces,
# nginx, haproxy and apache2 as real servers for the probe, which the tests
# start themselves on ports of their own, tcpdump to look at the wire by
# hand, and wrk and h2load (nghttp2-client) as load generators for the
# happy-path benchmark). Tests whose tools or privileges are missing skip with a message
# saying so; the lab's HTML is checked without a browser (chromium, if
# installed, also renders it).
#
# Besides the root module it tests the nested modules (caddy, grpc,
# prometheus: each has its own go.mod so that linger's stays small), and the
# root module with the newest Go release besides the installed one, which the
# go command downloads through the module proxy.
set -euo pipefail
cd "$(dirname "$0")"

pkgs=(curl openssl iproute2 nftables nginx haproxy apache2 tcpdump wrk nghttp2-client)
nested=(caddy grpc prometheus)
# Go releases the root module is tested with besides the installed one: go.mod
# asks for 1.26, the oldest supported, so the newest is the one to add.
other_gos=(go1.27.4)

# apt_get runs apt-get, waiting while another package manager (an unattended
# upgrade, a concurrent install) holds the dpkg or lists lock: up to 5
# minutes in all, saying so, then failing with apt-get's own message.
apt_get() {
	local deadline=$((SECONDS + 300)) out
	while :; do
		if out=$(apt-get "$@" 2>&1); then
			return 0
		fi
		if ! grep -qE 'Could not get lock|Unable to lock|Unable to acquire' <<<"$out" || [ $SECONDS -ge $deadline ]; then
			echo "$out" >&2
			return 1
		fi
		echo "== another package manager holds the lock; waiting ($((deadline - SECONDS)) s left of 5 min)"
		sleep 5
	done
}
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
	missing=()
	for p in "${pkgs[@]}"; do
		# dpkg -s also succeeds for a removed package whose config files remain.
		[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || missing+=("$p")
	done
	if [ ${#missing[@]} -gt 0 ]; then
		echo "== installing ${missing[*]}"
		apt_get update -qq
		DEBIAN_FRONTEND=noninteractive apt_get install -y -qq --no-install-recommends "${missing[@]}"
	fi
else
	echo "== not root: skipping package installation; namespace tests will skip"
fi

echo "== go vet"
go vet ./...

echo "== other systems: vet, which compiles every package and its tests (portable backend, Winsock errors)"
for os in darwin windows freebsd; do
	GOOS=$os GOARCH=amd64 go vet ./...
done

echo "== lab, quick, with its check (loopback; as root also an impaired namespace cell)"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
go run ./cmd/linger lab --quick --check --json "$out/lab.json" --html "$out/lab.html" | tail -n 40

echo "== benchmarks, smoke size (BENCHMARKS.md has the full-size commands)"
go test -run '^$' -bench . -benchtime 1x . | tail -n 3
# The whole output only on a failure: the tables say which invariant broke.
if ! go run ./cmd/linger bench -smoke all > "$out/bench.txt" 2>&1; then
	cat "$out/bench.txt"
	exit 1
fi
tail -n 8 "$out/bench.txt"

echo "== nested modules: ${nested[*]} (caddy's test builds a Caddy: minutes on a cold build cache)"
for m in "${nested[@]}"; do
	(cd "$m" && go vet ./... && go test -count=1 -timeout 15m ./...)
done

for v in "${other_gos[@]}"; do
	echo "== root module with $v"
	GOTOOLCHAIN=$v go version
	GOTOOLCHAIN=$v go vet ./...
	# The engine and the client side are what lean on crypto/tls, net/http
	# and the runtime's poller; the tools' tests add time, not coverage.
	GOTOOLCHAIN=$v go test -count=1 -timeout 10m . ./alert/
done

echo "== tests"
go test -count=1 -timeout 10m ./...

# linger watch: internal/watch's tests run above under "== tests"
# (about 50 s as root: Go, nginx, HAProxy, Apache driven by the probe and by
# curl, the impaired namespace path, wrk and h2load, each checked against
# testbed's own RST capture). Here the watcher under the race detector: its
# reader and Snapshot share the tracker.
echo "== linger watch under the race detector"
go test -count=1 -race -timeout 5m -run 'TestTracker|TestFilter|TestParseSegment|TestGoServers' ./internal/watch

echo "== race detector on the engine"
go test -count=1 -race -timeout 5m .

echo "== the engine on one CPU, and on its portable backend"
GOMAXPROCS=1 go test -count=1 -timeout 5m .
LINGER_BACKEND=portable go test -count=1 -timeout 5m .
