#!/usr/bin/env bash
# Reproduces web/static/vendor/ from npm: the browser libraries the web UI
# loads as plain ES modules (no bundler), at exact pinned versions, and
# records each file's version and sha256 in web/static/vendor/VERSIONS.
#
#   scripts/vendor-web.sh           fetch, copy, write VERSIONS
#   scripts/vendor-web.sh --check   fetch and compare with what is committed
#
# Needs npm (the registry is only asked for these exact versions).
set -euo pipefail
cd "$(dirname "$0")/.."

MARKED=18.2.1
DOMPURIFY=3.5.0
HLJS=11.12.0 # @highlightjs/cdn-assets: highlight.js's prebuilt ES modules
XTERM=6.0.0      # @xterm/xterm: the terminal (web/static/js/terminal.js)
XTERM_FIT=0.11.0 # @xterm/addon-fit: sizes it to its element
# highlight.js grammars the UI registers (web/static/js/highlight.js imports
# exactly these).
HLJS_LANGS=(bash c cpp css diff dockerfile go ini java javascript json makefile markdown
	plaintext python rust shell sql typescript xml yaml)

check=0
[ "${1:-}" = "--check" ] && check=1

dest=web/static/vendor
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

fetch() { # name version -> unpacked directory
	local name=$1 version=$2 dir
	dir="$work/$(echo "$name" | tr '/@' '__')"
	mkdir -p "$dir"
	(cd "$dir" && npm pack --silent "$name@$version" >/dev/null)
	tar -xzf "$dir"/*.tgz -C "$dir"
	echo "$dir/package"
}

out="$work/out"
mkdir -p "$out/marked" "$out/dompurify" "$out/highlight/languages" "$out/xterm" "$out/xterm-addon-fit"

m=$(fetch marked "$MARKED")
cp "$m/lib/marked.esm.js" "$out/marked/marked.esm.js"
cp "$m/LICENSE" "$out/marked/LICENSE"

d=$(fetch dompurify "$DOMPURIFY")
cp "$d/dist/purify.es.mjs" "$out/dompurify/purify.es.mjs"
cp "$d/LICENSE" "$out/dompurify/LICENSE"

h=$(fetch @highlightjs/cdn-assets "$HLJS")
cp "$h/es/core.min.js" "$out/highlight/core.min.js"
cp "$h/LICENSE" "$out/highlight/LICENSE"
for lang in "${HLJS_LANGS[@]}"; do
	cp "$h/es/languages/$lang.min.js" "$out/highlight/languages/$lang.min.js"
done
x=$(fetch @xterm/xterm "$XTERM")
cp "$x/lib/xterm.mjs" "$out/xterm/xterm.mjs"
cp "$x/css/xterm.css" "$out/xterm/xterm.css"
cp "$x/LICENSE" "$out/xterm/LICENSE"

xf=$(fetch @xterm/addon-fit "$XTERM_FIT")
cp "$xf/lib/addon-fit.mjs" "$out/xterm-addon-fit/addon-fit.mjs"
cp "$xf/LICENSE" "$out/xterm-addon-fit/LICENSE"

# The source maps they point at are not shipped; drop the comments so
# browsers do not ask for them.
sed -i '/^\/\/# sourceMappingURL=/d' "$out/marked/marked.esm.js" "$out/dompurify/purify.es.mjs" \
	"$out/xterm/xterm.mjs" "$out/xterm-addon-fit/addon-fit.mjs"

{
	echo "# Vendored browser libraries, written by scripts/vendor-web.sh; do not edit."
	echo "# package version file sha256"
	(cd "$out" && find . -type f ! -name LICENSE ! -name VERSIONS | sort | while read -r f; do
		f=${f#./}
		case $f in
		marked/*) pkg="marked $MARKED" ;;
		dompurify/*) pkg="dompurify $DOMPURIFY" ;;
		highlight/*) pkg="@highlightjs/cdn-assets $HLJS" ;;
		xterm/*) pkg="@xterm/xterm $XTERM" ;;
		xterm-addon-fit/*) pkg="@xterm/addon-fit $XTERM_FIT" ;;
		esac
		echo "$pkg $f $(sha256sum "$f" | cut -d' ' -f1)"
	done)
} >"$out/VERSIONS"

if [ $check -eq 1 ]; then
	if diff -r "$out" "$dest"; then
		echo "vendor-web: $dest matches npm"
	else
		echo "vendor-web: $dest differs from what npm serves for the pinned versions" >&2
		exit 1
	fi
	exit 0
fi

rm -rf "$dest"
mkdir -p "$(dirname "$dest")"
cp -r "$out" "$dest"
echo "vendor-web: wrote $dest"
cat "$dest/VERSIONS"
