#!/usr/bin/env bash
# Regenerates tests/deploy/grafana-schema/dashboard.schema.json: the JSON Schema of a Grafana
# dashboard, generated from the TypeScript types Grafana publishes in @grafana/schema (made from
# its CUE schema), at the versions pinned in tests/deploy/grafana-schema/package-lock.json (npm
# registry). The result is committed, so the tests need neither npm nor a network.
set -euo pipefail
cd "$(dirname "$0")/../tests/deploy/grafana-schema"
npm ci --no-audit --no-fund --ignore-scripts
types=node_modules/@grafana/schema/dist/esm/raw/dashboard/x/dashboard_types.gen.d.ts
npx --no-install ts-json-schema-generator --path "$types" --type Dashboard --no-type-check \
    --out dashboard.schema.json
cp node_modules/@grafana/schema/LICENSE_APACHE2 LICENSE
rm -rf node_modules
