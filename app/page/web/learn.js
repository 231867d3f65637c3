// The "Watch it learn" view: start, follow and stop a training run in the server
// (training_session.py). Loaded after app.js and explore.js: it calls app.js's
// readAgain() and loadFacts(), and explore.js's postJson, paintGrid's colours
// (diverging) and refreshDamage(). document.body.dataset.training holds the run's status.
"use strict";

const POLL_MS = 600;
const trainButton = document.getElementById("train");
const stopButton = document.getElementById("stop-training");
const trainStatus = document.getElementById("train-status");
const trainQuestion = document.getElementById("train-question");
const lossCurve = document.getElementById("loss-curve");
let polling = false;
let lastStatus = null;
let lastEvaluations = 0;  // evaluations of the run seen: Break it measures again at each new one

async function trainRequest(path, value) {
  let ok, answer;
  try {
    [ok, answer] = await postJson(path, value);
  } catch (error) {
    [ok, answer] = [false, { error: "the server does not answer" }];
  }
  if (!ok) {
    trainStatus.textContent = answer.error;
    trainStatus.classList.add("error");
    return;
  }
  showRun(answer);
  followRun();
}

// The steps and the seed as whole numbers, or the page's own line about the field that is not one
// (a number field holds "" for "abc": sent as 0, the server answered "got 0").
function trainSettings() {
  const fields = [["steps", "Steps", 1, 100000], ["seed", "The seed", 0, 4294967295]];
  const settings = {};
  for (const [name, label, low, high] of fields) {
    const text = document.getElementById(`train-${name}`).value.trim();
    if (!/^[0-9]+$/.test(text) || Number(text) < low || Number(text) > high) {
      return `${label} must be a whole number from ${low.toLocaleString("en")} to ${high.toLocaleString("en")}.`;
    }
    settings[name] = Number(text);
  }
  return settings;
}

trainButton.addEventListener("click", () => {
  const settings = trainSettings();
  if (typeof settings === "string") {
    trainStatus.textContent = settings;
    trainStatus.classList.add("error");
    return;
  }
  trainRequest("api/train", settings);
});
stopButton.addEventListener("click", () => trainRequest("api/train/stop", {}));
document.getElementById("save-run").addEventListener("click", () => trainRequest("api/train/save", { save: true }));
document.getElementById("discard-run").addEventListener("click", () => trainRequest("api/train/save", { save: false }));

// Poll the run while it goes; each answer also reads the drawing again with the newest weights.
async function followRun() {
  if (polling) return;
  polling = true;
  while (true) {
    let run;
    try {
      run = await (await fetch("api/train")).json();
    } catch (error) {
      trainStatus.textContent = "the server does not answer";
      break;
    }
    showRun(run);
    if (!["loading", "running"].includes(run.status)) break;
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
  polling = false;
}

function showRun(run) {
  const going = ["loading", "running"].includes(run.status);
  document.body.dataset.training = run.status;
  trainButton.disabled = going || run.status === "stopped";
  stopButton.disabled = !going;
  trainQuestion.hidden = run.status !== "stopped";
  trainStatus.classList.toggle("error", run.status === "failed");
  const progress = document.getElementById("train-progress");
  progress.value = run.total_steps ? run.step / run.total_steps : 0;
  trainStatus.textContent = run.status === "running"
    ? `Step ${run.step.toLocaleString("en")} of ${run.total_steps.toLocaleString("en")}` : run.message;
  drawCurve(run.curve, run.total_steps);
  const evaluations = run.evaluations.slice(-5).map((e) => `step ${e.step.toLocaleString("en")}: ` +
    `${(100 * e.test_accuracy).toFixed(2)} %`);  // the latest five
  document.getElementById("train-evaluations").textContent = evaluations.length
    ? `Test accuracy at ${run.evaluations.length > 5 ? "... " : ""}${evaluations.join(", ")}` : "";
  if (run.weights) showLiveWeights(run.weights);
  if (going && typeof lastReading !== "undefined" && lastReading !== null) readAgain();
  // Break it waits while a run goes or waits for save or discard: its controls are off, and the
  // panel says that the drawing is read with the run's weights (the server undid the damage).
  const breakItWaits = going || run.status === "stopped";
  for (const control of Object.values(damageControls)) control.disabled = breakItWaits;
  document.getElementById("undo-damage").disabled = breakItWaits;
  // Break it measures the weights in use: the run's first ones when it starts, then again at each
  // evaluation of the run (its panel names the step of the weights it measured).
  const evaluationsSeen = run.evaluations.length;
  if (breakItWaits && (run.status !== lastStatus || evaluationsSeen !== lastEvaluations)) refreshDamage();
  lastEvaluations = evaluationsSeen;
  if (run.status !== lastStatus && ["saved", "discarded", "failed"].includes(run.status) && lastStatus !== null) {
    loadFacts();
    refreshDamage();
    if (lastReading !== null) readAgain();
  }
  lastStatus = run.status;
}

// The loss curve: block means of the training loss against the step, y from 0 to the largest.
function drawCurve(curve, runSteps) {
  const context = lossCurve.getContext("2d");
  const width = lossCurve.width, height = lossCurve.height, left = 34, bottom = 18;
  context.clearRect(0, 0, width, height);
  lossCurve.dataset.points = String(curve.loss.length);
  context.fillStyle = "#5b6475";
  context.font = "11px system-ui, sans-serif";
  if (!curve.loss.length) {
    context.textAlign = "center";
    context.fillText("the loss curve appears here", width / 2, height / 2);
    context.textAlign = "start";
    return;
  }
  const top = Math.max(...curve.loss) * 1.05;
  const lastStep = curve.step[curve.step.length - 1];
  const totalSteps = Math.max(lastStep, runSteps || lastStep);  // the run's steps, not the field's (edited since)
  const x = (step) => left + (width - left - 6) * step / totalSteps;
  const y = (loss) => 6 + (height - bottom - 6) * (1 - loss / top);
  context.strokeStyle = "#e1e4ea";
  context.beginPath();
  context.moveTo(left, 6); context.lineTo(left, height - bottom); context.lineTo(width - 6, height - bottom);
  context.stroke();
  context.fillText(top.toFixed(2), 2, 14);
  context.fillText("0", 24, height - bottom);
  context.fillText(`step ${lastStep.toLocaleString("en")}`, width - 90, height - 4);
  context.fillText(`loss (mean of ${curve.window})`, left + 6, 16);
  context.strokeStyle = "#e8772e";
  context.lineWidth = 1.5;
  context.beginPath();
  curve.loss.forEach((loss, i) => (i ? context.lineTo : context.moveTo).call(context, x(curve.step[i]), y(loss)));
  context.stroke();
}

// 36 units of 784 whole numbers in [-100, 100], tiled 6 x 6 with 1-pixel gaps (173 x 173 pixels).
const TILE = 29, SIDE = 6 * TILE - 1;
const liveWeights = document.getElementById("train-weights");

// Before the first weights: a light empty frame (style.css's .empty) with one line in it.
function showWeightsPlaceholder() {
  liveWeights.classList.add("empty");
  liveWeights.width = liveWeights.height = 2 * SIDE;  // twice the pixels: sharp text where it is shown larger
  const context = liveWeights.getContext("2d");
  context.fillStyle = "#5b6475";
  context.font = "16px system-ui, sans-serif";
  context.textAlign = "center";
  context.fillText("the weights appear here", liveWeights.width / 2, liveWeights.height / 2);
}
showWeightsPlaceholder();

function showLiveWeights(units) {
  const canvas = liveWeights;
  canvas.classList.remove("empty");
  canvas.width = canvas.height = SIDE;
  const context = canvas.getContext("2d");
  const image = context.createImageData(SIDE, SIDE);
  image.data.fill(255);  // the gaps: white
  units.forEach((weights, unit) => {
    const originX = TILE * (unit % 6), originY = TILE * Math.floor(unit / 6);
    weights.forEach((w, pixel) => {
      const [r, g, b] = diverging(w / 100);
      const offset = 4 * ((originY + Math.floor(pixel / 28)) * SIDE + originX + (pixel % 28));
      image.data.set([r, g, b, 255], offset);
    });
  });
  context.putImageData(image, 0, 0);
}

fetch("api/train").then((response) => response.json()).then((run) => {
  showRun(run);
  if (["loading", "running"].includes(run.status)) followRun();
}).catch(() => { trainStatus.textContent = "the server does not answer"; });
