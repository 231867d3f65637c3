// The explore views of the drawing page: why (saliency) and break it (damage).
// Loaded after app.js, whose show() announces each reading with a "reading" event
// and whose readAgain() reads the drawing again. The maths is in Python
// (explain.py, damage.py); this file only asks and paints.
"use strict";

// ------------------------------------------------------------------ one request at a time
// latestOnly(send) returns a function ask(value): at most one request is in flight; a value
// asked for meanwhile replaces any waiting one, so that the latest always wins.
// busyFlag: the document.body.dataset key that is "1" while requests are pending (tests wait for "0").
function latestOnly(send, busyFlag) {
  let inFlight = false;
  let waiting = null;
  document.body.dataset[busyFlag] = "0";
  async function next() {
    const value = waiting;
    waiting = null;
    inFlight = true;
    try {
      await send(value);
    } catch (error) {
      console.error(error);
    }
    inFlight = false;
    if (waiting !== null) next();
    else document.body.dataset[busyFlag] = "0";
  }
  return (value) => {
    waiting = value;
    document.body.dataset[busyFlag] = "1";
    if (!inFlight) next();
  };
}

async function postJson(path, value) {
  const response = await fetch(path, { method: "POST", body: JSON.stringify(value),
    headers: { "Content-Type": "application/json" } });
  return [response.ok, await response.json()];
}

// ------------------------------------------------------------------ why: saliency

const saliencyCanvas = document.getElementById("saliency");
const saliencyNote = document.getElementById("saliency-note");
const digitPicker = document.getElementById("digit-picker");
let lastReading = null;   // the reading shown now, or null
let chosenDigit = null;   // the digit picked by the user, or null: the digit read

for (let digit = 0; digit < 10; digit++) {
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = String(digit);
  button.dataset.digit = String(digit);
  button.addEventListener("click", () => {
    chosenDigit = chosenDigit === digit ? null : digit;  // a second click follows the reading again
    explainLatest();
  });
  digitPicker.append(button);
}

const askSaliency = latestOnly(async ({ reading, digit }) => {
  const [ok, answer] = await postJson("api/explain", { input: reading.input, digit });
  if (reading !== lastReading) return;  // the drawing changed meanwhile
  if (!ok) {
    saliencyNote.textContent = answer.error;
    return;
  }
  saliencyCanvas.dataset.digit = String(digit);
  const p = answer.probability;
  if (answer.saturated) {  // every other digit's probability underflowed to 0: no gradient at all (explore.py)
    paintSaliency(reading.input, null);
    saliencyNote.textContent = `Why ${digit}? p(${digit}) is 1 to the model's precision: the other digits' ` +
      "probabilities are below the smallest number its floats hold, so no pixel changes it and there is no map to show.";
    return;
  }
  paintSaliency(reading.input, answer.saliency);
  const unbroken = (text) => text.replace("-", "\u2011");  // a non-breaking hyphen: "4.5e-11" stays on one line
  const shown = p < 0.001 ? unbroken(p.toExponential(1)) : confidenceText(p);  // ">99.9 %" needs no "="
  saliencyNote.textContent = `Why ${digit}? p(${digit}) ${shown.startsWith(">") ? "" : "= "}${shown}. ` +
    `Largest effect: ${unbroken(answer.largest.toPrecision(2))} on log p per unit of ink.`;
}, "explaining");

function explainLatest() {
  const digit = chosenDigit === null && lastReading ? lastReading.digit : chosenDigit;
  for (const button of digitPicker.children) {
    button.classList.toggle("chosen", lastReading !== null && Number(button.dataset.digit) === digit);
    button.classList.toggle("pinned", chosenDigit !== null && Number(button.dataset.digit) === chosenDigit);
  }
  if (lastReading === null) {
    paintSaliency(null, null);
    delete saliencyCanvas.dataset.digit;
    saliencyNote.textContent = "Draw a digit to see which pixels pushed the network towards it.";
    return;
  }
  askSaliency({ reading: lastReading, digit });
}

// The input, dimmed, under the saliency: orange where ink pushes towards the digit,
// blue where it pushes against it; the stronger, the more opaque.
function paintSaliency(input, values) {
  const context = saliencyCanvas.getContext("2d");
  const image = context.createImageData(28, 28);
  const ink = input ? input.flat() : [];
  const effect = values ? values.flat() : [];
  for (let i = 0; i < 28 * 28; i++) {
    const base = 20 + 70 * (ink[i] || 0);
    const v = effect[i] || 0;
    const t = Math.min(Math.abs(v), 1);
    const [r, g, b] = v >= 0 ? [255, 140, 50] : [60, 140, 255];
    image.data.set([base + (r - base) * t, base + (g - base) * t, base + (b - base) * t, 255], 4 * i);
  }
  context.putImageData(image, 0, 0);
}

let damageNumber = null;    // the damage_number of the settings shown under Break it
let damageLoading = false;  // a GET api/damage on its way

document.addEventListener("reading", (event) => {
  lastReading = event.detail;
  explainLatest();
  // The damage changed elsewhere (a class shares one server, and a training run undoes it): show
  // it, once for each newer number, and not while this page's own settings are on their way.
  const number = lastReading ? lastReading.damage_number : undefined;
  if (number !== undefined && damageNumber !== null && number > damageNumber && !damageLoading
      && document.body.dataset.damaging !== "1") {
    damageNumber = number;
    loadDamage();
  }
});

// ------------------------------------------------------------------ break it: damage

const damageControls = {
  zero_biases: document.getElementById("zero-biases"),
  noise: document.getElementById("noise"),
  prune: document.getElementById("prune"),
  units_off: document.getElementById("units-off"),
  zero_layer: document.getElementById("zero-layer"),
  seed: document.getElementById("damage-seed"),
};
const damageAccuracy = document.getElementById("damaged-accuracy");
const damageNote = document.getElementById("damage-note");

function damageSettings() {
  const c = damageControls;
  return {
    zero_biases: c.zero_biases.checked, noise: Number(c.noise.value), prune: Number(c.prune.value),
    units_off: Number(c.units_off.value), zero_layer: c.zero_layer.value === "" ? null : Number(c.zero_layer.value),
    seed: Number(c.seed.value),
  };
}

function showDamageSettings(settings) {
  const c = damageControls;
  c.zero_biases.checked = settings.zero_biases;
  for (const name of ["noise", "prune", "units_off", "seed"]) c[name].value = String(settings[name]);
  c.zero_layer.value = settings.zero_layer === null ? "" : String(settings.zero_layer);
  for (const name of ["noise", "prune", "units_off"]) {
    document.getElementById(`${c[name].id}-value`).textContent =
      name === "noise" ? `${Number(settings[name]).toFixed(2)} x` : `${Math.round(100 * settings[name])} %`;
  }
}

function showDamage(answer) {
  damageNumber = answer.damage_number;
  damageAccuracy.textContent = `${(100 * answer.test_accuracy).toFixed(2)} %`;
  damageAccuracy.classList.toggle("damaged", answer.damaged);
  const weights = answer.training_weights
    ? `the training run's weights${answer.weights_step === null ? "" : ` at step ${answer.weights_step.toLocaleString("en")}`}`
    : "the model as loaded";
  damageNote.textContent = `of ${answer.test_images.toLocaleString("en")} test images, ` +
    (answer.damaged ? `damaged copy (the model: ${(100 * answer.original_test_accuracy).toFixed(2)} %)` : weights) +
    `; measured by the server in ${answer.seconds.toFixed(3)} s.` +
    (answer.settings.units_off > 0 ? " Switched-off units still fire (Hidden layers counts them as active): " +
      "their outgoing weights are zeroed, so the next layer no longer hears them." : "");
}

// A value the page refuses itself, in its own words: the big figure is emptied, so that the
// accuracy of the settings before does not stand beside the error.
function showDamageError(text) {
  damageAccuracy.textContent = "–";
  damageAccuracy.classList.remove("damaged");
  damageNote.textContent = text;
}

const askDamage = latestOnly(async (settings) => {
  const [ok, answer] = await postJson("api/damage", settings);
  if (!ok) {
    showDamageError(answer.error);
    return;
  }
  showDamage(answer);
  if (lastReading !== null) readAgain();  // read the drawing again, with the damaged copy
}, "damaging");

const seedCue = document.getElementById("damage-seed-cue");
for (const control of Object.values(damageControls)) {
  const live = control.type === "range";  // sliders measure as they move; the others when changed
  control.addEventListener(live ? "input" : "change", () => {
    seedCue.textContent = "";
    const seed = damageControls.seed.value;
    if (!/^[0-9]+$/.test(seed) || Number(seed) > 4294967295) {  // "" for text a number field cannot hold
      showDamageError("Seed must be a whole number from 0 to 4,294,967,295.");
      return;
    }
    showDamageSettings(damageSettings());
    askDamage(damageSettings());
  });
}
// A seed is applied on Enter or when the field is left: say so while it is being typed.
damageControls.seed.addEventListener("input", () => { seedCue.textContent = "Enter applies it"; });

document.getElementById("undo-damage").addEventListener("click", () => {
  const undamaged = { zero_biases: false, noise: 0, prune: 0, units_off: 0, zero_layer: null, seed: 0 };
  showDamageSettings(undamaged);
  askDamage(undamaged);
});

async function loadDamage() {
  damageLoading = true;
  try {
    const response = await fetch("api/damage");
    const answer = await response.json();
    if (!response.ok) {
      damageNote.textContent = answer.error;
      return;
    }
    showDamageSettings(answer.settings);
    showDamage(answer);
  } catch (error) {
    damageNote.textContent = "the server does not answer";
  } finally {
    damageLoading = false;
  }
}

// The zero-a-layer menu: "none" and the served model's layers (rebuilt when the model file changes).
async function fillLayerChoices() {
  const facts = await (await fetch("api/model")).json();
  const sizes = facts.layer_sizes;
  damageControls.zero_layer.replaceChildren(damageControls.zero_layer.options[0]);
  for (let layer = 1; layer < sizes.length; layer++) {
    const option = document.createElement("option");
    option.value = String(layer);
    option.textContent = layer < sizes.length - 1 ? `hidden layer ${layer} (${sizes[layer]} units)` : "the output layer";
    damageControls.zero_layer.append(option);
  }
}

// A new model file (replaced on disk, or saved by a training run): its layers, and the damage in force.
function refreshDamage() {
  return fillLayerChoices().then(loadDamage).catch(() => { damageNote.textContent = "the server does not answer"; });
}

explainLatest();
refreshDamage();
