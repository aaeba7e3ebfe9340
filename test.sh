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

# Issue 21, the servers people run under the preloaded liblinger.so
# (internal/preloadlab, internal/probe's TestPreloadedServers, internal/testbed's
# platform servers; about 90 s of `go test ./...`): gnutls-cli as a client, and
# an OpenJDK with javac, Node.js and Python 3 as servers, each installed only
# when the machine has none of its own.
pkgs+=(gnutls-bin)
# liblinger (preload/): make and cc build it, strace counts its system calls.
pkgs+=(build-essential strace)
command -v javac >/dev/null || pkgs+=(default-jdk-headless)
command -v node >/dev/null || pkgs+=(nodejs)
command -v python3 >/dev/null || pkgs+=(python3)

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

# --- staticcheck, in every module (issue 22). Pinned: 0.8 is the release for
# Go 1.26; it is built through the module proxy into the run's temporary
# directory, so nothing is left installed.
staticcheck_version=v0.8.2
echo "== staticcheck $staticcheck_version: root, ${nested[*]}"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
GOBIN="$out/bin" go install "honnef.co/go/tools/cmd/staticcheck@$staticcheck_version"
"$out/bin/staticcheck" ./...
for m in "${nested[@]}"; do
	(cd "$m" && "$out/bin/staticcheck" ./...)
done

echo "== other systems: vet, which compiles every package and its tests (portable backend, Winsock errors)"
for os in darwin windows freebsd; do
	GOOS=$os GOARCH=amd64 go vet ./...
done

echo "== lab, quick, with its check (loopback; as root also an impaired namespace cell)"
go run ./cmd/linger lab --quick --check --json "$out/lab.json" --html "$out/lab.html"

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

# --- Install routes, exactly as the README shows them (issue 22), from a
# fresh clone of this tree's commit: go install from the clone, the
# README's net/http program in a module of its own that uses the clone by a
# replace, and Caddy built by xcaddy from the clone. "git clone" of the
# repository itself is the one step replaced (by a clone of this tree), so
# that nothing but the module proxy is reached. The xcaddy build costs about
# 15 s with warm caches, several minutes on empty ones.
xcaddy_version=v0.4.5
if git rev-parse --git-dir >/dev/null 2>&1; then
	echo "== install routes from a fresh clone: go install, a replace in your module, xcaddy $xcaddy_version"
	git clone -q "$PWD" "$out/linger"
	(cd "$out/linger" && GOBIN="$out/bin" go install ./cmd/linger)
	"$out/bin/linger" version
	mkdir "$out/app"
	# The README's program: the go block after the "ci: app/main.go" marker.
	awk '/<!-- ci: app\/main.go -->/ {m = 1; next} m && /^```go$/ {g = 1; next} g && /^```$/ {exit} g' README.md >"$out/app/main.go"
	(cd "$out/app" && go mod init example.com/app 2>/dev/null &&
		go mod edit -replace github.com/linger-go/linger=../linger && go mod tidy && go vet . && go build -o /dev/null .)
	GOBIN="$out/bin" go install "github.com/caddyserver/xcaddy/cmd/xcaddy@$xcaddy_version"
	# "|off": where the proxy has no version of linger yet, the go command
	# falls back on the replacement instead of failing (the README says so).
	proxy=$(go env GOPROXY)
	(cd "$out/linger" && GOPROXY="${proxy%,direct}|off" "$out/bin/xcaddy" build \
		--with github.com/linger-go/linger/caddy=./caddy --replace github.com/linger-go/linger=. \
		--output "$out/caddy" >"$out/xcaddy.log" 2>&1) || { cat "$out/xcaddy.log"; exit 1; }
	"$out/caddy" list-modules | grep -x caddy.listeners.linger
else
	echo "== install routes: skipped, not a git clone (they start from one)"
fi

for v in "${other_gos[@]}"; do
	echo "== root module with $v"
	GOTOOLCHAIN=$v go version
	GOTOOLCHAIN=$v go vet ./...
	# The engine and the client side are what lean on crypto/tls, net/http
	# and the runtime's poller; the tools' tests add time, not coverage.
	GOTOOLCHAIN=$v go test -count=1 -timeout 10m . ./alert/
done

# liblinger (preload/), the lingering close preloaded into servers not
# written in Go: its tests (go test ./preload/, in the run below, ~20 s) build
# the plain and the sanitizer library with make and a C test server with cc,
# and count system calls with strace. Built here first so that a compiler
# error shows on its own.
echo "== liblinger: make -C preload"
make -s -C preload

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
