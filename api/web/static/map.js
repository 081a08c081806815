// Pantau pages: the sensor map. Readable without a base map: each river is a line through its
// gauges downstream (/city/rivers) with arrows in the direction of flow, the kecamatan are
// labelled points, and every sensor is a symbol whose shape tells its family, whose colour tells
// a gauge's level and whose dashed grey outline tells that it stopped reporting. The legend
// shows every symbol drawn; a click (or Enter) on a sensor opens it.
window.PantauMap = (() => {
  "use strict";

  const TEXT = {
    id: {
      river: "Kali", flow: "Arah aliran", kecamatan: "Kecamatan", stale: "Tidak melapor",
      counter: "Penghitung lalu lintas", node: "Lampu jalan & udara", noData: "Pos duga air, tanpa data",
      gauge: "Pos duga air", legend: "Keterangan peta", open: "buka",
    },
    en: {
      river: "River", flow: "Direction of flow", kecamatan: "Kecamatan", stale: "Not reporting",
      counter: "Traffic counter", node: "Street light & air", noData: "Flood gauge, no data",
      gauge: "Flood gauge", legend: "Map legend", open: "open",
    },
  };
  const LEVEL_COLOURS = ["#2e8b57", "#e0b000", "#f07c00", "#b71c1c"];
  const FAMILY_COLOURS = { traffic_counter: "#0b5cad", street_node: "#6b4fbb" };
  const NO_DATA = "#9aa5b1";
  const RIVER = "#1f6fb2";

  /** The SVG of a sensor symbol: its shape by family, its fill by level, dashed when stale. */
  function symbol(family, fill, stale, size = 20) {
    const stroke = stale ? "#52606d" : "#102a43";
    const dash = stale ? ' stroke-dasharray="3 2"' : "";
    const paint = stale ? "#e4e7eb" : fill;
    const c = size / 2;
    let shape;
    if (family === "traffic_counter") {
      shape = `<rect x="3" y="3" width="${size - 6}" height="${size - 6}" rx="2"`;
    } else if (family === "street_node") {
      shape = `<polygon points="${c},2 ${size - 2},${c} ${c},${size - 2} 2,${c}"`;
    } else {
      shape = `<circle cx="${c}" cy="${c}" r="${c - 3}"`;
    }
    const cross = stale ? `<path d="M${c - 3} ${c - 3}L${c + 3} ${c + 3}M${c + 3} ${c - 3}L${c - 3} ${c + 3}" stroke="#52606d" stroke-width="1.6"/>` : "";
    return `<svg xmlns="http://www.w3.org/2000/svg" width="${size}" height="${size}" viewBox="0 0 ${size} ${size}" aria-hidden="true" focusable="false">${shape} fill="${paint}" stroke="${stroke}" stroke-width="2"${dash}/>${cross}</svg>`;
  }

  function arrowSvg(angle) {
    return `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 16 16" aria-hidden="true" focusable="false" style="transform: rotate(${angle}deg)"><path d="M2 3 L14 8 L2 13 L5 8 Z" fill="${RIVER}" stroke="#fff" stroke-width="1"/></svg>`;
  }

  /**
   * The map in ``ctx.element``. ``ctx``: lang() and levelName(level) of the page, api(path),
   * levelOf(sensor) (a gauge's level or null), isStale(sensor), describe(sensor) (a line for
   * the tooltip) and select(sensorId).
   */
  function create(ctx) {
    const node = document.getElementById(ctx.element);
    if (!window.L || !node) return null;
    const t = (key) => (TEXT[ctx.lang()] ?? TEXT.id)[key];
    const map = L.map(node, { zoomControl: true, keyboard: true }).setView([-7.72, 112.85], 11);
    map.attributionControl.setPrefix(false);
    const markers = new Map();
    const riverLayer = L.layerGroup().addTo(map);
    const arrowLayer = L.layerGroup().addTo(map);
    const points = [];
    let fitted = false;
    let shown = { rivers: 0, stale: false, families: new Set(), levels: new Set() };

    function fit() {
      if (fitted || !points.length) return;
      fitted = true;
      // After layout settles: the cards around the map change size as they fill.
      requestAnimationFrame(() => {
        map.invalidateSize();
        map.fitBounds(points, { padding: [30, 30], maxZoom: 13 });
        drawArrows();
      });
    }

    let rivers = [];
    function drawRivers(features) {
      rivers = features;
      riverLayer.clearLayers();
      for (const feature of features) {
        const name = feature.properties?.name ?? feature.id;
        const gauges = feature.properties?.gauges ?? [];
        const coords = feature.geometry?.type === "LineString"
          ? feature.geometry.coordinates : [feature.geometry?.coordinates].filter(Boolean);
        const latlngs = coords.map(([lon, lat]) => [lat, lon]);
        if (!latlngs.length) continue;
        points.push(...latlngs);
        const label = `${t("river")} ${name}`;
        if (latlngs.length > 1) {
          // A white casing under the blue line keeps it readable over any base map.
          L.polyline(latlngs, { color: "#fff", weight: 8, opacity: 0.9, interactive: false }).addTo(riverLayer);
          const line = L.polyline(latlngs, { color: RIVER, weight: 4, opacity: 0.95, className: "river-line", interactive: false })
            .addTo(riverLayer);
          const path = line.getElement();
          if (path) {
            path.dataset.river = name;
            path.dataset.gauges = gauges.join(" ");
            path.dataset.points = latlngs.map((p) => p.join(",")).join(";");
          }
        }
        const middle = latlngs[Math.floor((latlngs.length - 1) / 2)];
        L.tooltip({ permanent: true, direction: "left", className: "river-name", offset: [-12, 0] })
          .setLatLng(middle).setContent(label).addTo(riverLayer);
      }
      shown.rivers = features.length;
      drawArrows();
      renderLegend();
    }

    function drawArrows() {
      arrowLayer.clearLayers();
      for (const feature of rivers) {
        if (feature.geometry?.type !== "LineString") continue;
        const latlngs = feature.geometry.coordinates.map(([lon, lat]) => L.latLng(lat, lon));
        for (let i = 0; i + 1 < latlngs.length; i += 1) {
          // The angle on screen (Web Mercator keeps angles at every zoom).
          const a = map.project(latlngs[i], 12);
          const b = map.project(latlngs[i + 1], 12);
          const angle = (Math.atan2(b.y - a.y, b.x - a.x) * 180) / Math.PI;
          const mid = L.latLng((latlngs[i].lat + latlngs[i + 1].lat) / 2, (latlngs[i].lng + latlngs[i + 1].lng) / 2);
          L.marker(mid, {
            icon: L.divIcon({ className: "flow-arrow", html: arrowSvg(angle), iconSize: [16, 16] }),
            interactive: false, keyboard: false,
          }).addTo(arrowLayer);
        }
      }
    }

    function drawKecamatan(body) {
      L.geoJSON(body, {
        pointToLayer: (feature, latlng) => {
          points.push([latlng.lat, latlng.lng]);
          return L.circleMarker(latlng, { radius: 3, color: "#52606d", weight: 1, fillOpacity: 0.4, interactive: false })
            .bindTooltip(feature.properties?.name ?? feature.id ?? "", { permanent: true, direction: "right", className: "kec" });
        },
      }).addTo(map);
    }

    function icon(sensor) {
      const level = ctx.levelOf(sensor);
      const stale = ctx.isStale(sensor);
      const fill = sensor.family === "flood_gauge"
        ? (level === null ? NO_DATA : LEVEL_COLOURS[level]) : FAMILY_COLOURS[sensor.family] ?? NO_DATA;
      shown.families.add(sensor.family);
      if (sensor.family === "flood_gauge") shown.levels.add(level === null ? "x" : level);
      if (stale) shown.stale = true;
      const classes = `sensor-mark fam-${sensor.family}${stale ? " stale" : ""}${level !== null ? ` lvl-mark-${level}` : ""}`;
      return L.divIcon({ className: classes, html: symbol(sensor.family, fill, stale), iconSize: [20, 20] });
    }

    function label(sensor) {
      return `${sensor.name} (${sensor.id}): ${ctx.describe(sensor)}${ctx.isStale(sensor) ? ` · ${t("stale")}` : ""}`;
    }

    /** Draw or redraw one sensor. */
    function update(sensor) {
      let marker = markers.get(sensor.id);
      if (!marker) {
        marker = L.marker([sensor.lat, sensor.lon], { icon: icon(sensor), keyboard: true, title: sensor.name, riseOnHover: true })
          .addTo(map);
        marker.on("click", () => ctx.select(sensor.id));
        // Leaflet makes the symbol focusable; Enter opens it as a click does.
        marker.on("keypress", (event) => { if (event.originalEvent?.key === "Enter") ctx.select(sensor.id); });
        markers.set(sensor.id, marker);
        points.push([sensor.lat, sensor.lon]);
      } else {
        marker.setIcon(icon(sensor));
      }
      const element = marker.getElement();
      if (element) {
        element.dataset.sensor = sensor.id;
        element.setAttribute("aria-label", label(sensor));
        element.setAttribute("title", label(sensor));
      }
      marker.unbindTooltip().bindTooltip(label(sensor));
    }

    function updateAll(sensors) {
      shown = { ...shown, stale: false, families: new Set(), levels: new Set() };
      for (const sensor of sensors) update(sensor);
      renderLegend();
      fit();
    }

    function legendItem(svg, text, key) {
      const item = document.createElement("li");
      item.dataset.legend = key;
      item.innerHTML = svg;
      item.append(" ", text);
      return item;
    }

    function renderLegend() {
      const box = document.getElementById(ctx.legend);
      if (!box) return;
      const items = [];
      for (const level of [0, 1, 2, 3]) {
        if (shown.levels.has(level)) {
          items.push(legendItem(symbol("flood_gauge", LEVEL_COLOURS[level], false, 16), `${t("gauge")}: ${ctx.levelName(level)}`, `level-${level}`));
        }
      }
      if (shown.levels.has("x")) items.push(legendItem(symbol("flood_gauge", NO_DATA, false, 16), t("noData"), "no-data"));
      if (shown.families.has("traffic_counter")) items.push(legendItem(symbol("traffic_counter", FAMILY_COLOURS.traffic_counter, false, 16), t("counter"), "traffic_counter"));
      if (shown.families.has("street_node")) items.push(legendItem(symbol("street_node", FAMILY_COLOURS.street_node, false, 16), t("node"), "street_node"));
      if (shown.stale) items.push(legendItem(symbol("flood_gauge", NO_DATA, true, 16), t("stale"), "stale"));
      if (shown.rivers) {
        items.push(legendItem(`<svg width="26" height="10" aria-hidden="true" focusable="false"><line x1="1" y1="5" x2="25" y2="5" stroke="${RIVER}" stroke-width="4"/></svg>`, t("river"), "river"));
        items.push(legendItem(arrowSvg(0), t("flow"), "flow"));
      }
      items.push(legendItem('<svg width="10" height="10" aria-hidden="true" focusable="false"><circle cx="5" cy="5" r="3" fill="#52606d" fill-opacity="0.4" stroke="#52606d"/></svg>', t("kecamatan"), "kecamatan"));
      box.replaceChildren(...items);
      box.setAttribute("aria-label", t("legend"));
    }

    let base = null;
    function setBaseMap(on) {
      if (on && !base) {
        base = L.tileLayer("https://tile.openstreetmap.org/{z}/{x}/{y}.png", { maxZoom: 18, attribution: "© OpenStreetMap" }).addTo(map);
        base.bringToBack();
      } else if (!on && base) {
        map.removeLayer(base);
        base = null;
      }
    }

    ctx.api("/city/kecamatan").then(drawKecamatan).then(fit).catch(() => {});
    ctx.api("/city/rivers").then((body) => drawRivers(body.features ?? [])).then(fit).catch(() => {});
    return { update, updateAll, setBaseMap, renderLegend, symbol };
  }

  return { create, symbol, LEVEL_COLOURS };
})();
