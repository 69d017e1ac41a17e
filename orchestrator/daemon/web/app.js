// The status page: polls /api/v1/status and redraws the queue, the running jobs and the map.
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

function drawMap(layout) {
  const map = document.getElementById("map");
  map.replaceChildren();
  map.dataset.kind = layout.kind;
  map.dataset.allocated = layout.allocated;
  map.dataset.size = layout.size;
  if (layout.kind === "torus3d") {
    const [X, Y, Z] = layout.dims;
    // One X x Y grid per Z slice; large machines show the first 16 slices.
    for (let z = 0; z < Math.min(Z, 16); z++) {
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
  document.getElementById("running-count").textContent = `(${status.running.length})`;
  const queue = document.querySelector("#queue tbody");
  queue.replaceChildren(...status.queue.map((j) =>
    row([j.display_id, j.name, j.user, j.state, j.nodes ?? j.shape, j.reason], j.id)));
  document.getElementById("queue-count").textContent = `(${status.queue.length})`;
  drawMap(status.layout);
  document.body.dataset.ready = "1";
}

async function refresh() {
  try {
    const response = await fetch("/api/v1/status", { cache: "no-store" });
    if (response.ok) draw(await response.json());
  } catch (e) {
    document.getElementById("updated").textContent = "daemon unreachable: " + e;
  }
}

refresh();
setInterval(refresh, 2000);
