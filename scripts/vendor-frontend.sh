#!/usr/bin/env bash
# Re-vendor the front-end files served by crmflow (no CDN at run time), from the npm registry.
# Usage: scripts/vendor-frontend.sh   (needs npm; rewrites the files under src/crmflow/api/static)
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
