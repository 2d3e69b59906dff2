// seglab web page: pick a model, drop an image, see the mask over it. No build step.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { models: {}, model: null, mask: null, maskBlob: null, counts: null,
  ids: null, objects: null, file: null, width: 0, height: 0, hidden: new Set(), stem: "image" };

function setStatus(text, isError = false) {
  const el = $("status");
  el.textContent = text;
  el.classList.toggle("error", isError);
}

function rgb(c) { return `rgb(${c[0]}, ${c[1]}, ${c[2]})`; }

async function loadModels() {
  const res = await fetch("v1/models");
  if (!res.ok) { setStatus("cannot list the models: HTTP " + res.status, true); return; }
  const body = await res.json();
  const select = $("model");
  for (const m of body.models) {
    state.models[m.name] = m;
    const opt = document.createElement("option");
    opt.value = m.name;
    opt.textContent = `${m.name} (${m.kind === "instance" ? "instances, " : ""}${m.backend})`;
    select.appendChild(opt);
  }
  select.value = body.default;
  chooseModel(body.default);
  setStatus("Ready: drop an image or choose a file.");
}

function isInstance() { return state.model && state.model.kind === "instance"; }

function chooseModel(name) {
  state.model = state.models[name];
  state.hidden.clear();
  const tta = $("tta");  // instance models take no test-time augmentation
  tta.disabled = isInstance();
  if (tta.disabled) tta.value = "";
  $("areas").classList.toggle("instance", isInstance());
  renderLegend();
  if (state.mask) clearResult();
}

function renderLegend() {
  const ul = $("legend");
  ul.textContent = "";
  for (const c of state.model.classes) {
    const li = document.createElement("li");
    li.dataset.index = c.index;
    li.title = "click to hide or show";
    li.classList.toggle("hidden", state.hidden.has(c.index));
    const sw = document.createElement("span");
    sw.className = "swatch";
    sw.style.background = rgb(c.color);
    const name = document.createElement("span");
    name.textContent = c.name;
    li.append(sw, name);
    li.addEventListener("click", () => toggleClass(c.index, li));
    ul.appendChild(li);
  }
}

function toggleClass(index, li) {
  if (state.hidden.has(index)) state.hidden.delete(index); else state.hidden.add(index);
  li.classList.toggle("hidden", state.hidden.has(index));
  $("overlay").dataset.hidden = [...state.hidden].sort((a, b) => a - b).join(",");
  drawOverlay();
}

function clearResult() {
  state.mask = null; state.maskBlob = null; state.ids = null; state.objects = null;
  $("stage").hidden = true;
  $("download").disabled = true;
  $("areas").querySelector("tbody").textContent = "";
}

// COCO compressed RLE (pycocotools' string form) -> run lengths, zeros first, column-major
function rleRuns(s) {
  const cnts = [];
  let p = 0;
  while (p < s.length) {
    let x = 0, k = 0, more = 1;
    while (more) {
      const c = s.charCodeAt(p) - 48;
      x |= (c & 0x1f) << (5 * k);
      more = c & 0x20;
      p++; k++;
      if (!more && (c & 0x10)) x |= -1 << (5 * k);
    }
    if (cnts.length > 2) x += cnts[cnts.length - 2];
    cnts.push(x);
  }
  return cnts;
}

// POST the file; returns the response, or null after showing the error
async function post(file, format) {
  const form = new FormData();
  form.append("file", file);
  form.append("model", state.model.name);
  const tta = $("tta").value;
  if (tta) form.append("tta", tta);  // disabled and empty for instance models
  form.append("format", format);
  let res;
  try {
    res = await fetch("v1/segment", { method: "POST", body: form });
  } catch (err) {
    setStatus("the server cannot be reached: " + err, true);
    return null;
  }
  if (!res.ok) {
    let msg = "HTTP " + res.status;
    try { msg = (await res.json()).error || msg; } catch (e) { /* not JSON */ }
    setStatus(msg, true);
    return null;
  }
  return res;
}

// an instance model's JSON -> class map, id map and per-class pixel counts
function readInstances(body) {
  const w = body.width, h = body.height;
  state.width = w; state.height = h;
  state.mask = new Uint8Array(w * h);
  state.ids = new Int32Array(w * h);
  state.objects = body.instances;
  for (const o of body.instances) {
    const runs = rleRuns(o.rle.counts);
    let pos = 0;
    for (let r = 0; r < runs.length; r++) {
      if (r % 2 === 1) {
        for (let j = pos; j < pos + runs[r]; j++) {
          const i = (j % h) * w + Math.floor(j / h);
          state.ids[i] = o.id; state.mask[i] = o.class_index;
        }
      }
      pos += runs[r];
    }
  }
  state.counts = new Array(256).fill(0);
  for (let i = 0; i < w * h; i++) state.counts[state.mask[i]]++;
}

async function segment(file) {
  if (!file) return;
  state.stem = (file.name || "image").replace(/\.[^.]*$/, "") || "image";
  state.file = file;
  clearResult();
  $("overlay").dataset.ready = "0";
  setStatus(`Segmenting ${file.name}…`);
  const res = await post(file, isInstance() ? "json" : "png");
  if (!res) return;
  if (isInstance()) {
    readInstances(await res.json());
    await show(file);
    return;
  }
  state.maskBlob = await res.blob();
  const maskBitmap = await createImageBitmap(state.maskBlob,
    { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  const w = maskBitmap.width, h = maskBitmap.height;
  state.width = w; state.height = h;
  const scratch = document.createElement("canvas");
  scratch.width = w; scratch.height = h;
  const sctx = scratch.getContext("2d", { willReadFrequently: true });
  sctx.drawImage(maskBitmap, 0, 0);
  const px = sctx.getImageData(0, 0, w, h).data;
  state.mask = new Uint8Array(w * h);
  state.counts = new Array(256).fill(0);
  for (let i = 0; i < w * h; i++) { const k = px[4 * i]; state.mask[i] = k; state.counts[k]++; }
  await show(file);
}

// the image under the overlay, the areas, the download button
async function show(file) {
  const w = state.width, h = state.height;
  const img = $("image");
  img.width = w; img.height = h;
  const ictx = img.getContext("2d");
  try {
    const bitmap = await createImageBitmap(file);
    ictx.drawImage(bitmap, 0, 0, w, h);
  } catch (e) {  // a type the browser cannot show (e.g. TIFF): grey backdrop
    ictx.fillStyle = "#808080";
    ictx.fillRect(0, 0, w, h);
  }
  const ov = $("overlay");
  ov.width = w; ov.height = h;
  drawOverlay();
  renderAreas();
  $("stage").hidden = false;
  $("download").disabled = false;
  ov.dataset.ready = "1";
  const objects = state.objects ? `, ${state.objects.length} objects` : "";
  setStatus(`${file.name}: ${w}×${h}, model ${state.model.name}${objects}`);
}

function drawOverlay() {
  if (!state.mask) return;
  const ov = $("overlay");
  const ctx = ov.getContext("2d");
  const out = ctx.createImageData(state.width, state.height);
  const lut = new Uint8ClampedArray(256 * 4);
  for (const c of state.model.classes) {
    lut.set([c.color[0], c.color[1], c.color[2], state.hidden.has(c.index) ? 0 : 255], 4 * c.index);
  }
  const d = out.data, m = state.mask;
  for (let i = 0; i < m.length; i++) {
    const o = 4 * m[i];
    d[4 * i] = lut[o]; d[4 * i + 1] = lut[o + 1]; d[4 * i + 2] = lut[o + 2]; d[4 * i + 3] = lut[o + 3];
  }
  const ids = state.ids, w = state.width, h = state.height;
  if (ids) {  // instances: each object's outline in white, so touching objects stay apart
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (id === 0 || d[4 * i + 3] === 0) continue;
      const x = i % w, y = (i - x) / w;
      if ((x > 0 && ids[i - 1] !== id) || (x < w - 1 && ids[i + 1] !== id) ||
          (y > 0 && ids[i - w] !== id) || (y < h - 1 && ids[i + w] !== id)) {
        d[4 * i] = 255; d[4 * i + 1] = 255; d[4 * i + 2] = 255;
      }
    }
  }
  ctx.putImageData(out, 0, 0);
  ov.style.opacity = $("opacity").value / 100;
}

function renderAreas() {
  const tbody = $("areas").querySelector("tbody");
  tbody.textContent = "";
  const total = state.width * state.height;
  const rows = state.model.classes
    .filter((c) => state.counts[c.index] > 0)
    .sort((a, b) => state.counts[b.index] - state.counts[a.index]);
  for (const c of rows) {
    const tr = document.createElement("tr");
    tr.dataset.index = c.index;
    const name = document.createElement("td");
    const sw = document.createElement("span");
    sw.className = "swatch";
    sw.style.background = rgb(c.color);
    sw.style.display = "inline-block";
    sw.style.verticalAlign = "middle";
    sw.style.marginRight = "6px";
    name.append(sw, document.createTextNode(c.name));
    const pct = document.createElement("td");
    pct.textContent = (100 * state.counts[c.index] / total).toFixed(2);
    const n = document.createElement("td");
    n.textContent = state.counts[c.index];
    const objects = document.createElement("td");
    objects.className = "objects";
    objects.textContent = state.objects && c.index > 0
      ? state.objects.filter((o) => o.class_index === c.index).length : "";
    tr.append(name, pct, n, objects);
    tbody.appendChild(tr);
  }
}

async function download() {
  if (!state.maskBlob && state.objects && state.file) {  // instances: the 16-bit id PNG
    const res = await post(state.file, "png");
    if (!res) return;
    state.maskBlob = await res.blob();
  }
  if (!state.maskBlob) return;
  const a = document.createElement("a");
  a.href = URL.createObjectURL(state.maskBlob);
  a.download = `${state.stem}_${state.objects ? "instances" : "mask"}.png`;
  document.body.appendChild(a);
  a.click();
  setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
}

function init() {
  $("model").addEventListener("change", (e) => chooseModel(e.target.value));
  $("file").addEventListener("change", (e) => segment(e.target.files[0]));
  $("opacity").addEventListener("input", (e) => {
    $("opacity-value").textContent = e.target.value + "%";
    $("overlay").style.opacity = e.target.value / 100;
  });
  $("download").addEventListener("click", download);
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    segment(e.dataTransfer.files[0]);
  });
  loadModels().catch((err) => setStatus("cannot list the models: " + err, true));
}

init();
