#!/usr/bin/env bash
# Builds one server that the tests need from its tools module into bin/,
# printing a progress line every 100 packages so a long cold build is not
# silent. Usage: build-tool.sh MODULE_DIR OUTPUT PACKAGE [LDFLAGS]
#   build-tool.sh tools/kube bin/kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver '-X …'
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 3 ]; then
	echo "usage: $0 MODULE_DIR OUTPUT PACKAGE [LDFLAGS]" >&2
	exit 2
fi
dir=$1 out=$2 pkg=$3 ldflags=${4:-}
name=$(basename "$out")

echo "$name: building $pkg from $dir/go.mod (cold builds take minutes; see docs/scaling-loop.md)"
start=$(date +%s)
mkdir -p "$(dirname "$out")"
tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT
# go build -v names each package as it compiles it; count those lines and
# pass everything else (errors) through.
CGO_ENABLED=0 ${GO:-go} build -C "$dir" -v -trimpath -ldflags "-s -w $ldflags" -o "$PWD/$tmp" "$pkg" 2>&1 |
	awk -v name="$name" -v start="$start" '
		/^[A-Za-z0-9._~\/-]+$/ {
			n++
			if (n % 100 == 0) {
				"date +%s" | getline now; close("date +%s")
				printf "%s: %d packages compiled, %ds\n", name, n, now - start
				fflush()
			}
			next
		}
		{ print; fflush() }
	'
mv "$tmp" "$out"
echo "$name: built $out in $(( $(date +%s) - start ))s"
