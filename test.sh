#!/usr/bin/env bash
# Runs linger's tests: the command the README gives and CI runs.
#
# As root on Debian it first installs the packages the tests use (curl and
# openssl as real clients, iproute2 and nftables for network namespaces).
# Tests whose tools or privileges are missing skip with a message saying so;
# the lab's HTML is checked without a browser (chromium, if installed,
# also renders it).
#
# Besides the root module it tests the nested modules (caddy, grpc,
# prometheus: each has its own go.mod so that linger's stays small), and the
# root module with the oldest Go release it supports and with the newest
# release, which the go command downloads through the module proxy.
set -euo pipefail
cd "$(dirname "$0")"

pkgs=(curl openssl iproute2 nftables)
nested=(caddy grpc prometheus)
# Go releases the root module is tested with besides the installed one: the
# oldest that go.mod's go directive allows, and the newest.
other_gos=(go1.25.14 go1.27.4)
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
	missing=()
	for p in "${pkgs[@]}"; do
		# dpkg -s also succeeds for a removed package whose config files remain.
		[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || missing+=("$p")
	done
	if [ ${#missing[@]} -gt 0 ]; then
		echo "== installing ${missing[*]}"
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	fi
else
	echo "== not root: skipping package installation; namespace tests will skip"
fi

echo "== go vet"
go vet ./...

echo "== other systems build (portable backend)"
for os in darwin windows freebsd; do
	GOOS=$os GOARCH=amd64 go build ./...
done

echo "== lab, quick, with its check (loopback; as root also an impaired namespace cell)"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
go run ./cmd/linger lab --quick --check --json "$out/lab.json" --html "$out/lab.html" | tail -n 40

echo "== benchmarks, smoke size (BENCHMARKS.md has the full-size commands)"
go test -run '^$' -bench . -benchtime 1x . | tail -n 3
go run ./cmd/linger bench -smoke all | tail -n 8

echo "== nested modules: ${nested[*]} (caddy's test builds a Caddy: minutes on a cold build cache)"
for m in "${nested[@]}"; do
	(cd "$m" && go vet ./... && go test -count=1 -timeout 15m ./...)
done

for v in "${other_gos[@]}"; do
	echo "== root module with $v"
	GOTOOLCHAIN=$v go version
	GOTOOLCHAIN=$v go vet ./...
	GOTOOLCHAIN=$v go test -count=1 -timeout 10m ./...
done

echo "== tests"
go test -count=1 -timeout 10m ./...

echo "== race detector on the engine"
go test -count=1 -race -timeout 5m .
