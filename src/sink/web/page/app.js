// The live page of `portier listen --web`. Every string a peer sent is put
// into the page with textContent, never as HTML: a message is shown, never run.
"use strict";

const MAX_ROWS = 500;          // rows kept in the message table
const CHART_SECONDS = 300;     // the chart's span

const $ = (id) => document.getElementById(id);
let paused = false;
let lastSeq = 0;
let filter = "";

// Control bytes, DEL, C1 controls and invisible formatting characters
// (bidi overrides, zero-width) as visible escapes.
function escapeControls(text) {
  let out = "";
  for (const ch of text) {
    const c = ch.codePointAt(0);
    if (c === 0x0a) { out += "\\n"; continue; }
    if (c === 0x0d) { out += "\\r"; continue; }
    if (c === 0x09) { out += "\\t"; continue; }
    if (c < 0x20 || (c >= 0x7f && c <= 0x9f)) { out += "\\x" + c.toString(16).padStart(2, "0"); continue; }
    if ((c >= 0x200b && c <= 0x200f) || (c >= 0x202a && c <= 0x202e) || (c >= 0x2066 && c <= 0x2069) ||
        c === 0xfeff || (c >= 0xe0000 && c <= 0xe007f)) {
      out += "\\u{" + c.toString(16) + "}"; continue;
    }
    out += ch;
  }
  return out;
}

function bytesOf(record) {
  if (record.text !== undefined) return new TextEncoder().encode(record.text);
  if (record.data_b64 !== undefined) return Uint8Array.from(atob(record.data_b64), (c) => c.charCodeAt(0));
  return new Uint8Array();
}

function shown(record) {
  if (record.text !== undefined) return escapeControls(record.text);
  return Array.from(bytesOf(record), (b) =>
    b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : "\\x" + b.toString(16).padStart(2, "0")).join("");
}

function hexDump(bytes) {
  const lines = [];
  for (let at = 0; at < bytes.length; at += 16) {
    const chunk = Array.from(bytes.slice(at, at + 16));
    const hex = chunk.map((b) => b.toString(16).padStart(2, "0")).join(" ");
    const ascii = chunk.map((b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : ".")).join("");
    lines.push(at.toString(16).padStart(8, "0") + "  " + hex.padEnd(48) + "  |" + ascii + "|");
  }
  return lines.join("\n");
}

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text;
  row.appendChild(td);
}

function matches(row) {
  return filter === "" || row.dataset.search.includes(filter);
}

function addRow(record) {
  const row = document.createElement("tr");
  const isData = record.event === "data";
  const text = isData ? shown(record) : record.event + (record.error ? ": " + escapeControls(record.error) : "") +
    (record.note ? ": " + escapeControls(record.note) : "");
  row.className = isData ? "data" : "event";
  cell(row, record.ts.slice(11, 23));
  cell(row, record.proto);
  cell(row, record.peer || "");
  cell(row, text);
  row.dataset.search = ((record.peer || "") + " " + text).toLowerCase();
  if (isData) {
    row.addEventListener("click", () => {
      const next = row.nextSibling;
      if (next && next.classList.contains("hex")) { next.remove(); return; }
      const hex = document.createElement("tr");
      hex.className = "hex";
      const td = document.createElement("td");
      td.colSpan = 4;
      td.textContent = hexDump(bytesOf(record));
      hex.appendChild(td);
      row.after(hex);
    });
  }
  row.hidden = !matches(row);
  const rows = $("rows");
  rows.prepend(row);
  while (rows.children.length > MAX_ROWS) rows.lastChild.remove();
}

// The peers the server counted, most recently seen first.
function renderPeers(list) {
  const rows = list.map((p) => {
    const row = document.createElement("tr");
    row.dataset.peer = p.peer;
    row.dataset.proto = p.proto;
    cell(row, p.peer);
    cell(row, p.proto);
    cell(row, String(p.messages));
    cell(row, String(p.bytes));
    cell(row, p.last.slice(11, 19));
    cell(row, p.rate.toFixed(1));
    return row;
  });
  $("peers").replaceChildren(...rows);
}

// Messages per second over the last CHART_SECONDS, as the server counted them.
function renderChart(now, perSecond) {
  const counts = new Map(perSecond);
  const values = [];
  for (let s = now - CHART_SECONDS + 1; s <= now; s++) values.push(counts.get(s) || 0);
  const canvas = $("chart");
  const ctx = canvas.getContext("2d");
  const top = Math.max(1, ...values);
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.fillStyle = "#48a";
  const w = canvas.width / CHART_SECONDS;
  values.forEach((v, i) => {
    const h = (v / top) * (canvas.height - 14);
    ctx.fillRect(i * w, canvas.height - h, Math.max(1, w - 0.5), h);
  });
  ctx.fillStyle = "#666";
  ctx.fillText("max " + top + "/s", 4, 12);
  $("rate").textContent = String(counts.get(now - 1) || 0);
}

function onRecord(event) {
  const seq = Number(event.lastEventId);
  if (seq && seq <= lastSeq) return;   // seen before a reconnection
  lastSeq = seq || lastSeq;
  if (!paused) addRow(JSON.parse(event.data));
}

function onStats(event) {
  const stats = JSON.parse(event.data);
  if (paused) return;
  $("messages-count").textContent = String(stats.messages);
  $("bytes-count").textContent = String(stats.bytes);
  $("kernel-drops").textContent = String(stats.kernel_drops);
  $("queue-drops").textContent = String(stats.queue_drops);
  $("browsers-dropped").textContent = String(stats.browsers_dropped);
  renderPeers(stats.peers);
  renderChart(stats.now, stats.per_second);
}

function connect() {
  const source = new EventSource("events" + location.search);
  source.addEventListener("open", () => { $("status").textContent = "live"; });
  source.addEventListener("error", () => { $("status").textContent = "reconnecting…"; });
  source.addEventListener("record", onRecord);
  source.addEventListener("stats", onStats);
  source.addEventListener("dropped", () => { $("status").textContent = "too slow: catching up…"; });
}

document.addEventListener("DOMContentLoaded", () => {
  $("pause").addEventListener("click", () => {
    paused = !paused;
    $("pause").textContent = paused ? "Resume" : "Pause";
    $("status").textContent = paused ? "paused" : "live";
  });
  $("filter").addEventListener("input", () => {
    filter = $("filter").value.toLowerCase();
    for (const row of $("rows").children) if (!row.classList.contains("hex")) row.hidden = !matches(row);
  });
  connect();
});
