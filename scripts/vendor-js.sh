#!/usr/bin/env bash
# Refreshes the JavaScript libraries the live city page serves, from the versions pinned in
# api/web/package-lock.json (npm registry). The copies are committed so that the page works
# offline and installs need no npm.
set -euo pipefail
cd "$(dirname "$0")/../api/web"
npm ci --no-audit --no-fund --ignore-scripts
vendor=static/vendor
rm -rf "$vendor"
mkdir -p "$vendor/leaflet/images" "$vendor/uplot" ../../tests/api/vendor
cp node_modules/leaflet/dist/leaflet.js node_modules/leaflet/dist/leaflet.css "$vendor/leaflet/"
cp node_modules/leaflet/dist/images/*.png "$vendor/leaflet/images/"
cp node_modules/leaflet/LICENSE "$vendor/leaflet/LICENSE"
cp node_modules/uplot/dist/uPlot.iife.min.js node_modules/uplot/dist/uPlot.min.css "$vendor/uplot/"
cp node_modules/uplot/LICENSE "$vendor/uplot/LICENSE"
# The accessibility checker is for the browser tests only.
cp node_modules/axe-core/axe.min.js node_modules/axe-core/LICENSE ../../tests/api/vendor/
