// unblur's page: pick a run, generate / edit / restore, watch the denoising, keep a gallery.
"use strict";

const $ = (id) => document.getElementById(id);
const token = new URLSearchParams(location.search).get("token");
const state = { runs: [], run: null, tab: "generate", job: null, source: null, editImage: null, restoreImage: null, varImage: null };
const TAB_NEEDS = { generate: "generate", edit: "img2img", restore: "restore", variations: "variations" };

function api(path) {
  return token ? `${path}${path.includes("?") ? "&" : "?"}token=${encodeURIComponent(token)}` : path;
}

async function post(path, body) {
  const r = await fetch(api(path), { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  let data = {};
  try { data = await r.json(); } catch (e) { /* no JSON body */ }
  if (!r.ok) {
    const wait = r.headers.get("Retry-After");
    throw new Error((data.detail || `HTTP ${r.status}`) + (wait ? ` (retry in ${wait} s)` : ""));
  }
  return data;
}

function status(text) { $("status").textContent = text; }

// -- runs --------------------------------------------------------------------------------
async function loadRuns() {
  const r = await fetch(api("/api/runs"));
  const data = await r.json();
  state.runs = data.runs;
  const sel = $("run");
  sel.innerHTML = "";
  for (const run of state.runs) {
    const o = document.createElement("option");
    o.value = run.name; o.textContent = run.name;
    sel.appendChild(o);
  }
  $("steps").max = data.limits.max_steps;
  $("n").max = data.limits.max_n;
  selectRun(state.runs[0].name);
}

function selectRun(name) {
  const run = state.runs.find((r) => r.name === name);
  if (!run) return;
  state.run = run;
  $("run").value = name;
  const what = run.unclip ? (run.unclip.prior ? "unCLIP: prompts through a prior" : "unCLIP: variations") : run.classes.length ? run.classes.length + " classes" : run.text ? "captions" : "unconditional";
  $("runinfo").textContent = `${run.process} · ${run.size[1]}x${run.size[0]}${run.latent ? " latent" : ""} · ${what}`;
  $("prompt-row").hidden = !run.text;
  $("negative-row").hidden = !run.text || !!run.unclip;
  $("class-row").hidden = !run.classes.length;
  $("guidance-row").hidden = !guided(run);
  if (run.unclip && run.unclip.prior) {
    $("prior-steps").value = run.unclip.prior_steps;
    $("prior-guidance").value = run.unclip.prior_guidance;
  }
  const cls = $("class");
  cls.innerHTML = "";
  const any = document.createElement("option"); any.value = ""; any.textContent = "(any: one of each)"; cls.appendChild(any);
  run.classes.forEach((c) => { const o = document.createElement("option"); o.value = c; o.textContent = c; cls.appendChild(o); });
  const smp = $("sampler");
  smp.innerHTML = "";
  run.samplers.forEach((s) => { const o = document.createElement("option"); o.value = s; o.textContent = s; smp.appendChild(o); });
  smp.value = run.sampler;
  $("steps").value = run.steps;
  $("guidance").value = run.guidance;
  for (const t of document.querySelectorAll(".tab")) t.disabled = !run.can.includes(TAB_NEEDS[t.dataset.tab]);
  const here = document.querySelector(`.tab[data-tab="${state.tab}"]`);
  setTab(here.disabled ? document.querySelector(".tab:not(:disabled)").dataset.tab : state.tab);
  if (state.editImage) drawEditImage();
}

function guided(run) { return !!(run && (run.text || run.classes.length || run.unclip)); }

function setTab(tab) {
  state.tab = tab;
  for (const t of document.querySelectorAll(".tab")) t.classList.toggle("active", t.dataset.tab === tab);
  $("edit-panel").hidden = tab !== "edit";
  $("restore-panel").hidden = tab !== "restore";
  $("variations-panel").hidden = tab !== "variations";
  $("prior-row").hidden = !(tab === "generate" && state.run && state.run.unclip && state.run.unclip.prior);
  $("context").hidden = tab === "restore" || tab === "variations";
  $("n-row").hidden = tab === "restore";
  $("guidance-row").hidden = tab === "restore" || !guided(state.run);
  $("go").textContent = { generate: "Generate", edit: "Edit", restore: "Restore", variations: "Make variations" }[tab];
  const smp = $("sampler").closest("label");
  smp.hidden = tab === "restore";
}

// -- images in, mask painting --------------------------------------------------------------
function readFile(file) {
  return new Promise((ok, fail) => { const r = new FileReader(); r.onload = () => ok(r.result); r.onerror = fail; r.readAsDataURL(file); });
}

function loadImage(url) {
  return new Promise((ok, fail) => { const im = new Image(); im.onload = () => ok(im); im.onerror = () => fail(new Error("not an image the browser can read")); im.src = url; });
}

function drawEditImage() {
  const c = $("edit-image"), ctx = c.getContext("2d");
  const [h, w] = state.run.size;
  const side = 256;
  c.width = w >= h ? side : Math.round(side * w / h);
  c.height = h >= w ? side : Math.round(side * h / w);
  const m = $("edit-mask");
  if (m.width !== c.width || m.height !== c.height) { m.width = c.width; m.height = c.height; }
  const im = state.editImage.img;
  const s = Math.max(c.width / im.width, c.height / im.height);  // cover, centred: as the server crops
  const cw = c.width / s, ch = c.height / s;
  ctx.imageSmoothingEnabled = true;
  ctx.clearRect(0, 0, c.width, c.height);
  ctx.drawImage(im, (im.width - cw) / 2, (im.height - ch) / 2, cw, ch, 0, 0, c.width, c.height);
}

let lastPoint = null;
function paintAt(ev, start) {
  // a stroke from the previous point (round caps), so a fast drag leaves no gaps
  const m = $("edit-mask"), r = m.getBoundingClientRect();
  const x = (ev.clientX - r.left) * m.width / r.width, y = (ev.clientY - r.top) * m.height / r.height;
  const ctx = m.getContext("2d");
  ctx.globalCompositeOperation = $("eraser").checked ? "destination-out" : "source-over";
  ctx.strokeStyle = "rgb(255, 40, 40)";
  ctx.lineWidth = Number($("brush").value);
  ctx.lineCap = "round"; ctx.lineJoin = "round";
  const from = start || !lastPoint ? [x, y] : lastPoint;
  ctx.beginPath();
  ctx.moveTo(from[0], from[1]);
  ctx.lineTo(x + 0.01, y);
  ctx.stroke();
  lastPoint = [x, y];
}

function maskDataURL() {
  // white where painted (regenerate), black elsewhere (keep); null when nothing is painted
  const m = $("edit-mask"), src = m.getContext("2d").getImageData(0, 0, m.width, m.height);
  const out = document.createElement("canvas"); out.width = m.width; out.height = m.height;
  const octx = out.getContext("2d"), dst = octx.createImageData(m.width, m.height);
  let any = false;
  for (let i = 0; i < src.data.length; i += 4) {
    const v = src.data[i + 3] > 0 ? 255 : 0;
    any = any || v > 0;
    dst.data[i] = dst.data[i + 1] = dst.data[i + 2] = v; dst.data[i + 3] = 255;
  }
  octx.putImageData(dst, 0, 0);
  return any ? out.toDataURL("image/png") : null;
}

// -- jobs ---------------------------------------------------------------------------------
function request() {
  const run = state.run;
  const body = { run: run.name, seed: Number($("seed").value), preview: $("preview").value };
  const steps = Number($("steps").value);
  if (state.tab === "restore") {
    if (!state.restoreImage) throw new Error("choose a degraded image to restore");
    return ["/api/restore", { ...body, image: state.restoreImage, steps }];
  }
  Object.assign(body, { sampler: $("sampler").value, steps, n: Number($("n").value) });
  if (state.tab === "variations") {
    if (!state.varImage) throw new Error("choose an image to make variations of");
    return ["/api/variations", { ...body, image: state.varImage, guidance: Number($("guidance").value) }];
  }
  if (run.unclip && run.unclip.prior) {
    body.prior_steps = Number($("prior-steps").value);
    body.prior_guidance = Number($("prior-guidance").value);
  }
  if (run.text && $("prompt").value.trim()) body.prompt = $("prompt").value.trim();
  if (run.text && $("negative").value.trim()) body.negative_prompt = $("negative").value.trim();
  if (run.classes.length && $("class").value !== "") body.class = $("class").value;
  if (body.prompt || body.class !== undefined || (run.classes.length && !run.text)) body.guidance = Number($("guidance").value);
  if (state.tab === "edit") {
    if (!state.editImage) throw new Error("choose an image to edit");
    body.image = state.editImage.url;
    const mask = maskDataURL();
    if (mask) body.mask = mask;
    body.strength = Number($("strength").value);
    body.method = $("method").value;
    return ["/api/edit", body];
  }
  return ["/api/generate", body];
}

async function go() {
  let path, body;
  try { [path, body] = request(); } catch (e) { status(e.message); return; }
  $("go").disabled = true;
  $("progress").value = 0;
  $("step").textContent = "queued";
  status("sending…");
  const t0 = performance.now();
  let job;
  try { job = await post(path, body); } catch (e) { status(e.message); $("go").disabled = false; $("step").textContent = "idle"; return; }
  state.job = job.job;
  $("cancel").disabled = false;
  status(job.position ? `queued: ${job.position} ahead` : "starting…");
  let first = null, frames = 0;
  const es = new EventSource(api(job.events));
  state.source = es;
  const finish = (text) => { es.close(); state.source = null; state.job = null; $("go").disabled = false; $("cancel").disabled = true; status(text); };
  es.addEventListener("queued", (e) => { const d = JSON.parse(e.data); if (d.position) status(`queued: ${d.position} ahead`); });
  es.addEventListener("started", () => status("denoising…"));
  es.addEventListener("progress", (e) => {
    const d = JSON.parse(e.data);
    $("progress").max = d.total; $("progress").value = d.step;
    $("step").textContent = `step ${d.step} / ${d.total}`;
    for (const k of ["x0", "xt"]) {
      if (d[k]) { $(`preview-${k}`).src = d[k]; $(`preview-${k}`).hidden = false; $(`cap-${k}`).hidden = false; }
    }
    if (d.x0 || d.xt) { frames += 1; if (first === null) first = performance.now() - t0; }
  });
  es.addEventListener("done", (e) => {
    const d = JSON.parse(e.data);
    d.results.forEach((r) => addToGallery(r));
    const secs = ((performance.now() - t0) / 1000).toFixed(2);
    finish(`done: ${d.results.length} image${d.results.length === 1 ? "" : "s"} in ${secs} s (first preview after ${first === null ? "-" : (first / 1000).toFixed(2)} s, ${frames} previews)`);
  });
  es.addEventListener("error", (e) => {
    if (e.data) { finish("error: " + JSON.parse(e.data).message); }
    else if (es.readyState === EventSource.CLOSED) { finish("the connection to the server was lost"); }
  });
  es.addEventListener("cancelled", () => { finish("cancelled"); $("step").textContent = "cancelled"; });
}

async function cancel() {
  if (!state.job) return;
  try { await post(`/api/jobs/${state.job}/cancel`, {}); } catch (e) { status(e.message); }
}

function addToGallery(r) {
  const s = r.settings;
  const fig = document.createElement("figure");
  const img = document.createElement("img");
  img.src = api(r.url); img.alt = s.prompt || s.class_name || `${s.kind} seed ${s.seed}`;
  img.title = JSON.stringify(s, null, 1);
  const cap = document.createElement("figcaption");
  const a = document.createElement("a");
  a.href = api(r.url); a.download = `unblur-${s.run.replace(/[^\w.-]+/g, "_")}-${s.seed ?? 0}.png`; a.textContent = "PNG";
  cap.append(`${s.kind} · seed ${s.seed ?? "-"} · `, a);
  fig.append(img, cap);
  $("gallery").prepend(fig);
}

// -- settings from a dropped PNG ----------------------------------------------------------
async function applyPng(file) {
  let data;
  try { data = await post("/api/png-settings", { image: await readFile(file) }); } catch (e) { status(e.message); return; }
  const s = data.settings;
  if (data.run) selectRun(data.run); else status(`this PNG was made by ${s.run} (hash ${String(s.model_hash).slice(0, 10)}), which this server does not hold; settings loaded anyway`);
  setTab(s.kind === "restore" ? "restore" : s.kind === "edit" ? "edit" : "generate");
  if (s.prompt !== undefined) $("prompt").value = s.prompt;
  $("negative").value = s.negative_prompt || "";
  if (s.class_name !== undefined) $("class").value = s.class_name;
  if (s.sampler && [...$("sampler").options].some((o) => o.value === s.sampler)) $("sampler").value = s.sampler;
  if (s.steps) $("steps").value = s.steps;
  if (s.guidance !== undefined) $("guidance").value = s.guidance;
  if (s.seed !== undefined) $("seed").value = s.seed;
  if (s.strength !== undefined) { $("strength").value = s.strength; $("strength-out").textContent = s.strength; }
  $("n").value = 1;
  if (data.run) status(`settings loaded from ${file.name}: ${s.kind}, seed ${s.seed}`);
}

// -- wiring -------------------------------------------------------------------------------
function wire() {
  $("run").addEventListener("change", (e) => selectRun(e.target.value));
  for (const t of document.querySelectorAll(".tab")) t.addEventListener("click", () => setTab(t.dataset.tab));
  $("go").addEventListener("click", go);
  $("cancel").addEventListener("click", cancel);
  $("dice").addEventListener("click", () => { $("seed").value = Math.floor(Math.random() * 4294967295); });
  $("strength").addEventListener("input", (e) => { $("strength-out").textContent = e.target.value; });
  $("edit-file").addEventListener("change", async (e) => {
    const f = e.target.files[0]; if (!f) return;
    try {
      const url = await readFile(f);
      state.editImage = { url, img: await loadImage(url) };
      $("edit-mask").getContext("2d").clearRect(0, 0, 9999, 9999);
      drawEditImage();
    } catch (err) { status(err.message); }
  });
  $("restore-file").addEventListener("change", async (e) => {
    const f = e.target.files[0]; if (!f) return;
    state.restoreImage = await readFile(f);
    $("restore-input").src = state.restoreImage; $("restore-input").hidden = false;
  });
  $("var-file").addEventListener("change", async (e) => {
    const f = e.target.files[0]; if (!f) return;
    state.varImage = await readFile(f);
    $("var-input").src = state.varImage; $("var-input").hidden = false;
  });
  $("clear-mask").addEventListener("click", () => $("edit-mask").getContext("2d").clearRect(0, 0, 9999, 9999));
  const m = $("edit-mask");
  let down = false;
  m.addEventListener("pointerdown", (e) => { down = true; m.setPointerCapture(e.pointerId); paintAt(e, true); });
  m.addEventListener("pointermove", (e) => { if (down) paintAt(e, false); });
  m.addEventListener("pointerup", () => { down = false; lastPoint = null; });
  let depth = 0;
  document.addEventListener("dragenter", (e) => { if (e.dataTransfer.types.includes("Files")) { depth += 1; $("drop").hidden = false; } });
  document.addEventListener("dragleave", () => { depth = Math.max(0, depth - 1); if (!depth) $("drop").hidden = true; });
  document.addEventListener("dragover", (e) => e.preventDefault());
  document.addEventListener("drop", (e) => {
    e.preventDefault(); depth = 0; $("drop").hidden = true;
    const f = e.dataTransfer.files[0];
    if (f) applyPng(f);
  });
}

wire();
loadRuns().catch((e) => status("cannot reach the server: " + e.message));
