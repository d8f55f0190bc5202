#!/bin/sh
# Installs the programs deploy/tools.txt pins (nfpm, kubeconform, helm)
# into ${XDG_CACHE_HOME:-~/.cache}/switchboard-test-tools/NAME@VERSION,
# where the tests look for them; a version already there is kept.
set -eu
cd "$(dirname "$0")/.."
cache=${XDG_CACHE_HOME:-$HOME/.cache}/switchboard-test-tools
grep -v '^#' deploy/tools.txt | while read -r pkg version; do
	[ -n "$pkg" ] || continue
	name=${pkg##*/}
	dir=$cache/$name@$version
	if [ ! -x "$dir/$name" ]; then
		echo "install-tools: go install $pkg@$version"
		GOBIN=$dir CGO_ENABLED=0 GOFLAGS= go install "$pkg@$version"
	fi
done
