// vaezoo explore: the page's script. Plain JavaScript, no build step, nothing fetched but this server.
"use strict";

const state = {
  info: null,
  a: null, // the explored image: a gallery index or "upload:KEY"
  b: null, // the other end of an interpolation
  codes: {}, // model key -> the base code the sliders move from
  sliders: [], // slider values, by rank, shared by every model
  busy: false, // a decode request is in flight
  again: false, // the sliders moved while it was
};

const $ = (selector) => document.querySelector(selector);

function showError(message) {
  const box = $("#error");
  box.textContent = message;
  box.hidden = !message;
}

async function call(path, body) {
  const started = performance.now();
  const options = body === undefined ? {} : {
    method: "POST",
    body: body instanceof Blob ? body : JSON.stringify(body),
    headers: { "Content-Type": body instanceof Blob ? (body.type || "application/octet-stream") : "application/json" },
  };
  const response = await fetch(path, options);
  let answer;
  try {
    answer = await response.json();
  } catch (err) {
    throw new Error(`${path}: the server answered ${response.status} with something that is not JSON`);
  }
  if (!response.ok) throw new Error(answer.error || `${path}: HTTP ${response.status}`);
  if (answer.ms !== undefined) {
    const trip = performance.now() - started;
    const what = path.replace("/api/", "");
    $("#latency").textContent = `${what}: ${answer.ms.toFixed(1)} ms on the server, ${trip.toFixed(0)} ms round trip`;
    $("#latency").dataset.ms = answer.ms;
  }
  showError("");
  return answer;
}

function element(tag, attributes = {}, text = "") {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  if (text) node.textContent = text;
  return node;
}

// -- the layout, from /api/info ------------------------------------------------------------------------
function buildGallery(count) {
  const gallery = $("#gallery");
  for (let i = 0; i < count; i++) {
    const image = element("img", { src: `/api/gallery/${i}.png`, alt: `validation image ${i}`, "data-index": i });
    image.addEventListener("click", () => choose(i));
    gallery.appendChild(image);
  }
}

function buildViews(models) {
  const views = $("#views");
  for (const model of models) {
    const box = element("div", { class: "model", "data-model": model.key });
    box.appendChild(element("h3", {}, model.name));
    const collapsed = model.collapsed ? `, ${model.collapsed} collapsed` : "";
    box.appendChild(element("div", { class: "meta" }, `${model.source} · step ${model.step} · ${model.latents} latents${collapsed}`));
    box.appendChild(element("img", { class: "big decoded", alt: `${model.name}'s decode` }));
    box.appendChild(element("div", { class: "model-error" }));
    views.appendChild(box);
  }
}

function sliderLabel(slider) {
  let text = `z${slider.dim}`;
  if (slider.kl !== null) text += ` · KL ${slider.kl.toFixed(2)}`;
  if (slider.affinity) {
    const [factor, score] = Object.entries(slider.affinity).sort((x, y) => y[1] - x[1])[0];
    text += ` · ${factor} ${score.toFixed(2)}`;
  }
  return text;
}

function buildSliders(models, limit) {
  const head = $("#sliders thead");
  const row = element("tr");
  row.appendChild(element("th", {}, "#"));
  for (const model of models) row.appendChild(element("th", {}, model.name));
  row.appendChild(element("th", {}, "offset"));
  row.appendChild(element("th", {}));
  head.appendChild(row);
  const count = Math.max(...models.map((model) => model.sliders.length));
  state.sliders = new Array(count).fill(0);
  const body = $("#sliders tbody");
  for (let rank = 0; rank < count; rank++) {
    const line = element("tr", { "data-rank": rank });
    line.appendChild(element("td", {}, String(rank)));
    for (const model of models) {
      const slider = model.sliders[rank];
      const cell = element("td", slider && slider.collapsed ? { class: "collapsed" } : {});
      if (slider) {
        cell.appendChild(element("span", { class: "dim", title: affinityTitle(slider) }, sliderLabel(slider)));
      }
      line.appendChild(cell);
    }
    const value = element("td", { class: "value" }, "0.00");
    const input = element("input", { type: "range", min: -limit, max: limit, step: 0.05, value: 0, "data-rank": rank, "aria-label": `latent rank ${rank}` });
    input.addEventListener("input", () => {
      state.sliders[rank] = Number(input.value);
      value.textContent = Number(input.value).toFixed(2);
      redecode();
    });
    line.appendChild(value);
    const holder = element("td");
    holder.appendChild(input);
    line.appendChild(holder);
    body.appendChild(line);
  }
  for (const note of models.map((model) => model.sliders_note).filter(Boolean)) {
    $("#controls").appendChild(element("p", { class: "hint" }, `Shown: ${note}.`));
  }
}

function affinityTitle(slider) {
  const parts = [`activity ${slider.activity.toFixed(3)}`, `spread ${slider.unit.toFixed(3)}`];
  if (slider.affinity) {
    for (const [factor, score] of Object.entries(slider.affinity)) parts.push(`${factor}: ${score.toFixed(3)}`);
  }
  return parts.join("\n");
}

// -- requests -------------------------------------------------------------------------------------------
function showDecodes(models) {
  for (const [key, answer] of Object.entries(models)) {
    const box = document.querySelector(`.model[data-model="${key}"]`);
    box.querySelector(".model-error").textContent = answer.error || "";
    if (answer.png) box.querySelector("img.decoded").src = answer.png;
  }
}

function resetSliders() {
  state.sliders.fill(0);
  for (const input of document.querySelectorAll("#sliders input")) {
    input.value = 0;
    input.closest("tr").querySelector(".value").textContent = "0.00";
  }
}

async function choose(ref) {
  if (ref !== state.a) state.b = state.a;
  state.a = ref;
  for (const image of document.querySelectorAll("#gallery img")) {
    const index = Number(image.dataset.index);
    image.classList.toggle("a", index === state.a);
    image.classList.toggle("b", index === state.b);
  }
  $("#chosen").textContent = `A: ${describe(state.a)}   B: ${describe(state.b)}`;
  try {
    const answer = await call("/api/encode", { image: ref });
    $("#input").src = answer.input;
    showFactors(answer.factors);
    state.codes = {};
    for (const [key, model] of Object.entries(answer.models)) if (model.code) state.codes[key] = model.code;
    resetSliders();
    showDecodes(answer.models);
  } catch (err) {
    showError(err.message);
  }
}

function describe(ref) {
  if (ref === null) return "-";
  return typeof ref === "number" ? `#${ref}` : "upload";
}

function showFactors(factors) {
  const table = $("#factors");
  const body = table.querySelector("tbody");
  body.replaceChildren();
  table.hidden = !factors;
  for (const [name, value] of Object.entries(factors || {})) {
    const row = element("tr");
    row.appendChild(element("td", {}, name));
    row.appendChild(element("td", {}, Number(value).toFixed(3)));
    body.appendChild(row);
  }
}

async function redecode() {
  if (state.busy) { // coalesce: one request in flight, then the latest slider positions
    state.again = true;
    return;
  }
  if (!Object.keys(state.codes).length) return;
  state.busy = true;
  try {
    const answer = await call("/api/decode", { codes: state.codes, sliders: state.sliders });
    showDecodes(answer.models);
  } catch (err) {
    showError(err.message);
  } finally {
    state.busy = false;
    if (state.again) {
      state.again = false;
      redecode();
    }
  }
}

function showStrips(title, models, names) {
  $("#strips-title").textContent = title;
  $("#strips-title").hidden = false;
  for (const old of document.querySelectorAll(".strip")) old.remove();
  for (const [key, answer] of Object.entries(models)) {
    const strip = element("div", { class: "strip", "data-model": key });
    strip.appendChild(element("span", { class: "label" }, names[key]));
    if (answer.error) strip.appendChild(element("span", { class: "model-error" }, answer.error));
    (answer.png || []).forEach((png, j) => {
      const image = element("img", { src: png, alt: `${names[key]} ${j}`, title: "explore this one" });
      image.addEventListener("click", () => adopt(models, j));
      strip.appendChild(image);
    });
    $("#strips").appendChild(strip);
  }
}

function adopt(models, j) { // a strip's j-th code becomes every model's base
  for (const [key, answer] of Object.entries(models)) if (answer.codes) state.codes[key] = answer.codes[j];
  resetSliders();
  redecode();
}

function modelNames() {
  return Object.fromEntries(state.info.models.map((model) => [model.key, model.name]));
}

async function sample(sampler) {
  try {
    if (sampler === "gmm") $("#latency").textContent = "fitting the GMM on training latents ...";
    const seed = Math.floor(Math.random() * 1e6);
    const image = typeof state.a === "number" ? state.a : 0;
    const answer = await call("/api/sample", { sampler, n: 8, seed, image });
    showStrips(`${sampler} samples (seed ${seed}); click one to explore it`, answer.models, modelNames());
  } catch (err) {
    showError(err.message);
  }
}

async function interpolate() {
  if (state.a === null || state.b === null) {
    showError("pick two images first: the one you click becomes A, the one before it B");
    return;
  }
  try {
    const body = { from: state.b, to: state.a, steps: 8, method: $("#method").value };
    const answer = await call("/api/interpolate", body);
    showStrips(`${body.method} interpolation B → A; click one to explore it`, answer.models, modelNames());
  } catch (err) {
    showError(err.message);
  }
}

async function upload(file) {
  try {
    const answer = await call("/api/upload", file);
    await choose(answer.image);
  } catch (err) {
    showError(err.message);
  }
}

async function start() {
  try {
    state.info = await call("/api/info");
  } catch (err) {
    showError(err.message);
    return;
  }
  const info = state.info;
  $("#summary").textContent = info.models.map((model) => model.name).join(" · ");
  $("#limit").textContent = info.slider_limit;
  buildGallery(info.gallery);
  buildViews(info.models);
  buildSliders(info.models, info.slider_limit);
  for (const name of ["prior", "gmm"]) {
    const blocked = info.models.filter((model) => model.samplers[name]).map((model) => model.samplers[name]);
    $(`#${name}`).addEventListener("click", () => sample(name));
    if (blocked.length === info.models.length) {
      $(`#${name}`).disabled = true;
      $(`#${name}`).title = blocked.join("; ");
    }
  }
  $("#interpolate").addEventListener("click", interpolate);
  $("#reset").addEventListener("click", () => { resetSliders(); redecode(); });
  $("#upload").addEventListener("change", (event) => { if (event.target.files[0]) upload(event.target.files[0]); });
  if (info.gallery > 0) await choose(0);
  document.body.dataset.ready = "true"; // for tests: the first image is explored
}

start();
