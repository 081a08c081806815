// Pantau live city page (/ and /control): the open-data API, kept live by its event stream.
// No build step and no framework: Leaflet and uPlot are the only libraries, served by Pantau.
// The map (map.js), the gauge view (gauge.js), readable values (format.js) and the control
// page's work on alerts (desk.js) are modules of their own, loaded before this file.
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
      notifications: "Notifikasi dan senyap (Alertmanager)",
      controlTitle: "Ruang kendali Pantau",
      controlSubtitle: "Untuk operator: konfirmasi peringatan, sensor luring, muatan yang ditolak.",
      apiKey: "Kunci API operator", apiKeyLabel: "Kunci API (disimpan hanya di tab ini)",
      save: "Simpan", saved: "Kunci tersimpan.", openAlerts: "Peringatan terbuka", level: "Tingkat",
      rule: "Aturan", message: "Pesan", since: "Sejak", ack: "Konfirmasi", ackDo: "Konfirmasi",
      acked: "Dikonfirmasi", ackFailed: "Konfirmasi gagal", offline: "Sensor luring",
      handleCol: "Penanganan",
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
      selected: "Sensor terpilih", chooseSensor: "Pilih sensor di peta atau di daftar sungai.",
      viewGauge: "Grafik", lastReport: "Laporan terakhir", staleSince: "Tidak melapor sejak",
      handling: "Penanganan", interval: "Selang laporan", seconds: "detik", notReporting: "tidak melapor",
      rules: {
        flood_level: "Tinggi muka air", rising_fast: "Naik cepat", upstream: "Banjir dari hulu",
        congestion: "Kemacetan", lamp: "Lampu jalan", air_quality: "Kualitas udara",
        offline: "Sensor luring", stuck: "Nilai tidak berubah", rejected: "Muatan ditolak",
      },
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
      notifications: "Notifications and silences (Alertmanager)",
      controlTitle: "Pantau control room",
      controlSubtitle: "For operators: acknowledge warnings, offline sensors, rejected payloads.",
      apiKey: "Operator API key", apiKeyLabel: "API key (kept in this tab only)",
      save: "Save", saved: "Key saved.", openAlerts: "Open alerts", level: "Level",
      rule: "Rule", message: "Message", since: "Since", ack: "Acknowledge", ackDo: "Acknowledge",
      acked: "Acknowledged", ackFailed: "Acknowledgement failed", offline: "Offline sensors",
      handleCol: "Handling",
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
      selected: "Selected sensor", chooseSensor: "Choose a sensor on the map or in the river list.",
      viewGauge: "Chart", lastReport: "Last report", staleSince: "Not reporting since",
      handling: "Handling", interval: "Reporting interval", seconds: "s", notReporting: "not reporting",
      rules: {
        flood_level: "Water level", rising_fast: "Rising fast", upstream: "Flood from upstream",
        congestion: "Congestion", lamp: "Street lamp", air_quality: "Air quality",
        offline: "Sensor offline", stuck: "Stuck value", rejected: "Rejected payloads",
      },
    },
  };
  // A sensor is stale after this many reporting intervals without a reading (the alert
  // service's default PANTAU_ALERTS__OFFLINE_INTERVALS_K), or while an offline alert is open.
  const OFFLINE_INTERVALS = 3;
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
  let alerts = [];
  let map = null;
  let gaugeView = null;
  let desk = null;
  let selectedId = null;

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
  const F = window.PantauFormat;
  const metres = (value) => `${F.number(value, 2, lang)} m`;

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
    return `${t("lastReading")} ${when(state.last_reading_at)}${value === undefined ? "" : ` (${metres(value)})`}`;
  }
  // The water level as current, or nothing when it is not (the "no data" note says what it was).
  function valueText(sensor) {
    const value = sensor.latest?.water_level?.value;
    if (value === undefined) return "–";
    return noData(sensor) ? "" : metres(value);
  }
  // What the note beside a gauge says: its last reading when it has no data, or that it is silent.
  const staleNote = (sensor) => staleText(sensor) || (isStale(sensor) ? t("notReporting") : "");
  function latestTime(sensor) {
    let newest = null;
    for (const r of Object.values(sensor.latest || {})) if (!newest || r.time > newest) newest = r.time;
    return newest;
  }
  function latestText(sensor) {
    const parts = [];
    for (const metric of MAIN_METRICS[sensor.family] || []) {
      const r = sensor.latest?.[metric];
      if (r) parts.push(F.reading(sensor.family, metric, r.value, lang));
    }
    return parts.join(" · ") || "–";
  }
  function isStale(sensor) {
    // A gauge: as /city/status says (the alert service's deadline, pantau.freshness).
    const state = gaugeStates.get(sensor.id);
    if (state) return Boolean(state.no_data);
    if (alerts.some((a) => a.rule === "offline" && a.sensor_id === sensor.id && (a.state ?? "open") === "open")) return true;
    const newest = latestTime(sensor);
    if (!newest) return true;
    return Date.now() - new Date(newest).getTime() > OFFLINE_INTERVALS * (sensor.interval_s ?? 60) * 1000;
  }
  const levelName = (level) => t("levels")[level] ?? String(level);
  const ruleName = (rule) => t("rules")[rule] ?? rule;
  // The API's name of an alert's level, in the page's language where it gives one.
  const alertLevelLabel = (a) => (lang === "en" ? a.level_label_en ?? a.level_label : a.level_label) ?? String(a.level);
  // Flood warnings in the flood levels' colours; every level by the name the API gives it.
  function alertBadge(a) {
    const known = FLOOD_RULES.has(a.rule) && Number.isInteger(a.level) && a.level >= 0 && a.level <= 3;
    return el("span", { class: `badge ${known ? `lvl-${a.level}` : "lvl-x"}`, text: alertLevelLabel(a) });
  }
  const alertMessage = (a) => (lang === "en" ? a.message_en : a.message) || a.message || a.rule;

  // ---------------------------------------------------------------- language
  function applyLanguage() {
    document.documentElement.lang = lang;
    for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
    const button = document.getElementById("lang");
    button.textContent = t("lang");
    button.setAttribute("aria-label", t("langLabel"));
    document.getElementById("map")?.setAttribute("aria-label", t("map"));
    renderAll();
    gaugeView?.relabel();
    if (desk?.current() !== null && desk?.current() !== undefined) desk.refresh();
  }

  // ---------------------------------------------------------------- map and selection
  function initMap() {
    map = window.PantauMap?.create({
      element: "map", legend: "legend", lang: () => lang, levelName, api,
      levelOf: (s) => (s.family === "flood_gauge" ? floodLevel(s) : null), isStale,
      describe: (s) => {
        const level = s.family === "flood_gauge" ? floodLevel(s) : null;
        return level === null ? latestText(s) : `${levelName(level)} · ${latestText(s)}`;
      },
      select,
    }) ?? null;
    document.getElementById("basemap")?.addEventListener("change", (event) => map?.setBaseMap(event.target.checked));
    gaugeView = window.PantauGauge?.create({ element: "gauge-view", lang: () => lang, levelName, levelBadge, api, when, el }) ?? null;
  }
  function renderMarkers() {
    map?.updateAll([...sensors.values()]);
  }

  /** Open a sensor: a gauge's view, or another sensor's latest values. */
  function select(sensorId, { scroll = true } = {}) {
    const sensor = sensors.get(sensorId);
    if (!sensor) return;
    selectedId = sensorId;
    const card = document.getElementById("sensor-card");
    if (!card) return;
    renderSelected();
    if (sensor.family === "flood_gauge") gaugeView?.show(sensorId);
    if (scroll) card.scrollIntoView({ block: "nearest" });
  }
  function renderSelected() {
    const detail = document.getElementById("sensor-detail");
    const gauge = document.getElementById("gauge-view");
    const sensor = sensors.get(selectedId);
    if (!detail) return;
    if (!sensor) {
      detail.replaceChildren(el("p", { class: "muted", text: t("chooseSensor") }));
      if (gauge) gauge.hidden = true;
      return;
    }
    if (gauge) gauge.hidden = sensor.family !== "flood_gauge";
    if (sensor.family === "flood_gauge") {
      detail.replaceChildren();
      return;
    }
    const rows = Object.entries(sensor.latest || {}).map(([metric, r]) => el("tr", { "data-metric": metric },
      el("th", { scope: "row", text: F.label(sensor.family, metric, lang) }),
      el("td", { text: F.value(sensor.family, metric, r.value, lang) }),
      el("td", { text: when(r.time) })));
    const stale = isStale(sensor);
    detail.replaceChildren(
      el("h3", { text: sensor.name }),
      el("p", { class: "muted", text: `${t("family")[sensor.family] ?? sensor.family} · ${sensor.kecamatan} · ${t("interval")} ${F.number(sensor.interval_s, 0, lang)} ${t("seconds")}` }),
      ...(stale ? [el("p", { class: "gauge-stale", text: `${t("staleSince")} ${when(latestTime(sensor)) || "–"}` })] : []),
      el("table", { class: "values" }, el("caption", { class: "sr", text: sensor.name }),
        el("thead", {}, el("tr", {}, el("th", { scope: "col", text: t("sensor") }), el("th", { scope: "col", text: t("latestCol") }), el("th", { scope: "col", text: t("timeCol") }))),
        el("tbody", {}, ...rows)));
  }
  function defaultGauge() {
    // The gauge most in need of a look: the highest level, then the furthest downstream.
    const gauges = [...sensors.values()].filter((s) => s.family === "flood_gauge");
    gauges.sort((a, b) => (floodLevel(b) ?? -1) - (floodLevel(a) ?? -1) || (b.river_km ?? 0) - (a.river_km ?? 0));
    return gauges[0]?.id ?? null;
  }

  // ---------------------------------------------------------------- sections
  function renderSensors() {
    const body = document.querySelector("#sensors tbody");
    if (!body) return;
    const rows = [...sensors.values()].sort((a, b) => a.id.localeCompare(b.id)).map((s) => {
      const latest = el("td", { class: "latest", text: latestText(s) });
      if (s.family === "flood_gauge") latest.prepend(gaugeBadge(s), " ");
      const stale = isStale(s);
      return el("tr", { "data-sensor": s.id, class: stale ? "stale" : "" },
        el("th", { scope: "row" }, el("span", { text: s.name }), el("br"), el("small", { class: "muted", text: s.id })),
        el("td", { text: t("family")[s.family] ?? s.family }),
        el("td", { text: s.kecamatan }),
        latest,
        el("td", { class: "time", text: when(latestTime(s)) + (stale ? ` · ${t("notReporting")}` : "") }));
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
        const bar = el("div", { class: "bar", role: "img", "aria-label": `${g.name}: ${value === undefined ? "–" : metres(value)}` });
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
        const open = el("button", { type: "button", class: "open-gauge", "data-sensor": g.id, "aria-controls": "sensor-card" });
        open.textContent = `${t("viewGauge")}: ${g.name}`;
        open.addEventListener("click", () => select(g.id));
        const stale = isStale(g);
        section.append(el("div", { class: `gauge${stale ? " stale" : ""}${noData(g) ? " no-data" : ""}`, "data-sensor": g.id },
          el("span", { class: "name", text: `${g.name}${g.river_km !== null && g.river_km !== undefined ? ` · km ${F.number(g.river_km, 0, lang)}` : ""}` }),
          el("span", {}, gaugeBadge(g), " ", el("span", { class: "value", text: valueText(g) }),
            " ", el("small", { class: "stale muted", text: staleNote(g) })),
          bar, open));
      }
      sections.push(section);
    }
    box.replaceChildren(...sections);
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
      const item = el("li", { "data-alert": String(a.id), "data-rule": a.rule ?? "" },
        alertBadge(a), " ", el("span", { class: "rule", text: ruleName(a.rule) }), " · ",
        el("strong", { text: sensor ? sensor.name : a.sensor_id }), " — ", el("span", { text: alertMessage(a) }));
      if (a.predicted_at && Number.isInteger(a.predicted_level) && a.predicted_level >= 1 && a.predicted_level <= 3) {
        // "Awas expected in N minutes" is the earliest warning there is: it must stand out.
        item.classList.add("forecast", `forecast-${a.predicted_level}`);
        item.append(el("strong", { class: "forecast-note", text: forecastText(a) }));
      }
      return item;
    }));
  }

  async function loadCityStatus() {
    // Every page needs the gauges' levels (the control page has no kecamatan table).
    const box = document.getElementById("city-status");
    try {
      const body = await api("/city/status");
      const all = body.kecamatan ?? items(body);
      gaugeStates.clear();
      for (const k of all) for (const g of k.flood?.by_gauge ?? []) gaugeStates.set(g.sensor_id, g);
      refreshGauges();
      if (!box) return;
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
      box?.replaceChildren(el("p", { class: "muted", text: t("unavailable") }));
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
      if (stale) stale.textContent = staleNote(sensor);
      const value = gauge.querySelector(".value");
      if (value) value.textContent = valueText(sensor);
      gauge.classList.toggle("no-data", noData(sensor));
      gauge.classList.toggle("stale", isStale(sensor));
    }
    const row = document.querySelector(`#sensors tr[data-sensor="${id}"] .latest`);
    if (row) {
      row.textContent = latestText(sensor);
      row.prepend(gaugeBadge(sensor), " ");
    }
    map?.update(sensor);
  }

  // ---------------------------------------------------------------- control page
  const apiKey = () => sessionStorage.getItem("pantau.apiKey") || "";

  function renderAlertTable() {
    const body = document.querySelector("#alerts tbody");
    if (!body) return;
    const open = alerts.filter((a) => a.state === undefined || a.state === "open").sort(byUrgency);
    body.replaceChildren(...open.map((a) => el("tr", { "data-alert": String(a.id) },
      el("td", {}, alertBadge(a)),
      el("td", { text: sensors.get(a.sensor_id)?.name ?? a.sensor_id }),
      el("td", { text: ruleName(a.rule) }),
      el("td", { text: alertMessage(a) }),
      el("td", { text: when(a.opened_at) }),
      desk ? desk.handlingCell(a) : el("td", { text: a.acknowledged_by ?? "" }))));
    const offline = document.getElementById("offline");
    if (offline) {
      const down = open.filter((a) => a.rule === "offline");
      offline.replaceChildren(...(down.length
        ? down.map((a) => el("li", { "data-sensor": a.sensor_id, text: `${sensors.get(a.sensor_id)?.name ?? a.sensor_id} — ${when(a.opened_at)}` }))
        : [el("li", { class: "muted", text: t("noneOffline") })]));
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
      el("td", { text: metres(r.value) }), el("td", { text: t("reasons")[r.reason] ?? r.reason })));
    return table(t("suspect"), ["timeCol", "sensor", "valueCol", "reason"], rows);
  });

  function initControl() {
    const form = document.getElementById("key-form");
    if (!form) return;
    desk = window.PantauDesk?.create({
      lang: () => lang, el, when, apiKey, sensorName: (id) => sensors.get(id)?.name ?? id,
      levelBadgeOf: alertBadge, ruleName, message: alertMessage, onChange: loadAlerts,
    }) ?? null;
    const input = document.getElementById("api-key");
    input.value = apiKey();
    const signedIn = async () => {
      await desk?.whoAmI();
      document.getElementById("key-state").textContent = [t("saved"), desk?.meText()].filter(Boolean).join(" ");
    };
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      sessionStorage.setItem("pantau.apiKey", input.value.trim());
      signedIn();
      loadRejected();
      if (desk?.current() !== null && desk?.current() !== undefined) desk.refresh();
      loadSuspect();
    });
    if (apiKey()) signedIn();
  }

  // ---------------------------------------------------------------- data and live updates
  function renderAll() {
    renderMarkers();
    renderSensors();
    renderRivers();
    renderWarnings();
    renderAlertTable();
    renderSelected();
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
    renderMarkers();
  }

  let alertTimer = null;
  function alertsChanged(event) {
    let changed;
    try { changed = JSON.parse(event?.data ?? "null"); } catch { changed = null; }
    clearTimeout(alertTimer);
    alertTimer = setTimeout(() => {
      loadAlerts();
      loadCityStatus();
      desk?.changed(changed?.alert_id);
      const gauge = gaugeView?.current();
      if (gauge && (!changed || changed.sensor_id === gauge)) gaugeView.show(gauge);
    }, 200);
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
      // The level itself comes from the alert service (after quality control), not the raw value.
      statusSoon();
      gaugeView?.push(reading);
    }
    map?.update(sensor);
    if (sensor.id === selectedId && sensor.family !== "flood_gauge") renderSelected();
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
    const catalogue = F.load(api).catch(() => {});  // without it, values keep their metric names
    try {
      for (const s of items(await api("/sensors"))) sensors.set(s.id, s);
    } catch (error) {
      document.querySelector("#sensors tbody")?.replaceChildren(el("tr", {}, el("td", { colspan: "5", text: `${t("unavailable")} (${error.message})` })));
    }
    await catalogue;
    applyLanguage();
    performance.mark("pantau:drawn");
    const first = defaultGauge();
    if (first) select(first, { scroll: false });
    await loadAlerts();
    focusSensor();
    connect();
    // A gauge goes stale without any event when the alert service itself stops: look again.
    setInterval(loadCityStatus, 30000);
  }

  // A notification links to its gauge as /?sensor=ID: bring it into view.
  function focusSensor() {
    const id = new URLSearchParams(location.search).get("sensor");
    if (!id) return;
    const node = document.querySelector(`.gauge[data-sensor="${CSS.escape(id)}"]`)
      || document.querySelector(`#sensors tr[data-sensor="${CSS.escape(id)}"]`);
    if (!node) return;
    node.classList.add("focused");
    node.scrollIntoView({ block: "center" });
  }

  start();
})();
