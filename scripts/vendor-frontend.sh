#!/usr/bin/env bash
# Re-vendor the front-end files served by crmflow (no CDN at run time, no build chain), from the
# npm registry, with `npm pack` of pinned versions.
# Usage: scripts/vendor-frontend.sh   (needs npm and node; rewrites src/crmflow/api/static/swagger-ui
# and src/crmflow/web/static/vendor, then commit the result)
# To upgrade a library: change its pin below, run the script, run tests/unit/test_vendored_frontend.py.
set -euo pipefail
cd "$(dirname "$0")/.."
SWAGGER_UI_VERSION=5.32.0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "swagger-ui-dist@${SWAGGER_UI_VERSION}" >/dev/null && tar xzf ./*.tgz)
dest=src/crmflow/api/static/swagger-ui
mkdir -p "$dest"
for file in swagger-ui-bundle.js swagger-ui.css favicon-32x32.png LICENSE NOTICE \
  swagger-ui-bundle.js.LICENSE.txt; do
  cp "$work/package/$file" "$dest/$file"
done
echo "swagger-ui-dist ${SWAGGER_UI_VERSION}" > "$dest/VERSION"

# The web application's libraries, served under /static/web/vendor/<directory>/.
# One pin a line: npm package, exact version, directory under src/crmflow/web/static/vendor.
# htmx stays on 2.x (htmx 4 is a new major with changed semantics); mermaid stays on 11.x
# (mermaid 12's browser build bundles elkjs, licensed EPL-2.0 OR GPL-3.0, not permissive).
WEB_PINS=(
  "htmx.org                   2.0.11   htmx"
  "@picocss/pico              2.1.1    pico"
  "mermaid                    11.17.2  mermaid"
  "chart.js                   4.6.1    chartjs"
  "axe-core                   4.14.1   axe-core"
  "codemirror                 6.0.2    codemirror/codemirror"
  "@codemirror/state          6.7.6    codemirror/@codemirror/state"
  "@codemirror/view           6.43.15  codemirror/@codemirror/view"
  "@codemirror/language       6.13.1   codemirror/@codemirror/language"
  "@codemirror/commands       6.11.1   codemirror/@codemirror/commands"
  "@codemirror/lint           6.9.8    codemirror/@codemirror/lint"
  "@codemirror/search         6.7.2    codemirror/@codemirror/search"
  "@codemirror/autocomplete   6.20.4   codemirror/@codemirror/autocomplete"
  "@codemirror/lang-yaml      6.1.3    codemirror/@codemirror/lang-yaml"
  "@codemirror/streamparser   6.0.0    codemirror/@codemirror/streamparser"
  "@lezer/common              1.5.5    codemirror/@lezer/common"
  "@lezer/highlight           1.2.5    codemirror/@lezer/highlight"
  "@lezer/lr                  1.4.12   codemirror/@lezer/lr"
  "@lezer/yaml                1.0.4    codemirror/@lezer/yaml"
  "style-mod                  4.1.5    codemirror/style-mod"
  "w3c-keyname                2.2.8    codemirror/w3c-keyname"
  "crelt                      1.0.7    codemirror/crelt"
  "@marijn/find-cluster-break 1.0.4    codemirror/@marijn/find-cluster-break"
)
# Licences accepted (SPDX): permissive ones, and MPL-2.0 for axe-core (browser tests only).
ALLOWED_LICENCES=" MIT ISC 0BSD BSD-2-Clause BSD-3-Clause Apache-2.0 MPL-2.0 "
WEB_URL=/static/web/vendor
web=src/crmflow/web/static/vendor

# The files taken from each package, "path in the package:name in the vendored directory".
# CodeMirror's pieces are the ES module files the package exports for `import`.
files_of() {
  case "$1" in
    htmx.org) echo "dist/htmx.min.js:htmx.min.js" ;;
    @picocss/pico) echo "css/pico.min.css:pico.min.css" ;;
    mermaid) echo "dist/mermaid.min.js:mermaid.min.js" ;;
    chart.js) echo "dist/chart.umd.min.js:chart.umd.min.js" ;;
    axe-core) echo "axe.min.js:axe.min.js LICENSE-3RD-PARTY.txt:LICENSE-3RD-PARTY.txt" ;;
    style-mod) echo "src/style-mod.js:index.js" ;;
    w3c-keyname | crelt) echo "index.js:index.js" ;;
    @marijn/find-cluster-break) echo "src/index.js:index.js" ;;
    codemirror | @codemirror/* | @lezer/*) echo "dist/index.js:index.js" ;;
    *) echo "vendor-frontend.sh: no file list for $1; add it to files_of" >&2; exit 1 ;;
  esac
}

rm -rf "$web"
mkdir -p "$web"
manifest_lines=()
for pin in "${WEB_PINS[@]}"; do
  read -r name version dir <<<"$pin"
  unpack="$work/web/$dir"
  mkdir -p "$unpack"
  (cd "$unpack" && npm pack --silent "${name}@${version}" >/dev/null && tar xzf ./*.tgz)
  package="$unpack/package"
  licence=$(node -p "require(process.argv[1]).license" "$package/package.json")
  if [[ "$ALLOWED_LICENCES" != *" $licence "* ]]; then
    echo "vendor-frontend.sh: ${name}@${version} is licensed '$licence', not in:$ALLOWED_LICENCES" >&2
    exit 1
  fi
  out="$web/$dir"
  mkdir -p "$out"
  files=()
  for pair in $(files_of "$name"); do
    cp "$package/${pair%%:*}" "$out/${pair#*:}"
    files+=("$dir/${pair#*:}")
  done
  licence_file=$(find "$package" -maxdepth 1 \( -iname 'LICEN[CS]E' -o -iname 'LICEN[CS]E.*' \) \
    | sort | head -n 1)
  if [[ -z "$licence_file" ]]; then
    echo "vendor-frontend.sh: ${name}@${version} ships no LICENSE file" >&2
    exit 1
  fi
  cp "$licence_file" "$out/LICENSE"
  echo "${name} ${version}" > "$out/VERSION"
  files+=("$dir/LICENSE" "$dir/VERSION")
  manifest_lines+=("$name	$version	$licence	$dir	${files[*]}")
done

# vendor.json (what is vendored, at which version, under which licence) and CodeMirror's import
# map. A page inlines importmap.json's exact text in <script type="importmap">; under a CSP of
# script-src 'self' that inline map needs its hash, recorded as importmap_csp_source.
printf '%s\n' "${manifest_lines[@]}" | node -e '
const fs = require("fs");
const crypto = require("crypto");
const [web, url] = process.argv.slice(1);
const packages = fs.readFileSync(0, "utf8").trim().split("\n").map((line) => {
  const [name, version, licence, dir, files] = line.split("\t");
  return { name, version, licence, dir, files: files.split(" ") };
});
const imports = {};
for (const p of packages) {
  if (p.dir.startsWith("codemirror/")) imports[p.name] = `${url}/${p.dir}/index.js`;
}
const importmap = JSON.stringify({ imports }, null, 2) + "\n";
fs.writeFileSync(`${web}/codemirror/importmap.json`, importmap);
const hash = crypto.createHash("sha256").update(importmap).digest("base64");
const manifest = {
  packages,
  importmap: "codemirror/importmap.json",
  importmap_csp_source: `sha256-${hash}`,
};
fs.writeFileSync(`${web}/vendor.json`, JSON.stringify(manifest, null, 2) + "\n");
' "$web" "$WEB_URL"
echo "vendored ${#WEB_PINS[@]} packages into $web"
