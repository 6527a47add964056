#!/usr/bin/env bash
# fetch_npm.sh PKG VERSION SHA256 DEST: `npm pack`s PKG@VERSION into
# var/cache/npm (reused when present), checks the tarball against the pinned
# sha256 and extracts it into DEST (its package/ folder becomes DEST).  For
# test tools without dependencies (the OpenAI Node SDK); the tokenizer data
# has its own script (scripts/fetch_tokenizer.sh).
set -euo pipefail
[ $# -eq 4 ] || { echo "usage: fetch_npm.sh PKG VERSION SHA256 DEST" >&2; exit 2; }
pkg=$1 version=$2 want=$3 dest=$4
prog=fetch_npm
root=$(cd "$(dirname "$0")/.." && pwd)
cache="$root/var/cache/npm"
tarball="$(echo "${pkg#@}" | tr / -)-$version.tgz"
sha() { sha256sum "$1" | cut -d' ' -f1; }

mkdir -p "$cache"
if [ -f "$cache/$tarball" ] && [ "$(sha "$cache/$tarball")" != "$want" ]; then
	echo "$prog: cached \"$cache/$tarball\" has a wrong sha256, fetching again" >&2
	rm -f "$cache/$tarball"
fi
if [ ! -f "$cache/$tarball" ]; then
	command -v npm >/dev/null || { echo "$prog: npm is needed (scripts/deps.sh installs it)" >&2; exit 1; }
	tmp=$(mktemp -d "$cache/.pack.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	(cd "$tmp" && npm pack --silent --ignore-scripts "$pkg@$version" >/dev/null)
	[ -f "$tmp/$tarball" ] || { echo "$prog: npm pack gave no \"$tarball\"" >&2; exit 1; }
	got=$(sha "$tmp/$tarball")
	if [ "$got" != "$want" ]; then
		echo "$prog: sha256 of \"$tarball\" is $got, want $want" >&2
		exit 1
	fi
	mv "$tmp/$tarball" "$cache/$tarball"
	rm -rf "$tmp"
	trap - EXIT
fi
rm -rf "$dest.tmp"
mkdir -p "$dest.tmp"
tar -xzf "$cache/$tarball" -C "$dest.tmp"
rm -rf "$dest"
mv "$dest.tmp/package" "$dest"
rm -rf "$dest.tmp"
echo "$prog: $dest ready ($pkg@$version)" >&2
