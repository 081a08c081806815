// Pantau control page: working an alert. The open alerts with who acknowledged and who handles
// each; one alert's panel acknowledges it with a note, assigns it, takes comments and shows its
// whole history (/alerts/ID/history: changes, operators' actions, warning-post commands,
// what was handed to Alertmanager).
window.PantauDesk = (() => {
  "use strict";

  const TEXT = {
    id: {
      handle: "Tangani", acked: "Dikonfirmasi", notAcked: "Belum dikonfirmasi", assigned: "Ditangani",
      nobody: "Belum ditugaskan", panel: "Peringatan", note: "Catatan (opsional)", ackDo: "Konfirmasi",
      assignee: "Ditugaskan kepada", assignDo: "Tugaskan", mine: "Saya ambil", release: "Lepaskan",
      comment: "Catatan baru", commentDo: "Tambah catatan", history: "Riwayat", close: "Tutup",
      needKey: "Masukkan kunci API operator untuk menangani peringatan.", failed: "Gagal",
      me: "Masuk sebagai", saved: "Tersimpan.", by: "oleh", to: "kepada",
      kinds: {
        opened: "Peringatan dibuka", escalated: "Naik tingkat", "de-escalated": "Turun tingkat",
        resolved: "Peringatan selesai", acknowledged: "Dikonfirmasi", assigned: "Ditugaskan",
        unassigned: "Tugas dilepas", commented: "Catatan", command: "Perintah ke pos peringatan",
        firing: "Dikirim ke Alertmanager", resolved_sent: "Akhir dikirim ke Alertmanager",
      },
      light: { off: "lampu mati", yellow: "lampu kuning", red: "lampu merah" },
      siren: "sirene berbunyi", noSiren: "sirene mati", observed: "pembacaan",
    },
    en: {
      handle: "Handle", acked: "Acknowledged", notAcked: "Not acknowledged", assigned: "Handled by",
      nobody: "Not assigned", panel: "Alert", note: "Note (optional)", ackDo: "Acknowledge",
      assignee: "Assigned to", assignDo: "Assign", mine: "Take it", release: "Release",
      comment: "New note", commentDo: "Add note", history: "History", close: "Close",
      needKey: "Enter an operator API key to handle alerts.", failed: "Failed",
      me: "Signed in as", saved: "Saved.", by: "by", to: "to",
      kinds: {
        opened: "Alert opened", escalated: "Escalated", "de-escalated": "De-escalated",
        resolved: "Alert resolved", acknowledged: "Acknowledged", assigned: "Assigned",
        unassigned: "Released", commented: "Note", command: "Command to the warning posts",
        firing: "Sent to Alertmanager", resolved_sent: "End sent to Alertmanager",
      },
      light: { off: "light off", yellow: "yellow light", red: "red light" },
      siren: "siren sounding", noSiren: "siren off", observed: "reading",
    },
  };

  /**
   * ``ctx``: lang(), el(), when(iso), apiKey(), sensorName(id), levelBadgeOf(alert),
   * ruleName(rule), message(alert), onChange() (the alerts changed: reload them).
   */
  function create(ctx) {
    const panel = document.getElementById("alert-panel");
    if (!panel) return null;
    const t = (key) => (TEXT[ctx.lang()] ?? TEXT.id)[key];
    let openId = null;
    let me = null;
    let known = [];

    async function send(path, body, method = "POST") {
      const response = await fetch(path, {
        method,
        headers: { "X-API-Key": ctx.apiKey(), Accept: "application/json", ...(body ? { "Content-Type": "application/json" } : {}) },
        body: body ? JSON.stringify(body) : undefined,
      });
      if (!response.ok) {
        let detail = String(response.status);
        try { detail = (await response.json()).detail ?? detail; } catch { /* not JSON */ }
        throw new Error(detail);
      }
      return response.status === 204 ? null : response.json();
    }

    async function whoAmI() {
      me = null;
      if (!ctx.apiKey()) return null;
      try {
        me = await send("/operator/me", null, "GET");
      } catch { /* shown by the forms when they fail */ }
      return me;
    }

    function handlingCell(alert) {
      const cell = ctx.el("td", { class: "handling" });
      const acked = alert.acknowledged_at
        ? ctx.el("span", { class: "acked", text: `${t("acked")}: ${alert.acknowledged_by ?? ""}` })
        : ctx.el("span", { class: "not-acked", text: t("notAcked") });
      const who = alert.assigned_to
        ? ctx.el("span", { class: "assignee", text: `${t("assigned")}: ${alert.assigned_to}` })
        : ctx.el("span", { class: "muted", text: t("nobody") });
      const button = ctx.el("button", { type: "button", class: "ack", "data-alert": String(alert.id), "aria-controls": "alert-panel" });
      button.textContent = alert.acknowledged_at ? t("handle") : `${t("ackDo")} / ${t("handle")}`;
      button.addEventListener("click", () => open(alert.id));
      cell.append(acked, ctx.el("br"), who, ctx.el("br"), button);
      return cell;
    }

    function entryText(entry) {
      const kinds = t("kinds");
      const parts = [kinds[entry.source === "notification" && entry.kind === "resolved" ? "resolved_sent" : entry.kind] ?? entry.kind];
      if (entry.source === "notification") {
        if (entry.level_label) parts[0] += `: ${entry.level_label}`;
      } else if (entry.source === "alert_service") {
        if (entry.level_label) parts[0] += `: ${entry.level_label}`;
        const message = ctx.lang() === "en" ? entry.message_en : entry.message;
        if (message) parts.push(message);
      } else if (entry.source === "operator") {
        if (entry.kind === "assigned" && entry.assignee) parts[0] += ` ${t("to")} ${entry.assignee}`;
        parts[0] += ` ${t("by")} ${entry.actor}`;
        if (entry.note) parts.push(entry.note);
      } else if (entry.source === "warning_post" && entry.command) {
        const light = t("light")[entry.command.light] ?? entry.command.light;
        parts.push(`${light}, ${entry.command.siren ? t("siren") : t("noSiren")}`);
      } else if (entry.note) {
        parts.push(entry.note);
      }
      return parts.join(" — ");
    }

    function renderHistory(history) {
      const alert = history.alert;
      for (const item of history.entries) if (item.actor && !known.includes(item.actor)) known.push(item.actor);
      for (const item of history.entries) if (item.assignee && !known.includes(item.assignee)) known.push(item.assignee);
      const list = ctx.el("ol", { id: "history", class: "history" }, ...history.entries.map((entry) =>
        ctx.el("li", { "data-source": entry.source, "data-kind": entry.kind },
          // An alert change at the time of its reading; the rest when they were done.
          ctx.el("time", { datetime: entry.observed_at ?? entry.at, text: ctx.when(entry.observed_at ?? entry.at) }), " ",
          ctx.el("span", { text: entryText(entry) }))));
      const title = ctx.el("h3", { id: "alert-panel-title" }, ctx.levelBadgeOf(alert), " ",
        `${t("panel")} #${alert.id}: ${ctx.sensorName(alert.sensor_id)} — ${ctx.ruleName(alert.rule)}`);
      const state = ctx.el("p", { id: "panel-state", class: "muted", "aria-live": "polite" });
      const fail = (error) => { state.textContent = `${t("failed")}: ${error.message}`; };

      const note = ctx.el("textarea", { id: "ack-note", rows: "2", maxlength: "2000" });
      const ackButton = ctx.el("button", { type: "submit", id: "ack-submit", text: alert.acknowledged_at ? `${t("acked")} (${alert.acknowledged_by})` : t("ackDo") });
      if (alert.acknowledged_at) ackButton.disabled = true;
      const ackForm = ctx.el("form", { id: "ack-form", class: "desk-form" },
        ctx.el("label", { for: "ack-note", text: t("note") }), note, ackButton);
      ackForm.addEventListener("submit", async (event) => {
        event.preventDefault();
        ackButton.disabled = true;
        try {
          await send(`/alerts/${alert.id}/ack`, note.value.trim() ? { note: note.value.trim() } : null);
          state.textContent = t("saved");
          await refresh();
          ctx.onChange();
        } catch (error) { ackButton.disabled = false; fail(error); }
      });

      const options = ctx.el("datalist", { id: "people" }, ...known.map((name) => ctx.el("option", { value: name })));
      const assignee = ctx.el("input", { id: "assignee", list: "people", maxlength: "100", autocomplete: "off" });
      assignee.value = alert.assigned_to ?? "";
      const assignNote = ctx.el("input", { id: "assign-note", maxlength: "2000", autocomplete: "off" });
      const assignButton = ctx.el("button", { type: "submit", id: "assign-submit", text: t("assignDo") });
      const mine = ctx.el("button", { type: "button", id: "assign-me", text: t("mine") });
      const release = ctx.el("button", { type: "button", id: "assign-release", text: t("release") });
      const assign = async (name) => {
        try {
          const body = { assignee: name || null };
          if (assignNote.value.trim()) body.note = assignNote.value.trim();
          renderHistory(await send(`/alerts/${alert.id}/assign`, body));
          document.getElementById("panel-state").textContent = t("saved");
          ctx.onChange();
        } catch (error) { fail(error); }
      };
      const assignForm = ctx.el("form", { id: "assign-form", class: "desk-form" },
        ctx.el("label", { for: "assignee", text: t("assignee") }), assignee, options,
        ctx.el("label", { for: "assign-note", text: t("note") }), assignNote, assignButton, mine, release);
      assignForm.addEventListener("submit", (event) => { event.preventDefault(); assign(assignee.value.trim()); });
      mine.addEventListener("click", async () => { const who = me ?? await whoAmI(); if (who) assign(who.display_name); });
      release.addEventListener("click", () => assign(""));

      const text = ctx.el("textarea", { id: "comment-text", rows: "2", maxlength: "2000" });
      const commentForm = ctx.el("form", { id: "comment-form", class: "desk-form" },
        ctx.el("label", { for: "comment-text", text: t("comment") }), text,
        ctx.el("button", { type: "submit", id: "comment-submit", text: t("commentDo") }));
      commentForm.addEventListener("submit", async (event) => {
        event.preventDefault();
        if (!text.value.trim()) return;
        try {
          renderHistory(await send(`/alerts/${alert.id}/comments`, { text: text.value.trim() }));
          document.getElementById("panel-state").textContent = t("saved");
        } catch (error) { fail(error); }
      });
      const close = ctx.el("button", { type: "button", class: "close", text: t("close") });
      close.addEventListener("click", () => { openId = null; panel.hidden = true; });

      panel.dataset.alert = String(alert.id);
      panel.replaceChildren(title, ctx.el("p", { text: ctx.message(alert) }),
        ctx.el("div", { class: "desk-forms" }, ackForm, assignForm, commentForm), state,
        ctx.el("h4", { text: t("history") }), list, close);
      panel.hidden = false;
    }

    async function refresh() {
      if (openId === null) return;
      try {
        renderHistory(await send(`/alerts/${openId}/history`, null, "GET"));
      } catch (error) {
        panel.replaceChildren(ctx.el("p", { class: "muted", text: `${t("failed")}: ${error.message}` }));
      }
    }

    /** Open alert ``id``'s panel. */
    async function open(id) {
      openId = id;
      panel.hidden = false;
      if (!ctx.apiKey()) {
        panel.replaceChildren(ctx.el("p", { class: "muted", text: t("needKey") }));
        return;
      }
      await refresh();
      panel.querySelector("#ack-note")?.focus();
    }

    /** The alerts changed (stream): the open panel follows. */
    function changed(alertId) {
      if (openId !== null && (alertId === undefined || alertId === openId)) refresh();
    }

    return { handlingCell, open, changed, whoAmI, refresh, current: () => openId, meText: () => (me ? `${t("me")} ${me.display_name}` : "") };
  }

  return { create };
})();
