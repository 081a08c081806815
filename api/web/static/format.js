// Pantau pages: readable values. Labels, units and decimals come from the sensor catalogue
// (/catalogue), numbers are written the way the page's language writes them ("1,53 m" in
// Indonesian, "1.53 m" in English).
window.PantauFormat = (() => {
  "use strict";

  const metrics = new Map();
  const formats = new Map();
  const LOCALES = { id: "id-ID", en: "en-GB" };

  function numberFormat(lang, decimals) {
    const key = `${lang}/${decimals}`;
    let format = formats.get(key);
    if (!format) {
      format = new Intl.NumberFormat(LOCALES[lang] ?? LOCALES.id, {
        minimumFractionDigits: decimals, maximumFractionDigits: decimals,
      });
      formats.set(key, format);
    }
    return format;
  }

  /** Load the catalogue once; the pages fall back to metric names without it. */
  async function load(api) {
    const body = await api("/catalogue");
    for (const family of body.families ?? []) {
      for (const metric of family.metrics ?? []) metrics.set(`${family.family}/${metric.name}`, metric);
    }
  }

  const metric = (family, name) => metrics.get(`${family}/${name}`);

  /** A number in the language's way, with ``decimals`` decimals. */
  function number(value, decimals, lang) {
    if (typeof value !== "number" || !Number.isFinite(value)) return "–";
    return numberFormat(lang, decimals).format(value);
  }

  /** The metric's name in the language ("Tinggi muka air"). */
  function label(family, name, lang) {
    const m = metric(family, name);
    if (!m) return name;
    return lang === "en" ? m.label_en : m.label;
  }

  /** A value with its unit ("1,53 m"), or the name of a state ("menyala"). */
  function value(family, name, v, lang) {
    const m = metric(family, name);
    if (!m) return typeof v === "number" ? number(v, Number.isInteger(v) ? 0 : 2, lang) : String(v);
    const state = (m.states ?? []).find((s) => s.value === v);
    if (state) return lang === "en" ? state.label_en : state.label;
    const unit = lang === "en" ? m.symbol_en : m.symbol;
    const text = number(v * (m.scale ?? 1), m.decimals ?? 0, lang);
    return unit ? `${text} ${unit}` : text;
  }

  /** "Tinggi muka air 1,53 m". */
  const reading = (family, name, v, lang) => `${label(family, name, lang)} ${value(family, name, v, lang)}`;

  return { load, number, label, value, reading };
})();
