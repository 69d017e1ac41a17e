// The status page: polls /api/v1/status and redraws the queue, the running jobs and the map.
//
// The map has two views. A cluster of up to 4,096 nodes (the layout names every node) is drawn
// node by node: one square per node, per leaf switch or per torus Z slice. A bigger one (the
// layout has `aggregate`, see api_documents.aggregate) is drawn as an occupancy heat map on one
// canvas: a cell per allocation unit (Fugaku: a 2x3x2 Tofu unit of 12 nodes), one X x Y grid of
// units per unit layer along Z (24 grids of 24 x 23 on Fugaku, every z-plane of the machine),
// coloured by how many of the cell's nodes are busy. Jobs are found with the search box (job
// ids, 12_3 labels or users; also as #job=12,15 / #user=alice / #q=... in the address), which
// marks their cells and lists each block (nodes, bounding box, units); hovering a cell lists
// the jobs holding nodes there, clicking it searches for them.
"use strict";

function colour(jobId) {
  // A stable, well-spread hue per job.
  const hue = (jobId * 137.508) % 360;
  return `hsl(${hue.toFixed(0)}, 65%, 55%)`;
}

// A job as orch queue names it: 12, or 12_3 for element 3 of array 12.
function label(layout, job) {
  return (layout.labels && layout.labels[job]) || String(job);
}

function cell(layout, index) {
  const div = document.createElement("div");
  const owner = layout.owners[index];
  const name = layout.names ? layout.names[index] : `#${index}`;
  div.className = owner === null ? "node free" : "node busy";
  div.dataset.node = index;
  if (owner !== null) {
    div.style.background = colour(owner);
    div.dataset.job = owner;
  }
  div.title = owner === null ? `${name}: free` : `${name}: job ${label(layout, owner)}`;
  const use = layout.usage ? layout.usage[index] : null;
  if (use) {
    // A node shared by jobs: filled as far as its GPUs (else its cores) are in use.
    const [cpus, allCpus] = use.cpus;
    const [gpus, allGpus] = use.gpus;
    const part = Math.round(100 * (allGpus ? gpus / allGpus : cpus / allCpus));
    div.dataset.state = use.state;
    div.dataset.jobs = use.jobs.join(",");
    if (use.state === "MIXED") div.classList.add("mixed");
    if (owner !== null) {
      div.style.background = `linear-gradient(to top, ${colour(owner)} ${part}%, #ddd ${part}%)`;
    }
    const jobs = use.jobs.map((j) => label(layout, j)).join(", ") || "none";
    div.title =
      `${name}: ${use.state}, cores ${cpus}/${allCpus}, GPUs ${gpus}/${allGpus}, ` +
      `memory ${use.mem_mb[0]}/${use.mem_mb[1]} MB, jobs ${jobs}`;
  }
  return div;
}

function drawMap(layout, width) {
  const map = document.getElementById("map");
  map.dataset.kind = layout.kind;
  map.dataset.allocated = layout.allocated;
  map.dataset.size = layout.size;
  if (layout.aggregate) {
    drawHeat(map, layout, width);
    return;
  }
  map.replaceChildren();
  map.dataset.view = "nodes";
  if (layout.kind === "torus3d") {
    const [X, Y, Z] = layout.dims;
    // One X x Y grid per Z slice.
    for (let z = 0; z < Z; z++) {
      const slice = document.createElement("div");
      slice.className = "slice";
      slice.dataset.slice = z;
      const label = document.createElement("div");
      label.className = "label";
      label.textContent = `z=${z}`;
      const grid = document.createElement("div");
      grid.className = "grid";
      grid.style.gridTemplateColumns = `repeat(${X}, 16px)`;
      for (let y = 0; y < Y; y++) {
        for (let x = 0; x < X; x++) grid.appendChild(cell(layout, (x * Y + y) * Z + z));
      }
      slice.append(label, grid);
      map.appendChild(slice);
    }
  } else {
    for (const group of layout.groups) {
      const row = document.createElement("div");
      row.className = "group";
      row.dataset.group = group.name;
      const label = document.createElement("span");
      label.className = "label";
      label.textContent = group.name;
      const cells = document.createElement("div");
      cells.className = "cells";
      for (const n of group.nodes) cells.appendChild(cell(layout, n));
      row.append(label, cells);
      map.appendChild(row);
    }
  }
  const legend = document.getElementById("legend");
  legend.replaceChildren();
  const holders = layout.usage ? layout.usage.flatMap((u) => u.jobs) : layout.owners;
  const jobs = [...new Set(holders.filter((o) => o !== null))].sort((a, b) => a - b);
  for (const job of jobs) {
    const span = document.createElement("span");
    const swatch = document.createElement("i");
    swatch.style.background = colour(job);
    span.append(swatch, document.createTextNode(`job ${label(layout, job)}`));
    legend.appendChild(span);
  }
}

// -- the heat map of a big cluster -------------------------------------------------------------

const FREE = "#e5e7eb";
const MARK = "#1d4ed8";
const LABEL_H = 14; // a plane's (or row's) caption above its cells
const GAP = 14; // between planes
const ROW_LABEL_W = 100; // a group's name left of its cells

// What the heat map draws now: the layout, where each cell is, which cells are marked.
const heat = {
  layout: null,
  agg: null,
  pitch: 7,
  width: 0,
  height: 0,
  cellX: null, // left edge of each cell, CSS pixels
  cellY: null,
  captions: [], // [text, x, y]
  jobsIn: null, // cell -> ids of the jobs holding nodes there
  byId: new Map(), // job id -> its aggregate entry
  marked: new Set(), // cells of the jobs found
  hover: -1,
};

function heatColour(busy, capacity) {
  if (!busy) return FREE;
  const f = Math.min(1, busy / capacity);
  // Pale yellow (a node busy) to dark red (every node busy).
  return `hsl(${(50 - 50 * f).toFixed(0)}, 90%, ${(80 - 38 * f).toFixed(0)}%)`;
}

// Where each cell goes: a torus as one X x Y grid per Z layer of cells, as many side by side as
// the page is wide; groups (leaf switches) as rows of cells, wrapped.
function placeCells(agg, width) {
  const count = agg.capacity.length;
  const cellX = new Int32Array(count);
  const cellY = new Int32Array(count);
  const captions = [];
  let pitch = 7;
  let height = 0;
  if (agg.by === "torus") {
    const [GX, GY, GZ] = agg.grid;
    pitch = Math.max(3, Math.min(7, Math.floor(width / GX)));
    const planeW = GX * pitch;
    const planeH = LABEL_H + GY * pitch;
    const perRow = Math.max(1, Math.floor((width + GAP) / (planeW + GAP)));
    const zCell = agg.cell[2];
    for (let cz = 0; cz < GZ; cz++) {
      const left = (cz % perRow) * (planeW + GAP);
      const top = Math.floor(cz / perRow) * (planeH + GAP);
      const z0 = cz * zCell;
      captions.push([zCell > 1 ? `z ${z0}-${z0 + zCell - 1}` : `z ${z0}`, left, top + 11]);
      for (let cx = 0; cx < GX; cx++) {
        for (let cy = 0; cy < GY; cy++) {
          const i = (cx * GY + cy) * GZ + cz;
          cellX[i] = left + cx * pitch;
          cellY[i] = top + LABEL_H + cy * pitch;
        }
      }
    }
    height = Math.ceil(GZ / perRow) * (planeH + GAP);
    width = Math.min(width, perRow * (planeW + GAP));
  } else {
    pitch = 9;
    const perLine = Math.max(1, Math.floor((width - ROW_LABEL_W) / pitch));
    let top = 0;
    for (const row of agg.rows) {
      captions.push([row.name, 0, top + pitch]);
      for (let k = 0; k < row.count; k++) {
        cellX[row.first + k] = ROW_LABEL_W + (k % perLine) * pitch;
        cellY[row.first + k] = top + Math.floor(k / perLine) * pitch;
      }
      top += Math.max(1, Math.ceil(row.count / perLine)) * pitch + 4;
    }
    height = top;
  }
  return { pitch, width, height, cellX, cellY, captions };
}

function drawHeat(map, layout, mapWidth) {
  const agg = layout.aggregate;
  let canvas = document.getElementById("heat");
  if (!canvas) {
    map.replaceChildren();
    canvas = document.createElement("canvas");
    canvas.id = "heat";
    canvas.setAttribute("role", "img");
    const tip = document.createElement("div");
    tip.id = "tip";
    tip.hidden = true;
    map.append(canvas, tip);
    canvas.addEventListener("mousemove", (e) => hoverAt(e));
    canvas.addEventListener("mouseleave", () => hoverAt(null));
    canvas.addEventListener("click", (e) => {
      const i = cellAt(e);
      if (i >= 0 && heat.jobsIn.has(i)) search(heat.jobsIn.get(i).join(" "));
    });
  }
  map.dataset.view = "heat";
  heat.layout = layout;
  heat.agg = agg;
  const width = Math.max(300, mapWidth || 1200);
  Object.assign(heat, placeCells(agg, width));
  heat.byId = new Map(agg.jobs.map((j) => [j.id, j]));
  heat.jobsIn = new Map();
  for (const job of agg.jobs) {
    for (const c of job.cells) {
      const list = heat.jobsIn.get(c);
      if (list) list.push(job.id);
      else heat.jobsIn.set(c, [job.id]);
    }
  }
  const dpr = window.devicePixelRatio || 1;
  canvas.width = Math.ceil(heat.width * dpr);
  canvas.height = Math.ceil(heat.height * dpr);
  canvas.style.width = `${heat.width}px`;
  canvas.style.height = `${heat.height}px`;
  canvas.dataset.cells = agg.capacity.length;
  canvas.dataset.busyCells = agg.busy.filter((b) => b > 0).length;
  const unit = agg.by === "torus" ? `${agg.cell.join("x")} nodes` : "a run of nodes";
  canvas.setAttribute(
    "aria-label",
    `occupancy of ${agg.capacity.length} cells of ${unit}: ` +
      `${layout.allocated} of ${layout.size} nodes busy`,
  );
  drawScale(agg);
  // paint() runs after the search is applied (draw -> applySearch).
}

function paint() {
  const canvas = document.getElementById("heat");
  if (!canvas || !heat.agg) return;
  const agg = heat.agg;
  const ctx = canvas.getContext("2d");
  const dpr = window.devicePixelRatio || 1;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, heat.width, heat.height);
  ctx.font = "11px monospace";
  ctx.fillStyle = "#374151";
  for (const [text, x, y] of heat.captions) ctx.fillText(text, x, y);
  const size = heat.pitch > 3 ? heat.pitch - 1 : heat.pitch;
  const searching = heat.marked.size > 0;
  const colours = new Map();
  ctx.globalAlpha = searching ? 0.3 : 1;
  for (let i = 0; i < agg.busy.length; i++) {
    if (searching && heat.marked.has(i)) continue;
    const key = agg.busy[i] * 100000 + agg.capacity[i];
    let fill = colours.get(key);
    if (fill === undefined) {
      fill = heatColour(agg.busy[i], agg.capacity[i]);
      colours.set(key, fill);
    }
    ctx.fillStyle = fill;
    ctx.fillRect(heat.cellX[i], heat.cellY[i], size, size);
  }
  ctx.globalAlpha = 1;
  ctx.fillStyle = MARK;
  for (const i of heat.marked) ctx.fillRect(heat.cellX[i], heat.cellY[i], size, size);
  if (heat.hover >= 0) {
    ctx.strokeStyle = "#000";
    ctx.lineWidth = 1;
    ctx.strokeRect(heat.cellX[heat.hover] - 0.5, heat.cellY[heat.hover] - 0.5, size + 1, size + 1);
  }
}

function drawScale(agg) {
  const legend = document.getElementById("legend");
  legend.replaceChildren();
  const most = Math.max(...agg.capacity);
  const steps = [0, 0.25, 0.5, 0.75, 1].map((f) => Math.round(f * most));
  for (const busy of [...new Set(steps)]) {
    const span = document.createElement("span");
    const swatch = document.createElement("i");
    swatch.style.background = heatColour(busy, most);
    span.append(swatch, document.createTextNode(busy ? `${busy}/${most} busy` : "free"));
    legend.appendChild(span);
  }
  const span = document.createElement("span");
  const swatch = document.createElement("i");
  swatch.style.background = MARK;
  span.append(swatch, document.createTextNode("found"));
  legend.appendChild(span);
}

function cellAt(event) {
  const rect = event.target.getBoundingClientRect();
  const x = event.clientX - rect.left;
  const y = event.clientY - rect.top;
  const p = heat.pitch;
  // A linear scan: some 10,000 comparisons, well under a millisecond.
  for (let i = 0; i < heat.cellX.length; i++) {
    const dx = x - heat.cellX[i];
    const dy = y - heat.cellY[i];
    if (dx >= 0 && dx < p && dy >= 0 && dy < p) return i;
  }
  return -1;
}

// What a cell holds, for the tooltip: its nodes, how many are busy, the jobs there.
function describeCell(i) {
  const agg = heat.agg;
  let where;
  if (agg.by === "torus") {
    const [, GY, GZ] = agg.grid;
    const c = [Math.floor(i / (GY * GZ)), Math.floor(i / GZ) % GY, i % GZ];
    const span = c.map((v, a) => {
      const lo = v * agg.cell[a];
      return agg.cell[a] > 1 ? `${lo}-${lo + agg.cell[a] - 1}` : `${lo}`;
    });
    where = `unit (${c.join(", ")}): x ${span[0]}, y ${span[1]}, z ${span[2]}`;
  } else {
    const row = agg.rows.find((r) => i >= r.first && i < r.first + r.count);
    where = `${row.name}, part ${i - row.first + 1} of ${row.count}`;
  }
  const jobs = heat.jobsIn.get(i) || [];
  const names = jobs.slice(0, 12).map((j) => jobName(j)).join(", ");
  const more = jobs.length > 12 ? ` and ${jobs.length - 12} more` : "";
  return (
    `${where} · ${agg.busy[i]}/${agg.capacity[i]} nodes busy` +
    (jobs.length ? ` · job${jobs.length > 1 ? "s" : ""} ${names}${more}` : "")
  );
}

function hoverAt(event) {
  const tip = document.getElementById("tip");
  const i = event ? cellAt(event) : -1;
  if (i !== heat.hover) {
    heat.hover = i;
    paint();
  }
  if (i < 0) {
    tip.hidden = true;
    return;
  }
  tip.textContent = describeCell(i);
  tip.hidden = false;
  const map = document.getElementById("map").getBoundingClientRect();
  tip.style.left = `${event.clientX - map.left + 12}px`;
  tip.style.top = `${event.clientY - map.top + 12}px`;
}

// -- search: job ids, 12_3 labels, users ---------------------------------------------------------

let latest = null; // the last status drawn
const users = new Map(); // job id -> user, from the running list and the daemon's answers
const usersAsked = new Map(); // user -> {ids, at} from /api/v1/jobs (jobs past the running list)

function jobName(id) {
  const layout = latest ? latest.layout : null;
  const user = userOf(id);
  return `${layout ? label(layout, id) : id}${user ? ` (${user})` : ""}`;
}

function userOf(id) {
  const entry = heat.byId.get(id);
  return (entry && entry.user) || users.get(id) || null;
}

// The jobs holding nodes now: id -> {nodes, cells?, box}.
function holders(layout) {
  const out = new Map();
  if (layout.aggregate) {
    for (const job of layout.aggregate.jobs) out.set(job.id, job);
    return out;
  }
  const lists = layout.usage
    ? layout.usage.map((u) => u.jobs)
    : layout.owners.map((o) => (o === null ? [] : [o]));
  lists.forEach((jobs, node) => {
    for (const id of jobs) {
      if (!out.has(id)) out.set(id, { id, nodes: 0, names: [] });
      const entry = out.get(id);
      entry.nodes += 1;
      entry.names.push(layout.names ? layout.names[node] : `#${node}`);
    }
  });
  return out;
}

function queryFromHash() {
  let hash = "";
  try {
    hash = decodeURIComponent(location.hash.slice(1));
  } catch (e) {
    return "";
  }
  const m = /^(job|user|q)=(.*)$/s.exec(hash);
  return m ? m[2].replace(/,/g, " ").trim() : "";
}

function search(text) {
  const q = text.trim();
  history.replaceState(null, "", q ? `#q=${encodeURIComponent(q)}` : location.pathname);
  document.getElementById("q").value = q;
  applySearch();
}

// Which jobs the query names: ids and labels (12, or 12_3; 12 finds every element of array
// 12), and users (their running jobs: the layout's users if it has them, else asked of the API).
function matches(q, jobs, layout) {
  const found = new Set();
  const pending = [];
  for (const term of q.split(/[\s,]+/).filter(Boolean)) {
    if (/^\d+(_\d+)?$/.test(term)) {
      const id = Number(term);
      if (!term.includes("_") && jobs.has(id)) found.add(id);
      for (const [job, name] of Object.entries(layout.labels || {})) {
        if (name === term || name.startsWith(`${term}_`)) found.add(Number(job));
      }
      continue;
    }
    let known = false;
    for (const job of jobs.values()) {
      if (job.user === term) {
        found.add(job.id);
        known = true;
      }
    }
    if (known) continue;
    const asked = usersAsked.get(term);
    if (asked && Date.now() - asked.at < 5000) {
      for (const id of asked.ids) if (jobs.has(id)) found.add(id);
    } else {
      pending.push(term);
    }
  }
  return { found, pending };
}

async function askUsers(names) {
  await Promise.all(
    names.map(async (user) => {
      const ids = [];
      try {
        const url =
          `/api/v1/jobs?state=STARTING,RUNNING&limit=10000&user=${encodeURIComponent(user)}`;
        const response = await fetch(url, { cache: "no-store" });
        if (response.ok) {
          for (const job of (await response.json()).jobs) {
            ids.push(job.id);
            users.set(job.id, job.user);
          }
        }
      } catch (e) {
        // The daemon is away: the user shows as not found; the next refresh asks again.
      }
      usersAsked.set(user, { ids, at: Date.now() });
    }),
  );
  applySearch();
}

function boxText(layout, job) {
  if (job.lo) {
    const axes = ["x", "y", "z"].map((a, k) => {
      const lo = job.lo[k];
      const hi = (lo + job.size[k] - 1) % layout.dims[k];
      const wraps = lo + job.size[k] > layout.dims[k] ? " (wraps)" : "";
      return job.size[k] > 1 ? `${a} ${lo}-${hi}${wraps}` : `${a} ${lo}`;
    });
    return `box ${job.size.join("x")} at ${axes.join(", ")}`;
  }
  if (job.groups) return `on ${job.groups.join(", ")}`;
  const names = job.names.slice(0, 8).join(", ");
  return `on ${names}${job.names.length > 8 ? ", …" : ""}`;
}

function applySearch() {
  if (!latest) return;
  const layout = latest.layout;
  const q = document.getElementById("q").value.trim();
  const jobs = holders(layout);
  const { found, pending } = matches(q, jobs, layout);
  const panel = document.getElementById("found");
  panel.replaceChildren();
  panel.dataset.query = q;
  panel.dataset.jobs = [...found].sort((a, b) => a - b).join(",");
  panel.dataset.state = pending.length ? "asking" : "done";
  heat.marked = new Set();
  for (const id of found) for (const c of jobs.get(id).cells || []) heat.marked.add(c);
  if (layout.aggregate) {
    const canvas = document.getElementById("heat");
    canvas.dataset.marked = [...heat.marked].sort((a, b) => a - b).join(",");
    paint();
  } else {
    for (const div of document.querySelectorAll("#map .node")) {
      const held = div.dataset.jobs ? div.dataset.jobs.split(",") : [div.dataset.job];
      div.classList.toggle("mark", held.some((j) => j !== undefined && found.has(Number(j))));
    }
  }
  for (const tr of document.querySelectorAll("#running tbody tr")) {
    tr.classList.toggle("mark", found.has(Number(tr.dataset.jobId)));
  }
  if (q) {
    const head = document.createElement("p");
    head.textContent =
      (found.size ? `${found.size} running job${found.size > 1 ? "s" : ""}` : "no running job") +
      ` match${found.size === 1 ? "es" : ""} “${q}”` +
      (pending.length ? ` (asking the daemon for ${pending.join(", ")}…)` : "");
    const list = document.createElement("ul");
    for (const id of [...found].sort((a, b) => a - b)) {
      const job = jobs.get(id);
      const li = document.createElement("li");
      li.dataset.job = id;
      li.dataset.nodes = job.nodes;
      if (job.cells) li.dataset.cells = job.cells.join(",");
      if (job.lo) li.dataset.box = `${job.lo.join(",")}+${job.size.join(",")}`;
      const unit = layout.aggregate && layout.aggregate.by === "torus" ? " units" : " cells";
      const cells = job.cells ? ` · ${job.cells.length}${unit}` : "";
      li.textContent = `job ${jobName(id)} · ${job.nodes} nodes · ${boxText(layout, job)}${cells}`;
      list.appendChild(li);
    }
    panel.append(head, list);
  }
  if (pending.length) askUsers(pending);
}

// -- tables and refresh ------------------------------------------------------------------------

function row(values, jobId) {
  const tr = document.createElement("tr");
  tr.dataset.jobId = jobId;
  for (const v of values) {
    const td = document.createElement("td");
    td.textContent = v === null || v === undefined ? "" : String(v);  // never innerHTML
    tr.appendChild(td);
  }
  return tr;
}

function elapsed(job, now) {
  if (!job.start_time) return "";
  const s = Math.max(0, Math.floor(now - job.start_time));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

function draw(status) {
  const started = performance.now();
  // Read before the tables change: reading it after would lay out 500 new rows here.
  const mapWidth = document.getElementById("map").clientWidth;
  latest = status;
  for (const job of status.running) users.set(job.id, job.user);
  document.getElementById("cluster").textContent = `${status.cluster} (${status.layout.describe})`;
  const counts = Object.entries(status.counts).map(([k, v]) => `${k} ${v}`).join(" · ");
  const engine = status.engine_fault ? ` · engine not answering: ${status.engine_fault}` : "";
  document.getElementById("summary").textContent = (counts || "no jobs yet") + engine;
  document.getElementById("updated").textContent =
    "updated " + new Date(status.time * 1000).toLocaleTimeString();
  const running = document.querySelector("#running tbody");
  running.replaceChildren(...status.running.map((j) =>
    row([j.display_id, j.name, j.user, j.state, j.nodes ?? j.shape, j.nodelist,
         elapsed(j, status.time)], j.id)));
  const all = status.counts.RUNNING || 0;
  const more = all > status.running.length ? ` of ${all}: search finds the others` : "";
  document.getElementById("running-count").textContent = `(${status.running.length}${more})`;
  const queue = document.querySelector("#queue tbody");
  queue.replaceChildren(...status.queue.map((j) =>
    row([j.display_id, j.name, j.user, j.state, j.nodes ?? j.shape, j.reason], j.id)));
  document.getElementById("queue-count").textContent = `(${status.queue.length})`;
  drawMap(status.layout, mapWidth);
  applySearch();
  const body = document.body;
  body.dataset.drawMs = (performance.now() - started).toFixed(1);
  if (!body.dataset.ready) {
    // Milliseconds since the navigation started: drawn, then on screen (the next frame's end).
    body.dataset.readyMs = performance.now().toFixed(1);
    requestAnimationFrame(() => setTimeout(() => {
      body.dataset.paintedMs = performance.now().toFixed(1);
    }));
  }
  body.dataset.ready = "1";
}

async function refresh() {
  try {
    const response = await fetch("/api/v1/status", { cache: "no-store" });
    if (response.ok) draw(await response.json());
  } catch (e) {
    document.getElementById("updated").textContent = "daemon unreachable: " + e;
  }
}

document.getElementById("q").value = queryFromHash();
document.getElementById("search").addEventListener("submit", (e) => {
  e.preventDefault();
  search(document.getElementById("q").value);
});
window.addEventListener("hashchange", () => {
  document.getElementById("q").value = queryFromHash();
  applySearch();
});
for (const table of ["running", "queue"]) {
  document.querySelector(`#${table} tbody`).addEventListener("click", (e) => {
    const tr = e.target.closest("tr");
    if (tr) search(tr.dataset.jobId);
  });
}
refresh();
setInterval(refresh, 2000);
