// Framewire dashboard: a little script over server-rendered pages (no framework, no network
// beyond the gateway). The API accepts the page's HttpOnly cookie, so fetch sends no token.
"use strict";

const API = document.body.dataset.api || "/api/v1";

async function api(path, options = {}) {
  const response = await fetch(API + path, {
    credentials: "same-origin",
    headers: options.body ? { "Content-Type": "application/json" } : {},
    ...options,
  });
  let data = null;
  const text = await response.text();
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = text; }
  return { ok: response.ok, status: response.status, data };
}

function detail(answer) {
  const d = answer.data;
  if (d && typeof d === "object" && d.detail !== undefined) {
    return typeof d.detail === "string" ? d.detail : JSON.stringify(d.detail);
  }
  return `HTTP ${answer.status}`;
}

// Draw a result's stored frame (or thumbnail) on a canvas, with its boxes scaled from the
// original frame's pixels (orig_width x orig_height) to the canvas.
function drawResult(canvas, result, full) {
  const url = full ? (result.frame_url || result.thumbnail_url)
                   : (result.thumbnail_url || result.frame_url);
  const width = result.orig_width || 16, height = result.orig_height || 9;
  canvas.height = Math.round(canvas.width * height / width);
  const ctx = canvas.getContext("2d");
  const boxes = () => {
    const sx = canvas.width / width, sy = canvas.height / height;
    ctx.lineWidth = Math.max(2, canvas.width / 320);
    ctx.font = `${Math.max(11, canvas.width / 40)}px sans-serif`;
    for (const d of result.detections || []) {
      ctx.strokeStyle = "#ffd400";
      ctx.strokeRect(d.x1 * sx, d.y1 * sy, (d.x2 - d.x1) * sx, (d.y2 - d.y1) * sy);
      ctx.fillStyle = "#ffd400";
      ctx.fillText(`${d.label} ${d.score.toFixed(2)}`, d.x1 * sx + 2, Math.max(12, d.y1 * sy - 3));
    }
    canvas.dataset.frameId = result.frame_id;
  };
  if (!url) {
    ctx.fillStyle = "#30343b";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    boxes();
    return;
  }
  const image = new Image();
  image.onload = () => { ctx.drawImage(image, 0, 0, canvas.width, canvas.height); boxes(); };
  image.src = url;
}

function showResults() {
  for (const holder of document.querySelectorAll("[data-result]")) {
    drawResult(holder.querySelector("canvas"), JSON.parse(holder.dataset.result),
               holder.dataset.full === "1");
  }
}

// --- overview: the server renders it again every few seconds
function refreshing() {
  const box = document.querySelector("[data-refresh]");
  if (!box) return;
  setInterval(async () => {
    const response = await fetch(location.pathname + "?fragment=1", { credentials: "same-origin" });
    if (response.ok) document.getElementById("main").innerHTML = await response.text();
  }, Number(box.dataset.refresh));
}

// --- cameras: the last frame of each, kept live by the result stream
function cameras() {
  const cards = new Map();
  for (const card of document.querySelectorAll("article[data-camera]")) {
    cards.set(card.dataset.camera, { card, times: [], newest: null });
  }
  const show = (result) => {
    const entry = cards.get(result.camera_id);
    if (!entry) return;
    const captured = Date.parse(result.captured_at);
    if (entry.newest !== null && captured < entry.newest) return;
    entry.newest = captured;
    entry.times = entry.times.filter((t) => t > captured - 30000).concat([captured]).slice(-20);
    const { card, times } = entry;
    card.querySelector(".none")?.remove();
    drawResult(card.querySelector("canvas"), result, true);
    const span = (times[times.length - 1] - times[0]) / 1000;
    card.querySelector(".fps").textContent = times.length > 1 && span > 0
      ? ((times.length - 1) / span).toFixed(1) : "–";
    const last = card.querySelector(".last");
    last.replaceChildren();
    const link = document.createElement("a");
    link.href = `/traces/${encodeURIComponent(result.frame_id)}`;
    link.textContent = `${new Date(captured).toLocaleTimeString()} · ${(result.detections || []).length} detection(s)`;
    last.append(link);
  };
  for (const id of cards.keys()) {
    api(`/results?camera=${encodeURIComponent(id)}&limit=20`).then((answer) => {
      if (answer.ok) answer.data.slice().reverse().forEach(show);
    });
  }
  if (cards.size) {
    const stream = new EventSource(`${API}/results/stream`);
    stream.addEventListener("result", (event) => show(JSON.parse(event.data)));
    setInterval(() => stalled(cards), 10000);
  }
}

// the stalled flags as ingest's latest heartbeats report them (GET /status)
async function stalled(cards) {
  const answer = await api("/status");
  if (!answer.ok) return;
  const ingest = answer.data.find((s) => s.service === "ingest");
  const now = new Set((ingest ? ingest.instances : []).flatMap((i) => i.stalled_cameras || []));
  for (const [id, { card }] of cards) {
    card.classList.toggle("stalled", now.has(id));
    const title = card.querySelector("h2");
    let badge = title.querySelector(".badge");
    if (now.has(id) && !badge) {
      badge = document.createElement("span");
      badge.className = "badge bad";
      badge.textContent = "stalled";
      title.append(" ", badge);
    } else if (!now.has(id) && badge) {
      badge.remove();
    }
  }
}

// --- forms that call the API (replay, model switch, reprocess)
function apiForms() {
  for (const form of document.querySelectorAll("form[data-api-form]")) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const body = {};
      for (const input of form.querySelectorAll("input[name]")) {
        if (input.type === "checkbox") body[input.name] = input.checked;
        else if (input.value.trim()) body[input.name] = input.value.trim();
      }
      const output = form.querySelector("output");
      output.textContent = "…";
      const answer = await api(form.dataset.apiForm, { method: "POST", body: JSON.stringify(body) });
      output.className = answer.ok ? "ok" : "bad";
      output.textContent = answer.ok ? JSON.stringify(answer.data) : detail(answer);
      if (answer.ok && form.dataset.reload === "model") model();
      if (answer.ok && form.dataset.reload === "jobs") jobs();
    });
  }
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
}

async function model() {
  const holder = document.querySelector("[data-model]");
  if (!holder) return;
  const answer = await api("/model");
  const list = holder.querySelector(".model-now");
  list.replaceChildren();
  const entries = answer.ok && answer.data && typeof answer.data === "object"
    ? Object.entries(answer.data) : [["error", detail(answer)]];
  for (const [key, value] of entries) {
    const dt = document.createElement("dt"), dd = document.createElement("dd");
    dt.textContent = key;
    if (Array.isArray(value) && value.length && typeof value[0] === "object") {
      dd.append(table(value));  // e.g. each process and the model it runs
    } else {
      dd.textContent = value === null ? "–"
        : typeof value === "object" ? JSON.stringify(value) : String(value);
    }
    list.append(dt, dd);
  }
}

// a table row: one cell (tag td or th) per key of an object, or per text of a list
function row(values, keys = null, tag = "td") {
  const tr = document.createElement("tr");
  for (const key of keys || values) {
    const cell = document.createElement(tag), value = keys ? values[key] : key;
    cell.textContent = value === null || value === undefined ? "" : String(value);
    tr.append(cell);
  }
  return tr;
}

function table(rows) {
  const element = document.createElement("table"), keys = Object.keys(rows[0]);
  element.append(row(keys, null, "th"), ...rows.map((r) => row(r, keys)));
  return element;
}

const JOB_FIELDS = ["job_id", "camera", "since", "until", "state", "records_found",
  "records_replayed", "results_stored", "started_at", "finished_at", "error"];

async function jobs() {
  const table = document.querySelector("[data-jobs]");
  if (!table) return;
  const answer = await api("/reprocess");
  const body = table.querySelector("tbody");
  body.replaceChildren();
  const rows = answer.ok && Array.isArray(answer.data) ? answer.data : [];
  for (const job of rows) {
    const tr = row(job, JOB_FIELDS);
    tr.dataset.state = job.state;
    body.append(tr);
  }
  if (!rows.length) {
    const tr = document.createElement("tr"), td = document.createElement("td");
    td.colSpan = JOB_FIELDS.length;
    td.textContent = answer.ok ? "no jobs yet" : detail(answer);
    tr.append(td);
    body.append(tr);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  showResults();
  apiForms();
  const page = document.body.dataset.page;
  if (page === "overview") refreshing();
  if (page === "cameras") cameras();
  if (page === "model") model();
  if (page === "jobs") { jobs(); setInterval(jobs, 2000); }
});
