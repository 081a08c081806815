// Pantau live city page (/ and /control): the open-data API, kept live by its event stream.
// No build step and no framework: Leaflet and uPlot are the only libraries, served by Pantau.
(() => {
  "use strict";

  const PAGE = document.body.dataset.page;
  const TEXT = {
    id: {
      skip: "Langsung ke isi", title: "Pantau",
      subtitle: "Status kota secara langsung: sungai, lalu lintas, lampu jalan, udara.",
      connecting: "Menghubungkan…", live: "Langsung", offlineStream: "Terputus, mencoba lagi…",
      warnings: "Peringatan aktif", noWarnings: "Tidak ada peringatan aktif.", loading: "Memuat…",
      map: "Peta sensor", basemap: "Tampilkan peta dasar daring (OpenStreetMap)",
      rivers: "Sungai dan pos duga air", river: "Kali", cityStatus: "Status per kecamatan",
      sensors: "Semua sensor", sensor: "Sensor", kind: "Jenis", latestCol: "Nilai terbaru",
      timeCol: "Waktu", footer: "Data terbuka Pantau: API di /docs · GeoJSON, CSV, SensorThings, CAP.",
      controlLink: "Ruang kendali", publicLink: "Halaman publik", unavailable: "Tidak tersedia.",
      controlTitle: "Ruang kendali Pantau",
      controlSubtitle: "Untuk operator: konfirmasi peringatan, sensor luring, muatan yang ditolak.",
      apiKey: "Kunci API operator", apiKeyLabel: "Kunci API (disimpan hanya di tab ini)",
      save: "Simpan", saved: "Kunci tersimpan.", openAlerts: "Peringatan terbuka", level: "Tingkat",
      rule: "Aturan", message: "Pesan", since: "Sejak", ack: "Konfirmasi", ackDo: "Konfirmasi",
      acked: "Dikonfirmasi", ackFailed: "Konfirmasi gagal", offline: "Sensor luring",
      noneOffline: "Semua sensor melapor.", rejected: "Muatan ditolak, per alasan",
      needKey: "Masukkan kunci API untuk melihat.", reason: "Alasan", count: "Jumlah",
      noRejected: "Tidak ada muatan yang ditolak.", expected: "diperkirakan",
      noData: "Tidak ada data", lastReading: "data terakhir",
      expectedIn: "{level} diperkirakan dalam sekitar {n} menit", expectedNow: "{level} diperkirakan sudah tercapai",
      suspect: "Data mencurigakan (kontrol mutu)", noSuspect: "Tidak ada data mencurigakan dalam 24 jam terakhir.",
      valueCol: "Nilai",
      reasons: { range: "di luar rentang sensor", gradient: "berubah terlalu cepat", spike: "lonjakan sesaat" },
      family: { flood_gauge: "Pos duga air", traffic_counter: "Penghitung lalu lintas", street_node: "Lampu jalan & udara" },
      levels: ["Normal", "Waspada", "Siaga", "Awas"],
      kecamatan: "Kecamatan", floodCol: "Banjir (terburuk)", trafficCol: "Lalu lintas",
      lampsCol: "Lampu menyala baik", airCol: "Udara (ISPU)",
      traffic: { lancar: "Lancar", padat: "Padat", macet: "Macet" },
      lang: "EN", langLabel: "English",
    },
    en: {
      skip: "Skip to content", title: "Pantau",
      subtitle: "The city live: rivers, traffic, street lights, air.",
      connecting: "Connecting…", live: "Live", offlineStream: "Disconnected, retrying…",
      warnings: "Active warnings", noWarnings: "No active warnings.", loading: "Loading…",
      map: "Sensor map", basemap: "Show the online base map (OpenStreetMap)",
      rivers: "Rivers and gauges", river: "River", cityStatus: "Status by kecamatan",
      sensors: "All sensors", sensor: "Sensor", kind: "Kind", latestCol: "Latest values",
      timeCol: "Time", footer: "Pantau open data: API at /docs · GeoJSON, CSV, SensorThings, CAP.",
      controlLink: "Control room", publicLink: "Public page", unavailable: "Not available.",
      controlTitle: "Pantau control room",
      controlSubtitle: "For operators: acknowledge warnings, offline sensors, rejected payloads.",
      apiKey: "Operator API key", apiKeyLabel: "API key (kept in this tab only)",
      save: "Save", saved: "Key saved.", openAlerts: "Open alerts", level: "Level",
      rule: "Rule", message: "Message", since: "Since", ack: "Acknowledge", ackDo: "Acknowledge",
      acked: "Acknowledged", ackFailed: "Acknowledgement failed", offline: "Offline sensors",
      noneOffline: "Every sensor is reporting.", rejected: "Rejected payloads by reason",
      needKey: "Enter an API key to see them.", reason: "Reason", count: "Count",
      noRejected: "No rejected payloads.", expected: "expected",
      noData: "No data", lastReading: "last reading",
      expectedIn: "{level} expected in about {n} minutes", expectedNow: "{level} expected now",
      suspect: "Suspect readings (quality control)", noSuspect: "No suspect readings in the last 24 hours.",
      valueCol: "Value",
      reasons: { range: "outside the sensor's range", gradient: "changed too fast", spike: "spike" },
      family: { flood_gauge: "Flood gauge", traffic_counter: "Traffic counter", street_node: "Street light & air" },
      levels: ["Normal", "Waspada (alert)", "Siaga (standby)", "Awas (danger)"],
      kecamatan: "Kecamatan", floodCol: "Flood (worst)", trafficCol: "Traffic",
      lampsCol: "Lamps working", airCol: "Air (ISPU)",
      traffic: { lancar: "Flowing", padat: "Busy", macet: "Jammed" },
      lang: "ID", langLabel: "Bahasa Indonesia",
    },
  };
  const LEVEL_COLOURS = ["#2e8b57", "#e0b000", "#f07c00", "#b71c1c"];
  const NO_DATA_COLOUR = "#9aa5b1";
  // Rules that warn of a flood: styled with the flood levels' colours, listed first.
  const FLOOD_RULES = new Set(["flood_level", "rising_fast", "upstream"]);
  const MAIN_METRICS = {
    flood_gauge: ["water_level", "rainfall"],
    traffic_counter: ["occupancy", "avg_speed", "count_motorcycle"],
    street_node: ["lamp_state", "pm25", "pm10"],
  };

  let lang = new URLSearchParams(location.search).get("lang") || localStorage.getItem("pantau.lang") || "id";
  if (!TEXT[lang]) lang = "id";
  const t = (key) => TEXT[lang][key] ?? TEXT.id[key] ?? key;

  const sensors = new Map();
  // Each gauge's level as /city/status gives it: the alert service's confirmed level while its
  // data is current, "no data" (with the time of its last reading) once it is not.
  const gaugeStates = new Map();
  const markers = new Map();
  const sparks = new Map();
  let alerts = [];
  let map = null;
  let baseLayer = null;

  // ---------------------------------------------------------------- helpers
  const el = (tag, attrs = {}, ...children) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else node.setAttribute(k, v);
    }
    for (const child of children) node.append(child);
    return node;
  };
  const items = (body) => {
    if (Array.isArray(body)) return body;
    if (!body || typeof body !== "object") return [];
    if (Array.isArray(body.features)) return body.features.map((f) => ({ ...f.properties, id: f.id ?? f.properties?.id }));
    for (const key of ["items", "alerts", "sensors", "kecamatan", "value", "data", "results"]) {
      if (Array.isArray(body[key])) return body[key];
    }
    return [];
  };
  async function api(path, options = {}) {
    const response = await fetch(path, { headers: { Accept: "application/json" }, ...options });
    if (!response.ok) throw new Error(`${path}: ${response.status}`);
    return response.status === 204 ? null : response.json();
  }
  const when = (iso) => {
    if (!iso) return "";
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return String(iso);
    return new Intl.DateTimeFormat(lang === "id" ? "id-ID" : "en-GB", {
      timeZone: "Asia/Jakarta", day: "numeric", month: "short", hour: "2-digit", minute: "2-digit",
    }).format(date) + " WIB";
  };
  const levelBadge = (level) => {
    const known = Number.isInteger(level) && level >= 0 && level <= 3;
    return el("span", { class: `badge lvl-${known ? level : "x"}`, text: known ? t("levels")[level] : "–" });
  };
  const fmt = (value) => (typeof value === "number" ? (Number.isInteger(value) ? String(value) : value.toFixed(2)) : String(value));

  function floodLevel(sensor) {
    const state = gaugeStates.get(sensor.id);
    return state && !state.no_data && Number.isInteger(state.level) ? state.level : null;
  }
  const noData = (sensor) => Boolean(gaugeStates.get(sensor.id)?.no_data);
  function gaugeBadge(sensor) {
    if (!noData(sensor)) return levelBadge(floodLevel(sensor));
    return el("span", { class: "badge lvl-x no-data", text: t("noData") });
  }
  function staleText(sensor) {
    const state = gaugeStates.get(sensor.id);
    if (!state?.no_data || !state.last_reading_at) return "";
    const value = sensor.latest?.water_level?.value;
    return `${t("lastReading")} ${when(state.last_reading_at)}${value === undefined ? "" : ` (${fmt(value)} m)`}`;
  }
  // The water level as current, or nothing when it is not (the "no data" note says what it was).
  function valueText(sensor) {
    const value = sensor.latest?.water_level?.value;
    if (value === undefined) return "–";
    return noData(sensor) ? "" : `${fmt(value)} m`;
  }
  const markerColour = (sensor, level) => (noData(sensor) ? NO_DATA_COLOUR : LEVEL_COLOURS[level] ?? NO_DATA_COLOUR);
  function latestTime(sensor) {
    let newest = null;
    for (const r of Object.values(sensor.latest || {})) if (!newest || r.time > newest) newest = r.time;
    return newest;
  }
  function latestText(sensor) {
    const parts = [];
    for (const metric of MAIN_METRICS[sensor.family] || []) {
      const r = sensor.latest?.[metric];
      if (r) parts.push(`${metric} ${fmt(r.value)}`);
    }
    return parts.join(" · ") || "–";
  }

  // ---------------------------------------------------------------- language
  function applyLanguage() {
    document.documentElement.lang = lang;
    for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
    const button = document.getElementById("lang");
    button.textContent = t("lang");
    button.setAttribute("aria-label", t("langLabel"));
    document.getElementById("map")?.setAttribute("aria-label", t("map"));
    renderAll();
  }

  // ---------------------------------------------------------------- map
  function initMap() {
    if (!window.L || !document.getElementById("map")) return;
    map = L.map("map", { zoomControl: true }).setView([-7.72, 112.85], 11);
    map.attributionControl.setPrefix(false);
    document.getElementById("basemap").addEventListener("change", (event) => {
      if (event.target.checked) {
        baseLayer = L.tileLayer("https://tile.openstreetmap.org/{z}/{x}/{y}.png", {
          maxZoom: 18, attribution: "© OpenStreetMap",
        }).addTo(map);
      } else if (baseLayer) {
        map.removeLayer(baseLayer);
        baseLayer = null;
      }
    });
    api("/city/kecamatan").then((body) => {
      L.geoJSON(body, {
        pointToLayer: (feature, latlng) => L.circleMarker(latlng, { radius: 3, color: "#52606d", weight: 1, fillOpacity: 0.4 })
          .bindTooltip(feature.properties?.name ?? feature.id ?? "", { permanent: true, direction: "right", className: "kec" }),
      }).addTo(map);
    }).catch(() => {});
  }
  function renderMarkers() {
    if (!map) return;
    const bounds = [];
    for (const sensor of sensors.values()) {
      const gauge = sensor.family === "flood_gauge";
      const level = gauge ? floodLevel(sensor) : null;
      const colour = gauge ? markerColour(sensor, level) : (sensor.family === "traffic_counter" ? "#0b5cad" : "#6b4fbb");
      let marker = markers.get(sensor.id);
      if (!marker) {
        marker = L.circleMarker([sensor.lat, sensor.lon], { radius: 7, weight: 2, color: "#102a43", fillOpacity: 0.9 }).addTo(map);
        markers.set(sensor.id, marker);
      }
      marker.setStyle({ fillColor: colour });
      const label = !gauge ? latestText(sensor)
        : noData(sensor) ? `${t("noData")} (${staleText(sensor)})` : `${t("levels")[level] ?? "–"} · ${latestText(sensor)}`;
      marker.bindTooltip(`${sensor.name} (${sensor.id}): ${label}`);
      bounds.push([sensor.lat, sensor.lon]);
    }
    if (bounds.length && !map._fitted) {
      map._fitted = true;
      // After layout settles: the cards around the map change size as they fill.
      requestAnimationFrame(() => {
        map.invalidateSize();
        map.fitBounds(bounds, { padding: [30, 30], maxZoom: 14 });
      });
    }
    const legend = document.getElementById("legend");
    legend.replaceChildren(...t("levels").map((name, i) => el("span", {}, el("span", { class: `badge lvl-${i}`, text: name }))));
  }

  // ---------------------------------------------------------------- sections
  function renderSensors() {
    const body = document.querySelector("#sensors tbody");
    if (!body) return;
    const rows = [...sensors.values()].sort((a, b) => a.id.localeCompare(b.id)).map((s) => {
      const latest = el("td", { class: "latest", text: latestText(s) });
      if (s.family === "flood_gauge") latest.prepend(gaugeBadge(s), " ");
      return el("tr", { "data-sensor": s.id },
        el("th", { scope: "row" }, el("span", { text: s.name }), el("br"), el("small", { class: "muted", text: s.id })),
        el("td", { text: t("family")[s.family] ?? s.family }),
        el("td", { text: s.kecamatan }),
        latest,
        el("td", { class: "time", text: when(latestTime(s)) }));
    });
    body.replaceChildren(...rows);
  }

  function renderRivers() {
    const box = document.getElementById("rivers");
    if (!box) return;
    const rivers = new Map();
    for (const s of sensors.values()) {
      if (s.family !== "flood_gauge") continue;
      if (!rivers.has(s.river)) rivers.set(s.river, []);
      rivers.get(s.river).push(s);
    }
    if (!rivers.size) {
      box.replaceChildren(el("p", { class: "muted", text: t("unavailable") }));
      return;
    }
    const sections = [];
    for (const [river, gauges] of [...rivers.entries()].sort()) {
      gauges.sort((a, b) => (a.river_km ?? 0) - (b.river_km ?? 0) || a.id.localeCompare(b.id));
      const section = el("section", { class: "river", "data-river": river }, el("h3", { text: `${t("river")} ${river}` }));
      for (const g of gauges) {
        const value = g.latest?.water_level?.value;
        const th = g.thresholds;
        const top = th ? th.awas * 1.3 : 1;
        const pct = (x) => `${Math.max(0, Math.min(100, (x / top) * 100)).toFixed(1)}%`;
        const bar = el("div", { class: "bar", role: "img", "aria-label": `${g.name}: ${value === undefined ? "–" : fmt(value) + " m"}` });
        if (th) {
          bar.style.setProperty("--w", pct(th.waspada));
          bar.style.setProperty("--s", pct(th.siaga));
          bar.style.setProperty("--a", pct(th.awas));
        }
        if (value !== undefined) {
          const mark = el("i");
          mark.style.left = pct(value);
          bar.append(mark);
        }
        let spark = sparks.get(g.id)?.node;
        if (!spark) spark = el("div", { class: "spark", "aria-hidden": "true" });
        section.append(el("div", { class: `gauge${noData(g) ? " no-data" : ""}`, "data-sensor": g.id },
          el("span", { class: "name", text: `${g.name}` }),
          el("span", {}, gaugeBadge(g), " ", el("span", { class: "value", text: valueText(g) }),
            " ", el("small", { class: "stale muted", text: staleText(g) })),
          bar, spark));
      }
      sections.push(section);
    }
    box.replaceChildren(...sections);
    for (const s of sensors.values()) if (s.family === "flood_gauge") loadSpark(s);
  }

  async function loadSpark(gauge) {
    if (!window.uPlot || sparks.has(gauge.id)) return;
    const holder = { node: null, plot: null, data: [[], []] };
    sparks.set(gauge.id, holder);
    const end = new Date();
    const start = new Date(end.getTime() - 24 * 3600 * 1000);
    try {
      const body = await api(`/sensors/${encodeURIComponent(gauge.id)}/readings?metric=water_level&resolution=1m&order=asc&limit=1440&start=${start.toISOString()}&end=${end.toISOString()}`);
      const points = items(body.readings ? body.readings : body)
        .map((r) => [new Date(r.time).getTime() / 1000, r.avg ?? r.value ?? r.last])
        .sort((a, b) => a[0] - b[0]);
      for (const [x, y] of points) {
        holder.data[0].push(x);
        holder.data[1].push(y);
      }
    } catch { /* the sparkline is optional */ }
    const node = document.querySelector(`.gauge[data-sensor="${CSS.escape(gauge.id)}"] .spark`);
    if (!node) return;
    holder.node = node;
    const th = gauge.thresholds || {};
    const lines = ["waspada", "siaga", "awas"].filter((k) => th[k] !== undefined);
    holder.plot = new uPlot({
      width: Math.max(220, node.clientWidth || 300), height: 60, legend: { show: false }, cursor: { show: false },
      axes: [{ show: false }, { show: false }],
      scales: { x: { time: true }, y: { range: (u, lo, hi) => [Math.min(lo ?? 0, 0), Math.max(hi ?? 1, (th.awas ?? 1) * 1.05)] } },
      series: [{}, { stroke: "#0b5cad", width: 1.5 }],
      hooks: {
        draw: [(u) => {
          const ctx = u.ctx;
          lines.forEach((k, i) => {
            const y = u.valToPos(th[k], "y", true);
            ctx.save();
            ctx.strokeStyle = LEVEL_COLOURS[i + 1];
            ctx.setLineDash([4, 3]);
            ctx.beginPath();
            ctx.moveTo(u.bbox.left, y);
            ctx.lineTo(u.bbox.left + u.bbox.width, y);
            ctx.stroke();
            ctx.restore();
          });
        }],
      },
    }, holder.data, node);
  }

  // The level's name from the API (pantau.levels), in the page's language.
  const levelName = (a) => (lang === "en" ? a.level_label_en : a.level_label) ?? a.level_label ?? String(a.level);
  function ruleBadge(a) {
    const known = FLOOD_RULES.has(a.rule) && Number.isInteger(a.level) && a.level >= 0 && a.level <= 3;
    return el("span", { class: `badge ${known ? `lvl-${a.level}` : "lvl-x"}`, text: levelName(a) });
  }
  // Most urgent first: flood warnings before the rest; the worst level, measured or expected;
  // at the same level what is measured before what is forecast, the soonest forecast first.
  function urgency(a) {
    const flood = FLOOD_RULES.has(a.rule);
    const forecast = flood && a.rule !== "flood_level";
    const expected = forecast && a.predicted_at ? (a.predicted_level ?? 0) : 0;
    const due = forecast && a.predicted_at ? Date.parse(a.predicted_at) : Infinity;
    return [flood ? 0 : 1, -Math.max(a.level ?? 0, expected), forecast ? 1 : 0, due, -Date.parse(a.updated_at ?? 0)];
  }
  function byUrgency(a, b) {
    const x = urgency(a), y = urgency(b);
    for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return (x[i] || 0) < (y[i] || 0) ? -1 : 1;
    return 0;
  }
  function forecastText(a) {
    const name = t("levels")[a.predicted_level] ?? "";
    const minutes = Math.round((Date.parse(a.predicted_at) - Date.now()) / 60000);
    const text = minutes > 0 ? t("expectedIn").replace("{n}", String(minutes)) : t("expectedNow");
    return `${text.replace("{level}", name)} (${when(a.predicted_at)})`;
  }

  function renderWarnings() {
    const list = document.getElementById("warnings");
    if (!list) return;
    const open = alerts.filter((a) => a.state === undefined || a.state === "open").sort(byUrgency);
    if (!open.length) {
      list.replaceChildren(el("li", { class: "muted", text: t("noWarnings") }));
      return;
    }
    list.replaceChildren(...open.map((a) => {
      const sensor = sensors.get(a.sensor_id);
      const message = (lang === "en" ? a.message_en : a.message) || a.message || a.rule;
      const item = el("li", { "data-alert": String(a.id), "data-rule": a.rule ?? "" },
        ruleBadge(a), " ", el("strong", { text: sensor ? sensor.name : a.sensor_id }), " — ", el("span", { text: message }));
      if (a.predicted_at && Number.isInteger(a.predicted_level) && a.predicted_level >= 1 && a.predicted_level <= 3) {
        // "Awas expected in N minutes" is the earliest warning there is: it must stand out.
        item.classList.add("forecast", `forecast-${a.predicted_level}`);
        item.append(el("strong", { class: "forecast-note", text: forecastText(a) }));
      }
      return item;
    }));
  }

  async function loadCityStatus() {
    const box = document.getElementById("city-status");
    if (!box) return;
    try {
      const body = await api("/city/status");
      const all = body.kecamatan ?? items(body);
      gaugeStates.clear();
      for (const k of all) for (const g of k.flood?.by_gauge ?? []) gaugeStates.set(g.sensor_id, g);
      refreshGauges();
      const rows = all.filter((k) => k.flood || k.traffic || k.lamps || k.air);
      if (!rows.length) throw new Error("empty");
      const head = el("tr", {}, ...["kecamatan", "floodCol", "trafficCol", "lampsCol", "airCol"]
        .map((k) => el("th", { scope: "col", text: t(k) })));
      const body_ = rows.map((k) => {
        const flood = el("td");
        if (k.flood?.no_data) flood.append(el("span", { class: "badge lvl-x no-data", text: t("noData") }));
        else if (k.flood) flood.append(levelBadge(k.flood.level));
        else flood.textContent = "–";
        const traffic = k.traffic ? `${t("traffic")[k.traffic.category] ?? k.traffic.category} (${k.traffic.congestion_index.toFixed(2)})` : "–";
        const lamps = k.lamps && k.lamps.on ? `${k.lamps.working}/${k.lamps.on}` : "–";
        const air = k.air ? `${lang === "en" ? k.air.category_en : k.air.category} (ISPU ${Math.round(k.air.ispu)})` : "–";
        return el("tr", { "data-kecamatan": k.kecamatan }, el("th", { scope: "row", text: k.kecamatan }), flood,
          el("td", { text: traffic }), el("td", { text: lamps }), el("td", { text: air }));
      });
      box.replaceChildren(el("table", {}, el("caption", { class: "sr", text: t("cityStatus") }),
        el("thead", {}, head), el("tbody", {}, ...body_)));
    } catch {
      box.replaceChildren(el("p", { class: "muted", text: t("unavailable") }));
    }
  }

  // Badges, "no data" notes and marker colours of every gauge, from the states just loaded.
  function refreshGauges() {
    for (const sensor of sensors.values()) if (sensor.family === "flood_gauge") paintGauge(sensor);
  }
  function paintGauge(sensor) {
    const id = CSS.escape(sensor.id);
    const gauge = document.querySelector(`.gauge[data-sensor="${id}"]`);
    if (gauge) {
      gauge.querySelector(".badge")?.replaceWith(gaugeBadge(sensor));
      const stale = gauge.querySelector(".stale");
      if (stale) stale.textContent = staleText(sensor);
      const value = gauge.querySelector(".value");
      if (value) value.textContent = valueText(sensor);
      gauge.classList.toggle("no-data", noData(sensor));
    }
    const row = document.querySelector(`#sensors tr[data-sensor="${id}"] .latest`);
    if (row) {
      row.textContent = latestText(sensor);
      row.prepend(gaugeBadge(sensor), " ");
    }
    markers.get(sensor.id)?.setStyle({ fillColor: markerColour(sensor, floodLevel(sensor)) });
  }

  // ---------------------------------------------------------------- control page
  const apiKey = () => sessionStorage.getItem("pantau.apiKey") || "";

  function renderAlertTable() {
    const body = document.querySelector("#alerts tbody");
    if (!body) return;
    const open = alerts.filter((a) => a.state === undefined || a.state === "open").sort(byUrgency);
    body.replaceChildren(...open.map((a) => {
      const done = Boolean(a.acknowledged_at);
      const button = el("button", { type: "button", class: "ack", "data-alert": String(a.id) });
      button.textContent = done ? `${t("acked")}${a.acknowledged_by ? ` (${a.acknowledged_by})` : ""}` : t("ackDo");
      if (done) button.disabled = true;
      button.addEventListener("click", () => acknowledge(a, button));
      return el("tr", { "data-alert": String(a.id) },
        el("td", {}, ruleBadge(a)),
        el("td", { text: sensors.get(a.sensor_id)?.name ?? a.sensor_id }),
        el("td", { text: a.rule ?? "" }),
        el("td", { text: (lang === "en" ? a.message_en : a.message) || a.message || "" }),
        el("td", { text: when(a.opened_at) }),
        el("td", {}, button));
    }));
    const offline = document.getElementById("offline");
    if (offline) {
      const down = open.filter((a) => a.rule === "offline");
      offline.replaceChildren(...(down.length
        ? down.map((a) => el("li", { "data-sensor": a.sensor_id, text: `${sensors.get(a.sensor_id)?.name ?? a.sensor_id} — ${when(a.opened_at)}` }))
        : [el("li", { class: "muted", text: t("noneOffline") })]));
    }
  }

  async function acknowledge(alert, button) {
    const state = document.getElementById("ack-state");
    button.disabled = true;
    try {
      const response = await fetch(`/alerts/${encodeURIComponent(alert.id)}/ack`, {
        method: "POST", headers: { "X-API-Key": apiKey(), Accept: "application/json" },
      });
      if (!response.ok) {
        let detail = String(response.status);
        try { detail = (await response.json()).detail ?? detail; } catch { /* not JSON */ }
        throw new Error(detail);
      }
      const updated = await response.json().catch(() => null);
      alert.acknowledged_at = updated?.acknowledged_at ?? new Date().toISOString();
      alert.acknowledged_by = updated?.acknowledged_by ?? alert.acknowledged_by;
      state.textContent = `${t("acked")}: ${sensors.get(alert.sensor_id)?.name ?? alert.sensor_id}`;
      renderAlertTable();
    } catch (error) {
      button.disabled = false;
      state.textContent = `${t("ackFailed")}: ${error.message}`;
    }
  }

  // An operator section: asks for the key, fetches `path` with it, fills `box` with `render`.
  async function operatorSection(id, path, render) {
    const box = document.getElementById(id);
    if (!box) return;
    if (!apiKey()) {
      box.replaceChildren(el("p", { class: "muted", text: t("needKey") }));
      return;
    }
    try {
      box.replaceChildren(render(await api(path, { headers: { "X-API-Key": apiKey(), Accept: "application/json" } })));
    } catch (error) {
      box.replaceChildren(el("p", { class: "muted", text: `${t("unavailable")} (${error.message})` }));
    }
  }
  const table = (caption, columns, rows) => el("table", {}, el("caption", { class: "sr", text: caption }),
    el("thead", {}, el("tr", {}, ...columns.map((k) => el("th", { scope: "col", text: t(k) })))),
    el("tbody", {}, ...rows));

  const loadRejected = () => operatorSection("rejected", "/operator/rejected", (body) => {
    const counts = new Map();
    if (body && Array.isArray(body.by_reason)) {
      for (const r of body.by_reason) counts.set(r.reason, r.count ?? r.times_seen ?? 0);
    } else {
      for (const r of items(body)) counts.set(r.reason, (counts.get(r.reason) ?? 0) + (r.times_seen ?? 1));
    }
    if (!counts.size) return el("p", { class: "muted", text: t("noRejected") });
    const rows = [...counts.entries()].sort((a, b) => b[1] - a[1])
      .map(([reason, count]) => el("tr", { "data-reason": reason }, el("td", { text: reason }), el("td", { text: String(count) })));
    return table(t("rejected"), ["reason", "count"], rows);
  });

  // What quality control kept from moving a level (docs/alerts.md), newest first.
  const loadSuspect = () => operatorSection("suspect", "/operator/suspect-readings?limit=50", (body) => {
    if (!body.items.length) return el("p", { class: "muted", text: t("noSuspect") });
    const rows = body.items.map((r) => el("tr", { "data-sensor": r.sensor_id, "data-reason": r.reason },
      el("td", { text: when(r.time) }), el("td", { text: sensors.get(r.sensor_id)?.name ?? r.sensor_id }),
      el("td", { text: `${fmt(r.value)} m` }), el("td", { text: t("reasons")[r.reason] ?? r.reason })));
    return table(t("suspect"), ["timeCol", "sensor", "valueCol", "reason"], rows);
  });

  function initControl() {
    const form = document.getElementById("key-form");
    if (!form) return;
    const input = document.getElementById("api-key");
    input.value = apiKey();
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      sessionStorage.setItem("pantau.apiKey", input.value.trim());
      document.getElementById("key-state").textContent = t("saved");
      loadRejected();
      loadSuspect();
    });
  }

  // ---------------------------------------------------------------- data and live updates
  function renderAll() {
    renderMarkers();
    renderSensors();
    renderRivers();
    renderWarnings();
    renderAlertTable();
    loadCityStatus();
    if (PAGE === "control") {
      loadRejected();
      loadSuspect();
    }
  }

  async function loadAlerts() {
    try {
      alerts = items(await api("/alerts?state=open"));
    } catch {
      alerts = [];
    }
    renderWarnings();
    renderAlertTable();
  }

  let alertTimer = null;
  function alertsChanged() {
    clearTimeout(alertTimer);
    alertTimer = setTimeout(() => { loadAlerts(); loadCityStatus(); }, 200);
  }

  let statusTimer = null;
  function statusSoon() {
    if (statusTimer === null) statusTimer = setTimeout(() => { statusTimer = null; loadCityStatus(); }, 500);
  }

  function applyReading(reading) {
    const sensor = sensors.get(reading.sensor_id ?? reading.sensor);
    if (!sensor || reading.metric === undefined) return;
    const current = sensor.latest?.[reading.metric];
    if (current && current.time > reading.time) return;  // never move backwards in time
    sensor.latest = { ...sensor.latest, [reading.metric]: { value: reading.value, time: reading.time } };
    const row = document.querySelector(`#sensors tr[data-sensor="${CSS.escape(sensor.id)}"]`);
    if (row) {
      const latest = row.querySelector(".latest");
      latest.textContent = latestText(sensor);
      if (sensor.family === "flood_gauge") latest.prepend(gaugeBadge(sensor), " ");
      row.querySelector(".time").textContent = when(latestTime(sensor));
    }
    if (sensor.family === "flood_gauge" && reading.metric === "water_level") {
      // The level itself comes from the alert service (after quality control), not the raw value.
      const gauge = document.querySelector(`.gauge[data-sensor="${CSS.escape(sensor.id)}"]`);
      if (gauge) gauge.querySelector(".value").textContent = valueText(sensor);
      statusSoon();
      const spark = sparks.get(sensor.id);
      if (spark?.plot) {
        spark.data[0].push(new Date(reading.time).getTime() / 1000);
        spark.data[1].push(reading.value);
        spark.plot.setData(spark.data);
      }
    }
  }

  function connect() {
    if (!window.EventSource) return;
    const dot = document.getElementById("live-dot");
    const text = document.getElementById("live-text");
    const source = new EventSource("/stream");
    source.onopen = () => { dot.classList.add("on"); text.textContent = t("live"); text.dataset.i18n = "live"; };
    source.onerror = () => { dot.classList.remove("on"); text.textContent = t("offlineStream"); text.dataset.i18n = "offlineStream"; };
    source.addEventListener("reading", (event) => {
      const data = JSON.parse(event.data);
      for (const reading of Array.isArray(data) ? data : (data.readings ?? [data])) applyReading(reading);
    });
    source.addEventListener("alert", alertsChanged);
  }

  async function start() {
    document.getElementById("lang").addEventListener("click", () => {
      lang = lang === "id" ? "en" : "id";
      localStorage.setItem("pantau.lang", lang);
      applyLanguage();
    });
    initControl();
    initMap();
    try {
      for (const s of items(await api("/sensors"))) sensors.set(s.id, s);
    } catch (error) {
      document.querySelector("#sensors tbody")?.replaceChildren(el("tr", {}, el("td", { colspan: "5", text: `${t("unavailable")} (${error.message})` })));
    }
    applyLanguage();
    await loadAlerts();
    connect();
    // A gauge goes stale without any event when the alert service itself stops: look again.
    setInterval(loadCityStatus, 30000);
  }

  start();
})();
