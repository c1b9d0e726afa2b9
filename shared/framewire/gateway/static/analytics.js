// Cameras page, analytics: each camera's zones and lines drawn over its last frame (an SVG in
// the frame's pixels, laid over the canvas), its latest window counts and recent alerts, kept
// live by the events and alerts streams.
"use strict";

(() => {
  const API = document.body.dataset.api || "/api/v1";
  const SVG = "http://www.w3.org/2000/svg";
  const get = async (path) => {
    const response = await fetch(API + path, { credentials: "same-origin" });
    return response.ok ? response.json() : null;
  };
  const el = (tag, attrs = {}, text = null) => {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== null) node.textContent = text;
    return node;
  };

  function overlay(card, settings, width, height) {
    const frame = card.querySelector(".frame");
    frame.querySelector("svg.zones")?.remove();
    if (!settings.lines.length && !settings.zones.length) return;
    const svg = el("svg", { class: "zones", viewBox: `0 0 ${width} ${height}`,
                            preserveAspectRatio: "none" });
    const size = Math.max(width, height) / 60;
    for (const z of settings.zones) {
      svg.append(el("polygon", { points: z.points.map((p) => p.join(",")).join(" "),
                                 class: "zone" }));
      svg.append(el("text", { x: z.points[0][0] + size / 2, y: z.points[0][1] + size * 1.5,
                              "font-size": size * 1.4, class: "label" }, z.name));
    }
    for (const l of settings.lines) {
      const [[x1, y1], [x2, y2]] = l.points;
      svg.append(el("line", { x1, y1, x2, y2, class: "line" }));
      svg.append(el("text", { x: (x1 + x2) / 2 + size / 2, y: (y1 + y2) / 2,
                              "font-size": size * 1.4, class: "label" }, l.name));
    }
    frame.append(svg);
  }

  // the newest window of each kind: its counts per line or zone, event type and direction
  function showCounts(entry) {
    const list = entry.card.querySelector(".counts");
    list.replaceChildren();
    const newest = {};
    for (const e of entry.windows) {
      const w = e.window;
      if (!newest[w.kind] || w.end > newest[w.kind]) newest[w.kind] = w.end;
    }
    const rows = entry.windows.filter((e) => e.window.end === newest[e.window.kind]);
    rows.sort((a, b) => (a.window.kind + a.name).localeCompare(b.window.kind + b.name));
    for (const e of rows) {
      const w = e.window;
      const li = document.createElement("li");
      li.textContent = `${e.name} ${w.counted}${w.direction ? " " + w.direction : ""}: ` +
        `${w.count} (${w.kind} to ${new Date(w.end).toLocaleTimeString()})`;
      list.append(li);
    }
    if (!rows.length) list.innerHTML = "<li>no window counted yet</li>";
  }

  function showAlerts(entry) {
    const list = entry.card.querySelector(".alerts");
    list.replaceChildren();
    for (const a of entry.alerts.slice(0, 5)) {
      const li = document.createElement("li");
      li.className = a.state;
      li.textContent = `${new Date(a.at).toLocaleTimeString()} ${a.rule} ${a.state} ` +
        `(${a.value}, peak ${a.peak})`;
      list.append(li);
    }
    if (!entry.alerts.length) list.innerHTML = "<li>no alerts</li>";
  }

  async function camera(entry, id) {
    const q = encodeURIComponent(id);
    const [settings, results, windows, alerts] = await Promise.all([
      get(`/cameras/${q}/analytics`), get(`/results?camera=${q}&limit=1`),
      get(`/events?camera=${q}&type=window_count&limit=50`), get(`/alerts?camera=${q}&limit=5`)]);
    if (settings) {
      const points = [...settings.lines, ...settings.zones].flatMap((s) => s.points);
      const result = results && results[0];
      const width = result ? result.orig_width : Math.max(1, ...points.map((p) => p[0]));
      const height = result ? result.orig_height : Math.max(1, ...points.map((p) => p[1]));
      overlay(entry.card, settings, width, height);
    }
    entry.windows = windows || [];
    entry.alerts = alerts || [];
    showCounts(entry);
    showAlerts(entry);
  }

  document.addEventListener("DOMContentLoaded", () => {
    if (document.body.dataset.page !== "cameras") return;
    const entries = new Map();
    for (const card of document.querySelectorAll("article[data-camera]")) {
      if (!card.querySelector(".analytics")) continue;
      const entry = { card, windows: [], alerts: [] };
      entries.set(card.dataset.camera, entry);
      camera(entry, card.dataset.camera);
    }
    if (!entries.size) return;
    const events = new EventSource(`${API}/events/stream?type=window_count`);
    events.addEventListener("analytics_event", (message) => {
      const e = JSON.parse(message.data), entry = entries.get(e.camera_id);
      if (!entry) return;
      entry.windows = [e, ...entry.windows].slice(0, 50);
      showCounts(entry);
    });
    const alerts = new EventSource(`${API}/alerts/stream`);
    alerts.addEventListener("alert", (message) => {
      const a = JSON.parse(message.data), entry = entries.get(a.camera_id);
      if (!entry) return;
      entry.alerts = [a, ...entry.alerts];
      showAlerts(entry);
    });
  });
})();
