// Pantau pages: the gauge view. A flood gauge's last hours of water level against its Waspada,
// Siaga and Awas bands, the alert service's fitted rise and its dashed forecast to the predicted
// crossing of the next threshold, the alert changes as markers, and the rain beside it, from
// /gauges/ID (the rollups), kept live by the page's event stream.
window.PantauGauge = (() => {
  "use strict";

  const TEXT = {
    id: {
      level: "Tinggi muka air (tertinggi per selang)", fit: "Laju naik (garis tren)", forecast: "Perkiraan",
      rain: "Curah hujan per selang", bands: "Batas", markers: "Perubahan peringatan", now: "Sekarang",
      rising: "naik", falling: "turun", steady: "tetap", perHour: "m/jam", expected: "diperkirakan",
      within: "dalam", minutes: "menit", hours: "jam", stale: "Tidak melapor sejak", noData: "Belum ada data.",
      river: "Kali", km: "km", lastHours: "jam terakhir", chart: "Grafik", table: "Tabel nilai",
      time: "Waktu", value: "Nilai", loading: "Memuat…", failed: "Grafik tidak tersedia",
      noForecast: "Tidak ada perkiraan: air tidak naik menuju tingkat berikutnya.",
      span: "Rentang", spans: { 6: "6 jam", 24: "24 jam", 72: "3 hari" },
    },
    en: {
      level: "Water level (highest per interval)", fit: "Rise (trend line)", forecast: "Forecast",
      rain: "Rainfall per interval", bands: "Thresholds", markers: "Alert changes", now: "Now",
      rising: "rising", falling: "falling", steady: "steady", perHour: "m/h", expected: "expected",
      within: "in", minutes: "min", hours: "h", stale: "Not reporting since", noData: "No data yet.",
      river: "River", km: "km", lastHours: "hours", chart: "Chart", table: "Table of values",
      time: "Time", value: "Value", loading: "Loading…", failed: "Chart not available",
      noForecast: "No forecast: the water is not rising towards the next level.",
      span: "Span", spans: { 6: "6 hours", 24: "24 hours", 72: "3 days" },
    },
  };
  const BANDS = [
    ["waspada", "rgba(255, 214, 102, 0.45)", "#8a6d00"],
    ["siaga", "rgba(255, 166, 77, 0.45)", "#8a4300"],
    ["awas", "rgba(214, 40, 40, 0.22)", "#8f1010"],
  ];
  const LEVEL_COLOURS = ["#2e8b57", "#b08a00", "#d06a00", "#b71c1c"];
  const seconds = (iso) => new Date(iso).getTime() / 1000;

  /**
   * The gauge view in ``ctx.element``. ``ctx``: lang(), levelName(level), levelBadge(level),
   * api(path), when(iso), el(tag, attrs, ...children).
   */
  function create(ctx) {
    const box = document.getElementById(ctx.element);
    if (!box) return null;
    const t = (key) => (TEXT[ctx.lang()] ?? TEXT.id)[key];
    const F = window.PantauFormat;
    const num = (v, d) => F.number(v, d, ctx.lang());
    let view = null;
    let sensorId = null;
    let plots = [];
    let live = [];
    let refreshing = 0;
    let hours = 24;

    function destroy() {
      for (const p of plots) p.destroy();
      plots = [];
    }

    function levelOfValue(value) {
      const th = view?.thresholds;
      if (!th || typeof value !== "number") return null;
      if (value >= th.awas) return 3;
      if (value >= th.siaga) return 2;
      if (value >= th.waspada) return 1;
      return 0;
    }

    function span(ms) {
      const minutes = Math.max(0, Math.round(ms / 60000));
      if (minutes < 90) return `${minutes} ${t("minutes")}`;
      return `${num(minutes / 60, 1)} ${t("hours")}`;
    }

    function summary() {
      const s = view.status;
      const latest = live.length ? live[live.length - 1] : view.latest;
      const value = latest?.value;
      // A gauge past its deadline has no level now: its last one is history (pantau.freshness).
      const level = view.stale ? null : (s?.level ?? levelOfValue(value));
      const parts = [];
      const head = ctx.el("p", { class: "gauge-now" });
      if (level !== null && level !== undefined) head.append(ctx.levelBadge(level), " ");
      head.append(ctx.el("strong", { class: "gauge-value", text: value === undefined ? "–" : `${num(value, 2)} m` }));
      if (latest?.time) head.append(" ", ctx.el("span", { class: "muted", text: ctx.when(latest.time) }));
      if (s && typeof s.rate_m_per_h === "number") {
        const rate = s.rate_m_per_h;
        const word = rate > 0.005 ? t("rising") : rate < -0.005 ? t("falling") : t("steady");
        head.append(" · ", ctx.el("span", { class: "gauge-rate", text: `${word} ${num(Math.abs(rate), 2)} ${t("perHour")}` }));
      }
      parts.push(head);
      if (view.stale) {
        parts.push(ctx.el("p", { class: "gauge-stale", text: `${t("stale")} ${latest?.time ? ctx.when(latest.time) : "–"}` }));
      }
      if (!view.stale && view.forecast.length === 2 && s?.next_level !== null && s?.next_level !== undefined) {
        const crossing = view.forecast[1];
        const ahead = new Date(crossing.time).getTime() - Date.now();
        const text = `${ctx.levelName(s.next_level)} ${t("expected")} ${ctx.when(crossing.time)}`
          + (ahead > 0 ? ` (${t("within")} ${span(ahead)})` : "");
        parts.push(ctx.el("p", { class: `gauge-forecast lvl-text-${s.next_level}`, text }));
      } else if (view.status) {
        parts.push(ctx.el("p", { class: "muted", text: t("noForecast") }));
      }
      return parts;
    }

    function legend() {
      const th = view.thresholds;
      const items = [
        ["line-level", t("level")],
        ...(view.fit.length ? [["line-fit", t("fit")]] : []),
        ...(view.forecast.length ? [["line-forecast", `${t("forecast")}: ${ctx.levelName(view.status?.next_level ?? 0)} ${ctx.when(view.forecast[1].time)}`]] : []),
        ...(th ? BANDS.map(([k], i) => [`band-${k}`, `${ctx.levelName(i + 1)} ≥ ${num(th[k], 2)} m`]) : []),
        ...(view.alerts.length ? [["mark-alert", t("markers")]] : []),
        ["bar-rain", t("rain")],
      ];
      return ctx.el("ul", { class: "gauge-legend" }, ...items.map(([cls, text]) =>
        ctx.el("li", { "data-legend": cls }, ctx.el("span", { class: `swatch ${cls}`, "aria-hidden": "true" }), " ", text)));
    }

    function table() {
      // The chart's values for those who cannot see it: the last hours, every half hour.
      const rows = view.water_level.points.filter((_, i, all) => (all.length - 1 - i) % 6 === 0).slice(-12);
      const body = rows.map((p) => ctx.el("tr", {}, ctx.el("td", { text: ctx.when(p.time) }), ctx.el("td", { text: `${num(p.max, 2)} m` })));
      return ctx.el("details", { class: "gauge-table" }, ctx.el("summary", { text: t("table") }),
        ctx.el("table", {}, ctx.el("thead", {}, ctx.el("tr", {}, ctx.el("th", { scope: "col", text: t("time") }), ctx.el("th", { scope: "col", text: t("value") }))),
          ctx.el("tbody", {}, ...body)));
    }

    function series() {
      const level = view.water_level.points.map((p) => [seconds(p.time), p.max]);
      for (const r of live) if (!level.length || seconds(r.time) > level[level.length - 1][0]) level.push([seconds(r.time), r.value]);
      const fit = view.fit.map((p) => [seconds(p.time), p.value]);
      const forecast = view.forecast.map((p) => [seconds(p.time), p.value]);
      const xs = [...new Set([...level, ...fit, ...forecast].map((p) => p[0]))].sort((a, b) => a - b);
      const column = (points) => {
        const at = new Map(points);
        return xs.map((x) => (at.has(x) ? at.get(x) : null));
      };
      return { xs, level, data: [xs, column(level), column(fit), column(forecast)] };
    }

    function draw() {
      destroy();
      const chart = box.querySelector(".gauge-chart");
      const rainBox = box.querySelector(".gauge-rain");
      if (!window.uPlot || !chart) return;
      const { xs, level, data } = series();
      const th = view.thresholds;
      const start = seconds(view.start);
      const end = Math.max(seconds(view.end), ...xs);
      const room = (end - start) * 0.02;
      const values = data.slice(1).flat().filter((v) => typeof v === "number");
      const top = Math.max(th ? th.awas * 1.12 : 1, ...values) ;
      const bottom = Math.min(th ? th.waspada * 0.5 : 0, ...values);
      const width = Math.max(300, chart.clientWidth || 600);
      const tz = (ts) => uPlot.tzDate(new Date(ts * 1000), "Asia/Jakarta");
      const xAxis = { stroke: "#3e4c59", grid: { stroke: "#e4e7eb" }, ticks: { stroke: "#cbd2d9" } };
      const lang = ctx.lang();
      const locale = lang === "en" ? "en-GB" : "id-ID";
      const clock = new Intl.DateTimeFormat(locale, { timeZone: "Asia/Jakarta", hour: "2-digit", minute: "2-digit" });
      const day = new Intl.DateTimeFormat(locale, { timeZone: "Asia/Jakarta", day: "numeric", month: "short" });
      // Times in WIB the page's way; the day under the first tick and under each new day.
      const times = (u, splits) => splits.map((ts, i) => {
        const date = new Date(ts * 1000);
        const first = i === 0 || day.format(new Date(splits[i - 1] * 1000)) !== day.format(date);
        return first ? `${clock.format(date)}\n${day.format(date)}` : clock.format(date);
      });
      const options = {
        width, height: 260, tzDate: tz, legend: { show: false }, padding: [10, 16, 0, 0],
        cursor: { sync: { key: `gauge-${view.sensor.id}` }, points: { show: false } },
        scales: { x: { time: true, range: [start, end + room] }, y: { range: [bottom - 0.1, top] } },
        series: [
          {},
          { label: t("level"), stroke: "#0b5cad", width: 2 },
          { label: t("fit"), stroke: "#102a43", width: 1.5, spanGaps: true },
          { label: t("forecast"), stroke: "#102a43", width: 2.5, dash: [9, 6], spanGaps: true, points: { show: true, size: 8, fill: "#fff" } },
        ],
        axes: [
          { ...xAxis, values: times },
          { ...xAxis, size: 64, values: (u, splits) => splits.map((v) => `${F.number(v, 1, lang)} m`) },
        ],
        hooks: {
          drawClear: [(u) => {
            if (!th) return;
            const limits = [th.waspada, th.siaga, th.awas, u.scales.y.max];
            u.ctx.save();
            BANDS.forEach(([, fill], i) => {
              const yTop = u.valToPos(Math.min(limits[i + 1], u.scales.y.max), "y", true);
              const yBottom = u.valToPos(limits[i], "y", true);
              u.ctx.fillStyle = fill;
              u.ctx.fillRect(u.bbox.left, yTop, u.bbox.width, yBottom - yTop);
            });
            u.ctx.restore();
          }],
          draw: [(u) => {
            const c = u.ctx;
            c.save();
            if (th) {
              // The bands' names over the grid, at the foot of each band.
              c.font = `600 ${Math.round(11 * devicePixelRatio)}px system-ui, sans-serif`;
              c.textAlign = "left";  // the axes leave it right-aligned
              c.textBaseline = "alphabetic";
              BANDS.forEach(([key, , ink], i) => {
                c.fillStyle = ink;
                c.fillText(`${ctx.levelName(i + 1)} ${F.number(th[key], 2, lang)} m`, u.bbox.left + 6 * devicePixelRatio, u.valToPos(th[key], "y", true) - 4 * devicePixelRatio);
              });
            }
            const y0 = u.bbox.top;
            const y1 = u.bbox.top + u.bbox.height;
            // Now, then each alert change, as vertical marks.
            const marks = [[seconds(view.end), "#52606d", t("now"), [2, 3]],
              ...view.alerts.map((a) => [seconds(a.observed_at), LEVEL_COLOURS[Math.min(3, a.level)] ?? "#52606d", a.level_label, []])];
            for (const [x, colour, text, dash] of marks) {
              if (x < u.scales.x.min || x > u.scales.x.max) continue;
              const px = u.valToPos(x, "x", true);
              c.strokeStyle = colour;
              c.fillStyle = colour;
              c.lineWidth = devicePixelRatio;
              c.setLineDash(dash.map((d) => d * devicePixelRatio));
              c.beginPath();
              c.moveTo(px, y0);
              c.lineTo(px, y1);
              c.stroke();
              c.setLineDash([]);
              c.beginPath();
              c.moveTo(px - 4 * devicePixelRatio, y0);
              c.lineTo(px + 4 * devicePixelRatio, y0);
              c.lineTo(px, y0 + 6 * devicePixelRatio);
              c.fill();
            }
            c.restore();
          }],
        },
      };
      plots.push(new uPlot(options, data, chart));
      const rain = view.rainfall.points.map((p) => [seconds(p.time), p.mm]);
      if (rainBox) {
        const rainOptions = {
          width, height: 90, tzDate: tz, legend: { show: false }, padding: [12, 16, 0, 0],
          cursor: { sync: { key: `gauge-${view.sensor.id}` }, points: { show: false } },
          scales: { x: { time: true, range: [start, end + room] }, y: { range: (u, lo, hi) => [0, Math.max(1, hi ?? 1)] } },
          series: [{}, { label: t("rain"), fill: "rgba(90, 155, 213, 0.8)", stroke: "#3a78b5", paths: uPlot.paths.bars({ size: [0.9, 20] }) }],
          axes: [{ ...xAxis, show: false }, { ...xAxis, size: 64, values: (u, splits) => splits.map((v) => `${F.number(v, 1, lang)} mm`) }],
        };
        plots.push(new uPlot(rainOptions, [rain.map((p) => p[0]), rain.map((p) => p[1])], rainBox));
      }
      box.dataset.readings = String(level.length);
    }

    function render() {
      const s = view.sensor;
      const where = [s.river ? `${t("river")} ${s.river}${s.river_km !== null ? `, ${t("km")} ${num(s.river_km, 0)}` : ""}` : null, s.kecamatan]
        .filter(Boolean).join(" · ");
      const th = view.thresholds;
      box.dataset.sensor = s.id;
      box.dataset.hours = String(hours);
      box.dataset.thresholds = th ? [th.waspada, th.siaga, th.awas].join(",") : "";
      box.dataset.forecast = String(view.forecast.length);
      box.dataset.forecastTo = view.forecast.length ? view.forecast[view.forecast.length - 1].time : "";
      box.dataset.fit = String(view.fit.length);
      box.dataset.alerts = String(view.alerts.length);
      const description = [s.name, ...summary().map((p) => p.textContent)].join(". ");
      box.replaceChildren(
        ctx.el("h3", { class: "gauge-title", text: s.name }),
        ctx.el("p", { class: "muted", text: where }),
        ...summary(),
        spans(),
        ctx.el("div", { class: "gauge-chart", role: "img", "aria-label": `${t("chart")}: ${description}` }),
        ctx.el("div", { class: "gauge-rain", role: "img", "aria-label": t("rain") }),
        legend(),
        table(),
      );
      if (!view.water_level.points.length && !live.length) {
        box.querySelector(".gauge-chart").replaceChildren(ctx.el("p", { class: "muted", text: t("noData") }));
      }
      draw();
    }

    function spans() {
      const group = ctx.el("p", { class: "gauge-spans", role: "group", "aria-label": t("span") });
      for (const h of [6, 24, 72]) {
        const button = ctx.el("button", { type: "button", "data-hours": String(h), "aria-pressed": String(h === hours) });
        button.textContent = t("spans")[h];
        button.addEventListener("click", () => { hours = h; show(sensorId); });
        group.append(button);
      }
      return group;
    }

    /** Show the gauge ``id`` (fetches its view). */
    async function show(id) {
      sensorId = id;
      live = [];
      if (!view || view.sensor.id !== id) box.replaceChildren(ctx.el("p", { class: "muted", text: t("loading") }));
      try {
        const body = await ctx.api(`/gauges/${encodeURIComponent(id)}?hours=${hours}`);
        if (sensorId !== id) return;
        view = body;
        render();
      } catch (error) {
        box.replaceChildren(ctx.el("p", { class: "muted", text: `${t("failed")} (${error.message})` }));
      }
    }

    /** A live reading: drawn at once; the rise and forecast are fetched again now and then. */
    function push(reading) {
      if (!view || reading.sensor_id !== sensorId || reading.metric !== "water_level") return;
      live.push({ time: reading.time, value: reading.value });
      render();
      const now = Date.now();
      if (now - refreshing > 15000) {
        refreshing = now;
        show(sensorId);
      }
    }

    function relabel() {
      if (view) render();
    }

    window.addEventListener("resize", () => { if (view) draw(); });
    return { show, push, relabel, current: () => sensorId };
  }

  return { create };
})();
