// The drawing page: it draws, sends the drawing to the server and shows the answer.
// All the maths (preprocessing, the network) runs in Python, in app/page/server.py.
"use strict";

const PEN_WIDTH = 20;  // px on the 280x280 canvas: about 2 px of the 28x28 input, as in MNIST

const canvas = document.getElementById("canvas");
const drop = document.getElementById("drop");  // the canvas's frame: an image file dropped on it is read
const pen = canvas.getContext("2d", { willReadFrequently: true });  // read back for each request
const prediction = document.getElementById("prediction");
const confidence = document.getElementById("confidence");
const message = document.getElementById("message");

// ------------------------------------------------------------------ requests
// At most one request in flight; a drawing that changes meanwhile is sent when it
// returns, so the latest drawing always wins. Every answer newer than the one on
// show is shown, also while the pen still moves (the reading keeps up with it),
// except answers for drawings made before a Clear or a new file. document.body.
// dataset.busy is "1" while a reading is pending (tests wait for "0").

let inFlight = false;
let pending = null;   // a function that makes the next request's body, or null
let version = 0;      // counts the changes of the drawing; each request carries its count
let shownVersion = 0; // the count of the drawing whose answer is on show
let startVersion = 0; // the count at the last Clear or new file: answers up to it are dropped
let pendingName = null;  // the file name of the pending request's body, or null for a drawing

// makeBody: makes the body; fileName: the name of the chosen file it sends, for the page's errors.
function request(makeBody, fileName = null) {
  version += 1;
  pending = makeBody;
  pendingName = fileName;
  document.body.dataset.busy = "1";
  if (!inFlight) sendPending();
}

async function sendPending() {
  const makeBody = pending;
  const fileName = pendingName;
  const sentVersion = version;
  pending = null;
  inFlight = true;
  let answer;
  try {
    const body = await makeBody();
    const response = await fetch("api/predict", { method: "POST", body,
      headers: { "Content-Type": body.type || "application/octet-stream" } });
    const json = await response.json();
    answer = response.ok ? json : { error: fileName === null ? json.error : fileError(fileName, json.error) };
  } catch (error) {
    answer = { error: "the server does not answer (is python nn.py serve running?)" };
  }
  if (sentVersion > shownVersion && sentVersion > startVersion) {
    shownVersion = sentVersion;
    show(answer);
    if (facts && answer.model_number !== undefined && (answer.model_number !== facts.model_number
        || answer.model_warning !== facts.model_warning)) {  // the model file changed
      const newModel = answer.model_number !== facts.model_number;
      loadFacts();
      if (newModel && typeof refreshDamage === "function") refreshDamage();  // explore.js: its layers, its settings
    }
  }
  inFlight = false;
  if (pending !== null) sendPending();
  else document.body.dataset.busy = "0";
}

// The server's refusal of a chosen file in the page's words, naming the file.
function fileError(name, error) {
  if (/^(body: not (an|a readable) image|Content-Type )/.test(error)) return `${name} is not an image the page can read: choose a PNG or JPEG file.`;
  return `${name}: ${error.replace(/^body: /, "")}`;
}

// What is sent: the square around the ink, 2.5 times as wide as the ink, scaled down to at most
// SENT_SIDE pixels a side. The paper around the digit keeps even ink that fills its box under a
// sixth of the picture (the server takes a light region over a quarter of it for a sheet of
// paper). The network reads the digit as 20x20 pixels, so one drawn large keeps at least 44
// pixels, more than twice that, and one drawn small is sent at the canvas's own resolution. The
// server then reads a sixth of the pixels of the whole canvas, in about a quarter of the time,
// so that a class can draw at once.
const SENT_SIDE = 112;
const sent = document.createElement("canvas");
const sentPen = sent.getContext("2d");

// [left, top, side] of the square to send: centred on the box around the pixels that are not
// black, 2.5 times its longer side, within the canvas; the whole canvas when nothing is drawn.
function squareAroundInk() {
  const { data, width, height } = pen.getImageData(0, 0, canvas.width, canvas.height);
  let left = width, top = height, right = -1, bottom = -1;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = 4 * (y * width + x);
      if (data[i] || data[i + 1] || data[i + 2]) {
        left = Math.min(left, x); right = Math.max(right, x);
        top = Math.min(top, y); bottom = Math.max(bottom, y);
      }
    }
  }
  if (right < 0) return [0, 0, Math.min(width, height)];
  const side = Math.min(Math.round(2.5 * Math.max(right - left + 1, bottom - top + 1)), width, height);
  const clamp = (start, size) => Math.max(0, Math.min(Math.round(start), size - side));
  return [clamp((left + right + 1 - side) / 2, width), clamp((top + bottom + 1 - side) / 2, height), side];
}

function canvasAsPng() {
  const [left, top, side] = squareAroundInk();
  sent.width = sent.height = Math.min(side, SENT_SIDE);
  sentPen.imageSmoothingQuality = "high";
  sentPen.drawImage(canvas, left, top, side, side, 0, 0, sent.width, sent.height);
  return new Promise((resolve) => sent.toBlob(resolve, "image/png"));
}

// The chosen image file while the canvas shows it unchanged: {name, body} (body makes the
// request's body from the bytes read when it was chosen), or null.
let shownFile = null;

// Read what the canvas shows again (explore.js and learn.js do, with other weights): the chosen
// file itself while it is shown unchanged, as it was read first, else the drawing.
function readAgain() {
  if (shownFile !== null) request(shownFile.body, shownFile.name);
  else request(canvasAsPng);
}

// ------------------------------------------------------------------ drawing

function clearCanvas() {
  pen.fillStyle = "#000";
  pen.fillRect(0, 0, canvas.width, canvas.height);
}

function pointOf(event) {
  const box = canvas.getBoundingClientRect();
  return [(event.clientX - box.left) * canvas.width / box.width,
          (event.clientY - box.top) * canvas.height / box.height];
}

let last = null;  // the pen's previous point while it touches the canvas

canvas.addEventListener("pointerdown", (event) => {
  event.preventDefault();
  canvas.setPointerCapture(event.pointerId);
  last = pointOf(event);
  stroke(last, last);
});
canvas.addEventListener("pointermove", (event) => {
  if (last === null) return;
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
  for (const each of events.length ? events : [event]) {
    const point = pointOf(each);
    stroke(last, point);
    last = point;
  }
});
for (const name of ["pointerup", "pointercancel"]) {
  canvas.addEventListener(name, () => { last = null; });
}

function stroke(from, to) {
  pen.strokeStyle = "#fff";
  pen.lineWidth = PEN_WIDTH;
  pen.lineCap = "round";
  pen.lineJoin = "round";
  pen.beginPath();
  pen.moveTo(from[0], from[1]);
  pen.lineTo(to[0], to[1]);
  pen.stroke();
  shownFile = null;  // drawn over: the canvas is the drawing now
  drop.classList.add("used");  // its hint would lie over the drawing
  request(canvasAsPng);
}

document.getElementById("clear").addEventListener("click", () => {
  clearCanvas();
  drop.classList.remove("used");
  shownFile = null;
  startVersion = version;  // an answer still on its way is for the old drawing
  pending = null;
  if (!inFlight) document.body.dataset.busy = "0";
  show(null);
});

// ------------------------------------------------------------------ image files

function readFile(file) {
  if (!file) return;
  const bytes = file.arrayBuffer();  // read once: the file may change or go on disk later
  const chosen = { name: file.name, body: async () => new Blob([await bytes], { type: file.type }) };
  const url = URL.createObjectURL(file);
  const image = new Image();
  image.onload = () => {  // show the photo on the canvas, unless cleared or drawn on since; the server reads the file itself
    URL.revokeObjectURL(url);
    if (shownFile !== chosen) return;
    clearCanvas();
    const scale = Math.min(canvas.width / image.width, canvas.height / image.height);
    const width = image.width * scale, height = image.height * scale;
    pen.drawImage(image, (canvas.width - width) / 2, (canvas.height - height) / 2, width, height);
    drop.classList.add("used");
  };
  image.onerror = () => URL.revokeObjectURL(url);  // not an image: the server's answer says so
  image.src = url;
  startVersion = version;  // answers on their way are for the drawing the file replaces
  shownFile = chosen;
  request(shownFile.body, file.name);
}

document.getElementById("file").addEventListener("change", (event) => readFile(event.target.files[0]));
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  readFile(event.dataTransfer.files[0]);
});

// ------------------------------------------------------------------ showing the answer

const bars = document.getElementById("bars");
for (let digit = 0; digit < 10; digit++) {
  bars.insertAdjacentHTML("beforeend",
    `<li><span>${digit}</span><span class="bar"><span></span></span><span class="percent"></span></li>`);
}

// "87.4 %" for 0.8746, ">99.9 %" from 0.999 up, "<0.1 %" under 0.001 but above 0: one decimal
// rounded down, so that a probability below 1 never reads as 100 % and one above 0 never as
// 0 % (words.confidence_text, the same rule in Python).
function confidenceText(p) {
  if (p >= 0.999) return ">99.9 %";
  const tenths = Math.floor(1000 * p + 1e-9);
  return tenths === 0 && p > 0 ? "<0.1 %" : `${(tenths / 10).toFixed(1)} %`;
}

const verdict = document.getElementById("verdict");

// answer: the JSON of /api/predict, {error: "..."} or null (cleared).
function show(answer) {
  const reading = answer && answer.digit !== undefined && answer.digit !== null ? answer : null;
  const notOne = reading ? reading.not_one_digit : null;  // why it is no one digit (app/ood.py), or null
  prediction.textContent = reading ? (notOne ? "?" : String(reading.digit)) : "";
  prediction.classList.toggle("doubtful", Boolean(notOne));
  confidence.textContent = !reading ? "" : notOne ? `not one digit: ${notOne}`
    : `the network's probability: ${confidenceText(reading.probabilities[reading.digit])}`;
  verdict.hidden = !notOne;
  verdict.textContent = notOne ? `Its outputs still name ${reading.digit}: a softmax always names some digit, ` +
    "because its ten outputs are made to add up to 1, whatever the input." : "";
  message.classList.toggle("error", Boolean(answer && (answer.error || answer.model_warning)));
  message.textContent = answer === null ? "Draw a digit with the mouse, a finger or a pen."
    : answer.error || answer.message || answer.model_warning
      || (reading && !reading.digit_statistics && !notOne ? "(Not checked whether it is a digit: the model file " +
          "holds no statistics of the training digits.)" : "");
  [...bars.children].forEach((row, digit) => {
    const p = reading ? reading.probabilities[digit] : 0;
    row.classList.toggle("best", reading !== null && digit === reading.digit);
    row.querySelector(".bar span").style.width = `${100 * p}%`;
    row.querySelector(".percent").textContent = reading ? confidenceText(p) : "";
  });
  paintGrid(document.getElementById("input"), reading ? reading.input : null, 28, 28, grey);
  showActivations(reading ? reading.activations : null);
  showWeights(reading ? reading.top_units : []);
  document.dispatchEvent(new CustomEvent("reading", { detail: reading }));  // for explore.js
}

// Paint values (a 2-D list, or a flat list laid out in rows of `columns`) into a
// canvas of columns x rows pixels, one pixel per value, coloured by colourOf(v).
function paintGrid(target, values, columns, rows, colourOf) {
  target.width = columns;
  target.height = rows;
  const context = target.getContext("2d");
  const image = context.createImageData(columns, rows);
  const flat = values ? values.flat() : [];
  for (let i = 0; i < columns * rows; i++) {
    const [r, g, b] = i < flat.length ? colourOf(flat[i]) : [20, 22, 28];
    image.data.set([r, g, b, 255], 4 * i);
  }
  context.putImageData(image, 0, 0);
}

function grey(v) {
  const level = Math.round(255 * Math.min(Math.max(v, 0), 1));
  return [level, level, level];
}

// Warm colours for a unit's output relative to the layer's strongest one.
function heat(v) {
  const t = Math.min(Math.max(v, 0), 1);
  return [Math.round(20 + 235 * Math.min(1, 1.6 * t)), Math.round(22 + 200 * t * t), Math.round(28 + 90 * t * t * t)];
}

// Weights in [-1, 1]: orange where ink excites the unit, blue where it inhibits.
function diverging(v) {
  const t = Math.min(Math.abs(v), 1);
  const [r, g, b] = v >= 0 ? [232, 119, 46] : [46, 121, 232];
  return [Math.round(255 + (r - 255) * t), Math.round(255 + (g - 255) * t), Math.round(255 + (b - 255) * t)];
}

function showActivations(layers) {
  const holder = document.getElementById("activations");
  const sizes = facts ? facts.layer_sizes.slice(1, -1) : [];
  holder.replaceChildren();
  sizes.forEach((size, index) => {
    const columns = Math.ceil(Math.sqrt(size));
    const rows = Math.ceil(size / columns);
    const values = layers ? layers[index] : null;
    const strongest = values ? Math.max(...values, 1e-9) : 1;
    const figure = document.createElement("figure");
    const grid = document.createElement("canvas");
    grid.className = "pixels";
    paintGrid(grid, values ? values.map((v) => v / strongest) : null, columns, rows, heat);
    const active = values ? values.filter((v) => v > 0).length : 0;
    figure.append(grid);
    figure.insertAdjacentHTML("beforeend",
      `<figcaption>layer ${index + 1}: ${size} units${values ? `, ${active} active` : ""}</figcaption>`);
    holder.append(figure);
  });
}

function showWeights(units) {
  const holder = document.getElementById("weights");
  holder.replaceChildren();
  if (!units.length) {
    holder.insertAdjacentHTML("beforeend", `<p class="note">Draw something to see them.</p>`);
  }
  for (const unit of units) {
    const figure = document.createElement("figure");
    const picture = document.createElement("canvas");
    picture.className = "pixels";
    paintGrid(picture, unit.weights, 28, 28, diverging);
    figure.append(picture);
    figure.insertAdjacentHTML("beforeend", `<figcaption>unit ${unit.unit}: ${unit.activation.toFixed(2)}</figcaption>`);
    holder.append(figure);
  }
}

// ------------------------------------------------------------------ the model's facts

let facts = null;

async function loadFacts() {
  const list = document.getElementById("facts");
  try {
    facts = await (await fetch("api/model")).json();
  } catch (error) {
    list.innerHTML = "<dt>model</dt><dd>the server does not answer</dd>";
    return;
  }
  const rows = [
    ["layers", facts.layer_sizes.join(" → ")],
    ["activations", facts.activations.join(", ")],
    ["parameters", facts.parameters.toLocaleString("en")],
    ["steps trained", facts.steps_done.toLocaleString("en")],
    ["test accuracy", facts.test_accuracy === null ? "no stats.json beside the model"
      : `${(100 * facts.test_accuracy).toFixed(2)} % of 10,000 test images`],
    ["calibration", facts.calibration ? `expected calibration error ${(100 * facts.calibration.expected_calibration_error)
      .toFixed(2)} % (${facts.calibration.bins} bins)` : "not measured (no stats.json of this model, or an older one)"],
    ["is it a digit?", facts.digit_statistics ? "checked against the training digits' statistics"
      : "not checked: the file holds no statistics of its training digits (train it again)"],
    ["file", withBreaksAfterSlashes(facts.model_file)],
  ];
  if (facts.model_warning) rows.push(["warning", facts.model_warning]);
  list.replaceChildren();
  for (const [name, value] of rows) {
    const term = document.createElement("dt");
    const detail = document.createElement("dd");
    term.textContent = name;
    detail.append(...(Array.isArray(value) ? value : [value]));
    list.append(term, detail);
  }
  showActivations(null);
  drawReliability(facts.calibration);
}

// The reliability diagram of stats.json's calibration: per bin of top probability, the share read
// right (bars) against the diagonal a calibrated model would reach.
function drawReliability(calibration) {
  const picture = document.getElementById("reliability");
  picture.hidden = document.getElementById("reliability-note").hidden = !calibration;
  if (!calibration) return;
  const context = picture.getContext("2d");
  const size = picture.width, left = 30, bottom = 26, side = size - left - 8;
  context.clearRect(0, 0, size, size);
  context.font = "11px system-ui, sans-serif";
  context.fillStyle = "#5b6475";
  context.fillText("share right", left + 4, 12);
  context.fillText("top probability", left + side / 2 - 36, size - 4);
  context.fillText("1", left - 12, 18);
  context.fillText("0", left - 12, size - bottom);
  context.fillText("1", left + side - 6, size - bottom + 14);
  const x = (p) => left + side * p, y = (p) => size - bottom - (size - bottom - 10) * p;
  const width = side / calibration.bins;
  calibration.bin_accuracy.forEach((accuracy, bin) => {
    if (accuracy === null) return;
    context.fillStyle = "#e8772e";
    context.fillRect(x(bin / calibration.bins) + 1, y(accuracy), width - 2, y(0) - y(accuracy));
  });
  context.strokeStyle = "#1d2433";
  context.setLineDash([4, 3]);
  context.beginPath();
  context.moveTo(x(0), y(0));
  context.lineTo(x(1), y(1));
  context.stroke();
  context.setLineDash([]);
}

// A path as text nodes with a <wbr> after each slash: a long path wraps there rather than
// mid-name, and a copied path has no invisible characters in it.
function withBreaksAfterSlashes(path) {
  return path.split(/(?<=[\\/])/).flatMap((part) => [part, document.createElement("wbr")]).slice(0, -1);
}

clearCanvas();
document.body.dataset.busy = "0";
show(null);
loadFacts();
