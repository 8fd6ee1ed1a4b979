// TriScale workbench: chat with streamed tool calls, a 3Dmol.js structure viewer, plots, runs and uploads.
// Everything is served by `triscale web`; no network beyond this page's own server.
"use strict";

const $ = (sel) => document.querySelector(sel);
const el = (tag, attrs = {}, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
};
const short = (v, n = 240) => {
  const s = typeof v === "string" ? v : JSON.stringify(v);
  return s.length <= n ? s : s.slice(0, n - 1) + "…";
};
const fmt = (v) => (typeof v === "number" ? (Number.isInteger(v) ? String(v) : v.toPrecision(6)) : String(v));

async function api(path, opts = {}, retry = true) {
  const init = { credentials: "same-origin", ...opts };
  if (opts.json !== undefined) {
    init.method = init.method || "POST";
    init.headers = { "Content-Type": "application/json" };
    init.body = JSON.stringify(opts.json);
    delete init.json;
  }
  const r = await fetch(path, init);
  if (r.status === 401 && retry) {
    const token = window.prompt("This server needs its access token (triscale web --token):");
    if (token) {
      document.cookie = `triscale_token=${encodeURIComponent(token)}; path=/; SameSite=Strict`;
      return api(path, opts, false);
    }
  }
  return r;
}
async function apiJSON(path, opts) {
  const r = await api(path, opts);
  const body = await r.json().catch(() => ({ error: r.statusText }));
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

// ------------------------------------------------------------------ structure viewer (3Dmol.js, vendored)
let viewer = null;
let playing = false;
function getViewer() {
  if (!viewer) viewer = $3Dmol.createViewer($("#viewer"), { backgroundColor: "white", antialias: true });
  return viewer;
}
function addCell(model, cell) {
  if (!cell) return;
  const c = cell; // rows are lattice vectors; 3Dmol's matrix has them as columns
  model.setCrystMatrix(new $3Dmol.Matrix3(c[0][0], c[1][0], c[2][0], c[0][1], c[1][1], c[2][1], c[0][2], c[1][2], c[2][2]));
  getViewer().addUnitCell(model, { box: { color: "#444444" }, astyle: { hidden: true }, bstyle: { hidden: true }, cstyle: { hidden: true } });
}
function styleAll(n) {
  const v = getViewer();
  const r = n > 500 ? 0.25 : 0.32;
  v.setStyle({}, { stick: { radius: 0.12 }, sphere: { scale: r } });
}
function showTab(name) {
  document.querySelectorAll("nav button").forEach((b) => b.classList.toggle("active", b.dataset.tab === name));
  document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("active", t.id === `tab-${name}`));
  if (name === "structures") loadStructures();
  if (name === "runs") loadRuns();
  if (name === "viewer" && viewer) viewer.resize();
}
async function showStructure(sid) {
  showTab("viewer");
  const s = await apiJSON(`/api/structures/${sid}`);
  const v = getViewer();
  v.stopAnimate();
  v.clear();
  const m = v.addModel(s.xyz, "xyz");
  addCell(m, s.cell);
  const replicate = s.cell && s.n_atoms < 20;
  if (replicate) v.replicateUnitCell(2, 2, 2, m, true); // a few-atom primitive cell reads better as 2x2x2
  styleAll(s.n_atoms);
  v.zoomTo();
  v.render();
  $("#play").hidden = true;
  $("#viewer-title").textContent = `${sid} · ${s.formula} · ${s.n_atoms} atoms${s.cell ? ` · periodic (unit cell drawn${replicate ? ", 2×2×2 shown" : ""})` : ""}${s.label ? " · " + s.label : ""}`;
  $("#viewer").dataset.shown = sid;
  const links = $("#viewer-links");
  links.replaceChildren(
    el("span", { class: "dim", text: "download:" }),
    ...["extxyz", "cif", "poscar"].map((f) => el("a", { href: `/api/structures/${sid}/download?format=${f}`, text: f })),
  );
}
async function showTrajectory(path) {
  showTab("viewer");
  const t = await apiJSON(`/api/trajectory?path=${encodeURIComponent(path)}`);
  const v = getViewer();
  v.stopAnimate();
  v.clear();
  const m = v.addModelsAsFrames(t.xyz, "xyz");
  addCell(m, t.cell);
  styleAll(0);
  v.zoomTo();
  v.animate({ loop: "forward", interval: 120 });
  v.render();
  playing = true;
  $("#play").hidden = false;
  $("#play").textContent = "Pause";
  $("#viewer-title").textContent = `${path} · ${t.frames} frames shown of ${t.n_frames}${t.stride > 1 ? ` (every ${t.stride}th)` : ""}`;
  $("#viewer").dataset.shown = path;
  $("#viewer-links").replaceChildren(el("a", { href: `/api/files/${path}`, text: "download trajectory" }));
}
$("#play").addEventListener("click", () => {
  const v = getViewer();
  if (playing) v.stopAnimate(); else v.animate({ loop: "forward", interval: 120 });
  playing = !playing;
  $("#play").textContent = playing ? "Pause" : "Play";
});
const sidLink = (sid) => el("a", { class: "sid", "data-sid": sid, onclick: () => showStructure(sid), text: sid });

// ------------------------------------------------------------------ chat
const chat = $("#chat");
let current = null; // {id, source, tools: Map(index -> element), timer}
function scroll() { chat.scrollTop = chat.scrollHeight; }
function addMsg(cls, ...children) { const m = el("div", { class: `msg ${cls}` }, ...children); chat.append(m); scroll(); return m; }
function setBusy(busy) {
  $("#ask").disabled = busy;
  $("#cancel").disabled = !busy;
  if (!busy) $("#progress").textContent = "";
}
function resultTable(results) {
  const t = el("table", { class: "results" });
  t.append(el("tr", {}, ...["property", "value", "±", "unit", "method", "structures", "calls"].map((h) => el("th", { text: h }))));
  for (const r of results) {
    t.append(el("tr", {},
      el("td", { text: r.property }),
      el("td", { class: "num", text: fmt(r.value) }),
      el("td", { class: "num", text: r.uncertainty == null ? "" : fmt(r.uncertainty) }),
      el("td", { text: r.unit || "" }),
      el("td", { text: r.method || "" }),
      el("td", {}, ...r.structure_ids.flatMap((s, i) => (i ? [" ", sidLink(s)] : [sidLink(s)]))),
      el("td", { class: "dim", text: (r.tool_calls || []).join(", ") }),
    ));
  }
  return t;
}
function onEvent(ev) {
  const c = current;
  if (ev.type === "status") $("#progress").textContent = ev.message;
  else if (ev.type === "model") {
    if (ev.content && ev.content.trim() && ev.tool_calls.length) addMsg("model", ev.content.trim());
    $("#progress").textContent = ev.tool_calls.length ? `model asked for ${ev.tool_calls.map((t) => t.name).join(", ")}` : "model answered";
  } else if (ev.type === "tool_start") {
    const status = el("span", { class: "status" }, el("span", { class: "spinner" }), " running");
    const box = el("div", { class: "tool running", "data-tool": ev.name },
      status, el("span", { class: "name", text: `→ ${ev.name}` }), el("div", { class: "args", text: short(ev.args, 400) }));
    box.dataset.started = String(Date.now());
    c.tools.set(ev.index, box);
    chat.append(box);
    scroll();
    $("#progress").textContent = `running ${ev.name}…`;
  } else if (ev.type === "tool_end") {
    let box = c.tools.get(ev.index);
    if (!box) { box = el("div", { class: "tool" }, el("span", { class: "status" }), el("span", { class: "name", text: `→ ${ev.name}` })); chat.append(box); }
    box.classList.remove("running");
    box.classList.add(ev.ok ? "ok" : "failed");
    box.querySelector(".status").textContent = `${ev.ok ? "✓" : "✗"} ${ev.wall_time_s.toFixed(2)} s`;
    const out = el("div", { class: "out", text: ev.ok ? short(ev.result, 500) : short(ev.content, 600) });
    box.append(out);
    if (ev.structure_ids && ev.structure_ids.length) box.append(el("div", { class: "dim" }, "structures: ", ...ev.structure_ids.flatMap((s, i) => (i ? [" ", sidLink(s)] : [sidLink(s)]))));
    if (ev.trajectory) box.append(el("div", {}, el("a", { class: "sid", onclick: () => showTrajectory(ev.trajectory), text: "▶ play trajectory" })));
    if (ev.plot) box.append(el("img", { class: "plot", src: ev.plot, alt: `${ev.name} plot` }));
    if (ev.image) box.append(el("img", { class: "plot", src: ev.image, alt: `${ev.name} picture` }));
    for (const n of ev.notes || []) box.append(el("div", { class: "dim", text: `note: ${n}` }));
    scroll();
  } else if (ev.type === "answer") {
    const box = addMsg("answer", el("div", { class: "text", text: ev.answer }));
    if (ev.results.length) box.append(resultTable(ev.results));
    for (const n of ev.notes || []) box.append(el("div", { class: "dim", text: n }));
    box.append(el("div", { class: "dim" },
      "run ", el("a", { class: "run", "data-run": ev.run_id, onclick: () => openRun(ev.run_id), text: ev.run_id }),
      ` · ${ev.stop_reason} · ${ev.n_model_calls} model / ${ev.n_tool_calls} tool calls · ${ev.wall_time_s.toFixed(1)} s · `,
      el("a", { href: `/api/runs/${ev.run_id}/answer.json`, text: "answer.json" }), " · ",
      el("a", { href: `/api/runs/${ev.run_id}/workflow.yaml`, text: "workflow.yaml" })));
    const first = ev.results.flatMap((r) => r.structure_ids)[0];
    if (first && !$("#viewer").dataset.shown) showStructure(first).catch(() => {});
  } else if (ev.type === "error") addMsg("error", ev.message);
  else if (ev.type === "done") finish();
}
function finish() {
  if (!current) return;
  current.source.close();
  clearInterval(current.timer);
  current = null;
  setBusy(false);
}
function attach(askId) {
  setBusy(true);
  const source = new EventSource(`/api/ask/${askId}/events`);
  current = { id: askId, source, tools: new Map(), timer: null };
  current.timer = setInterval(() => {
    document.querySelectorAll(".tool.running").forEach((b) => {
      const s = (Date.now() - Number(b.dataset.started)) / 1000;
      b.querySelector(".status").replaceChildren(el("span", { class: "spinner" }), ` running ${s.toFixed(0)} s`);
    });
  }, 1000);
  for (const type of ["status", "model", "tool_start", "tool_end", "answer", "error", "done"]) {
    source.addEventListener(type, (m) => onEvent(JSON.parse(m.data)));
  }
  source.onerror = () => { if (current && current.source === source && source.readyState === 2) { addMsg("error", "lost the event stream"); finish(); } };
}
$("#ask-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const q = $("#question").value.trim();
  if (!q || current) return;
  addMsg("user", q);
  $("#question").value = "";
  try {
    const r = await apiJSON("/api/ask", { json: { question: q } });
    attach(r.ask_id);
  } catch (err) { addMsg("error", String(err.message || err)); }
});
$("#question").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("#ask-form").requestSubmit(); }
});
$("#cancel").addEventListener("click", async () => {
  if (!current) return;
  $("#cancel").disabled = true;
  $("#progress").textContent = "cancelling…";
  await api(`/api/ask/${current.id}/cancel`, { json: {} });
});
$("#new-chat").addEventListener("click", async () => {
  await apiJSON("/api/chat/new", { json: {} });
  chat.replaceChildren();
  addMsg("model", "New conversation (the workspace and its structures stay).");
});

// ------------------------------------------------------------------ structures, runs, upload
async function loadStructures() {
  const rows = await apiJSON("/api/structures");
  const t = $("#structures");
  t.replaceChildren(el("tr", {}, ...["id", "formula", "atoms", "label", "tool", "energy (eV)", ""].map((h) => el("th", { text: h }))));
  for (const r of rows.slice().reverse()) {
    t.append(el("tr", {}, el("td", {}, sidLink(r.id)), el("td", { text: r.formula }), el("td", { class: "num", text: r.n_atoms }),
      el("td", { text: r.label || "" }), el("td", { class: "dim", text: r.tool || "" }),
      el("td", { class: "num", text: r.energy_eV == null ? "" : fmt(r.energy_eV) }),
      el("td", {}, el("a", { href: `/api/structures/${r.id}/download?format=extxyz`, text: "extxyz" }))));
  }
}
async function loadRuns() {
  const runs = await apiJSON("/api/runs");
  $("#runs").replaceChildren(...runs.map((r) => el("li", {}, el("a", { class: "run", "data-run": r.run_id, onclick: () => openRun(r.run_id), text: r.run_id }), " ", r.question)));
  if (!runs.length) $("#runs").append(el("li", { class: "dim", text: "no runs yet" }));
}
async function openRun(runId) {
  showTab("runs");
  const { entries } = await apiJSON(`/api/runs/${runId}`);
  const d = $("#run-detail");
  d.replaceChildren(el("h3", { text: `run ${runId}` }),
    el("div", { class: "row" }, el("a", { href: `/api/runs/${runId}/workflow.yaml`, text: "export workflow YAML" }),
      el("a", { href: `/api/runs/${runId}/answer.json`, text: "answer.json" })));
  for (const e of entries) {
    if (e.kind === "run_start") {
      d.append(el("p", {}, el("strong", { text: e.question })));
      d.append(el("div", { class: "dim", text: `llm: ${e.llm?.backend ?? ""} ${e.llm?.model ?? ""} · thread ${e.thread_id}` }));
      d.append(el("div", { class: "dim versions", text: `versions: ${Object.entries(e.versions || {}).map(([k, v]) => `${k} ${v}`).join(", ")}` }));
    } else if (e.kind === "model_turn") {
      const calls = (e.tool_calls || []).map((t) => `${t.name}(${short(t.args, 120)})`).join(", ");
      d.append(el("div", { class: "msg model", text: `model turn ${e.turn} (${e.wall_time_s} s): ${short(e.content || "", 300)}${calls ? " → " + calls : ""}` }));
    } else if (e.kind === "tool_call") {
      const box = el("div", { class: `tool ${e.status === "ok" ? "ok" : "failed"}` },
        el("span", { class: "status", text: `${e.status} ${Number(e.wall_time_s).toFixed(2)} s` }),
        el("span", { class: "name", text: `${e.name} ${e.call_id || ""}` }),
        el("div", { class: "args", text: `args ${short(e.args, 400)}` }),
        el("div", { class: "out", text: short(e.result || e.content || "", 600) }));
      if (e.weights_sha256) box.append(el("div", { class: "dim", text: `weights ${short(e.weights_sha256, 200)}` }));
      if (e.status === "ok" && ["equation_of_state", "molecular_dynamics", "vibrational_analysis", "orbital_energies", "electronic_structure"].includes(e.name) && e.call_id) box.append(el("img", { class: "plot", src: `/api/plot/${e.call_id}.svg`, alt: `${e.name} plot` }));
      d.append(box);
    } else if (e.kind === "final_answer") {
      const box = el("div", { class: "msg answer" }, el("div", { text: e.answer.answer }));
      if (e.answer.results.length) box.append(resultTable(e.answer.results));
      box.append(el("div", { class: "dim", text: `${e.stop_reason} · ${e.wall_time_s} s` }));
      d.append(box);
    } else {
      d.append(el("div", { class: "dim", text: `${e.kind}: ${short(e, 300)}` }));
    }
  }
}
$("#upload").addEventListener("click", async () => {
  const f = $("#upload-file").files[0];
  const out = $("#upload-result");
  if (!f) { out.textContent = "Choose a file first."; return; }
  out.textContent = "uploading…";
  try {
    const r = await apiJSON("/api/upload", { json: { filename: f.name, content: await f.text() } });
    const res = r.result;
    out.replaceChildren("imported ", sidLink(res.structure_id), ` · ${res.formula} · ${res.n_atoms} atoms (from ${r.file})`);
    showStructure(res.structure_id);
  } catch (err) { out.replaceChildren(el("div", { class: "msg error", text: String(err.message || err) })); }
});
document.querySelectorAll("nav button").forEach((b) => b.addEventListener("click", () => showTab(b.dataset.tab)));

// ------------------------------------------------------------------ start
(async () => {
  try {
    const s = await apiJSON("/api/session");
    $("#backend").textContent = `backend: ${s.backend}`;
    $("#workspace").textContent = `workspace: ${s.workspace} · ${s.n_structures} structures · triscale ${s.version}`;
    if (s.running) { addMsg("model", "Re-attached to the question still running."); attach(s.running); }
  } catch (err) { addMsg("error", String(err.message || err)); }
})();
