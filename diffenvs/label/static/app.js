// diffenvs labeling page: plain JS, no build step. The server owns all state; this page only shows
// the state it is given and posts answers, so a reload or server restart resumes exactly.
"use strict";

const NAME_KEY = "diffenvs.labeler";
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$/;
const $ = (id) => document.getElementById(id);

let labeler = localStorage.getItem(NAME_KEY);
let state = null;
let busy = false; // one request at a time: key repeat or a double click must not answer twice

async function api(method, path, body) {
  const opts = { method, headers: {} };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const resp = await fetch(path, opts);
  let data = null;
  try {
    data = await resp.json();
  } catch (e) {
    data = { error: `The server answered ${resp.status} without JSON.` };
  }
  return { status: resp.status, data };
}

function showMessage(text, kind = "info") {
  const m = $("message");
  m.textContent = text || "";
  m.className = text ? kind : "";
}

function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined) return "– (after a few answers)";
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  const m = Math.round(s / 60);
  if (m < 60) return `${m} min`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

function renderProgress(p, task) {
  $("tasks-done").textContent = p.tasks_done;
  $("tasks-total").textContent = p.tasks_total;
  $("tasks-total-2").textContent = p.tasks_total;
  $("comparisons-done").textContent = p.comparisons_done;
  $("comparisons-left").textContent = Math.round(p.remaining_comparisons);
  $("pace").textContent =
    p.seconds_per_answer === null ? "–" : `${p.seconds_per_answer.toFixed(1)} s each`;
  $("eta").textContent = fmtDuration(p.eta_seconds);
  $("task-position").textContent = task ? task.index + 1 : "–";
  $("task-id").textContent = task ? `task ${task.task_id}` : "";
  const total = p.comparisons_done + p.remaining_comparisons;
  $("progress-bar").value = total > 0 ? p.comparisons_done / total : 1;
}

function thumb(task, k, pair) {
  const img = document.createElement("img");
  img.src = task.images[k];
  img.alt = `image ${k}`;
  img.dataset.index = k;
  img.className = "thumb";
  if (pair && (k === pair.left || k === pair.right)) img.classList.add("in-pair");
  return img;
}

function renderOrder(s) {
  const box = $("order");
  box.replaceChildren();
  box.dataset.order = JSON.stringify(s.order);
  if (!s.task) return;
  s.order.forEach((group, gi) => {
    if (gi > 0) box.append(Object.assign(document.createElement("span"), { className: "gt", textContent: "›" }));
    const g = document.createElement("span");
    g.className = "group";
    group.forEach((k, i) => {
      if (i > 0) g.append(Object.assign(document.createElement("span"), { className: "eq", textContent: "=" }));
      g.append(thumb(s.task, k, s.pair));
    });
    box.append(g);
  });
}

function render(s) {
  state = s;
  $("labeler-name").textContent = s.labeler;
  $("export-link").href = `/api/export?labeler=${encodeURIComponent(s.labeler)}`;
  renderProgress(s.progress, s.task);
  const done = !s.task;
  $("all-done").hidden = !done;
  document.querySelector(".pair").hidden = done;
  document.querySelector(".actions #tie").disabled = done;
  $("undo").disabled = !s.last_answer;
  $("order-box").hidden = done;
  if (done) {
    $("prompt").textContent = "All tasks are ordered.";
  } else {
    $("prompt").textContent = s.task.prompt;
    for (const side of ["left", "right"]) {
      const img = $(`${side}-img`);
      const k = s.pair[side];
      img.src = s.task.images[k];
      img.dataset.index = k;
      img.dataset.task = s.task.task_id;
      img.alt = `${side} image (${k} of task ${s.task.task_id})`;
    }
    // Warm the cache so the next questions of this task appear instantly.
    s.task.images.forEach((src) => { new Image().src = src; });
  }
  renderOrder(s);
  document.body.dataset.ready = "1"; // for tests: the page shows a server state
}

let retry = null;

async function load() {
  clearTimeout(retry);
  let r;
  try {
    r = await api("GET", `/api/state?labeler=${encodeURIComponent(labeler)}`);
  } catch (e) {
    // The server is down or restarting: keep trying; nothing is lost, answers live in SQLite.
    showMessage(`Cannot reach the server (${e.message}); your saved answers are safe. Retrying…`, "error");
    retry = setTimeout(load, 2000);
    return;
  }
  if (r.status !== 200) {
    showMessage(r.data.error, "error");
    return;
  }
  render(r.data);
  if (document.getElementById("message").className === "error") showMessage("");
}

async function send(path, body, okText) {
  if (busy || !state) return;
  busy = true;
  document.body.classList.add("busy");
  try {
    const r = await api("POST", path, body);
    if (r.status === 200) {
      render(r.data);
      showMessage(okText);
    } else if (r.status === 409 && r.data.state) {
      render(r.data.state);
      showMessage(r.data.error, "warn");
    } else {
      showMessage(`${r.data.error} (HTTP ${r.status})`, "error");
    }
  } catch (e) {
    // This answer was not stored (no reply); show the state again once the server is back.
    showMessage(`Cannot reach the server (${e.message}); your saved answers are safe. Retrying…`, "error");
    retry = setTimeout(load, 2000);
  } finally {
    busy = false;
    document.body.classList.remove("busy");
  }
}

function answer(outcome) {
  if (!state || !state.task) return;
  flash(outcome);
  const { left, right } = state.pair;
  const words = { left: "left is better", right: "right is better", tie: "tie" };
  return send(
    "/api/answer",
    { labeler, task_id: state.task.task_id, left, right, outcome },
    `Saved: ${words[outcome]}.`,
  );
}

function undo() {
  if (!state || !state.last_answer) return;
  return send("/api/undo", { labeler, answer_id: state.last_answer.id }, "Undone: answer it again.");
}

function flash(outcome) {
  const el = outcome === "tie" ? $("tie") : $(outcome);
  el.classList.add("chosen");
  setTimeout(() => el.classList.remove("chosen"), 180);
}

const KEYS = {
  ArrowLeft: "left", 1: "left",
  ArrowDown: "tie", " ": "tie", 2: "tie",
  ArrowRight: "right", 3: "right",
};

document.addEventListener("keydown", (e) => {
  if (e.target instanceof HTMLInputElement || !$("login").hidden) return;
  if (e.ctrlKey || e.metaKey || e.altKey || e.repeat) return;
  if (KEYS[e.key]) {
    e.preventDefault(); // Space would scroll, arrows too
    answer(KEYS[e.key]);
  } else if (e.key === "Backspace" || e.key === "u" || e.key === "U") {
    e.preventDefault(); // Backspace must never navigate away
    undo();
  }
});

document.querySelectorAll("button.choice").forEach((b) => {
  // blur: a focused button would also be "clicked" by the next Space press.
  b.addEventListener("click", () => { b.blur(); answer(b.dataset.outcome); });
});
$("undo").addEventListener("click", () => { $("undo").blur(); undo(); });
// Clicking an image also chooses it (the buttons stay the obvious, labeled targets).
$("left-img").addEventListener("click", () => answer("left"));
$("right-img").addEventListener("click", () => answer("right"));

function askName() {
  $("login").hidden = false;
  $("login-name").value = labeler || "";
  $("login-name").focus();
}

$("login-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const name = $("login-name").value.trim();
  if (!NAME_RE.test(name)) {
    showMessage("Use 1–32 letters, digits, _ . or - for your name.", "error");
    return;
  }
  labeler = name;
  localStorage.setItem(NAME_KEY, name);
  $("login").hidden = true;
  showMessage("");
  load();
});
$("change-labeler").addEventListener("click", askName);

if (labeler && NAME_RE.test(labeler)) load();
else askName();
