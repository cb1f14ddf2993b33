// The playground: every edit of the form is sent on the realtime socket; the newest frame replaces the image.
const $ = (id) => document.getElementById(id);
const form = { prompt: $("prompt"), steps: $("steps"), provider: $("provider"), seed: $("seed"), lock: $("seed-lock") };
const status = $("status");
const error = $("error");
let socket = null;
let retryMs = 500;

function socketUrl() {
  const url = new URL("v1/realtime", window.location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  const key = new URLSearchParams(window.location.search).get("key");
  if (key) url.searchParams.set("api_key", key);
  return url.toString();
}

function connect() {
  socket = new WebSocket(socketUrl());
  socket.addEventListener("open", () => {
    status.textContent = "connected";
    retryMs = 500;
    if (form.prompt.value.trim()) sendNow();
  });
  socket.addEventListener("message", (event) => handle(JSON.parse(event.data)));
  socket.addEventListener("close", () => {
    status.textContent = "disconnected; reconnecting…";
    setTimeout(connect, retryMs);
    retryMs = Math.min(retryMs * 2, 8000);
  });
}

function sendNow() {
  const prompt = form.prompt.value.trim();
  if (!prompt || !socket || socket.readyState !== WebSocket.OPEN) return;
  let seed = null;
  if (form.lock.checked) {
    seed = Number.parseInt(form.seed.value, 10);
    if (!Number.isFinite(seed)) seed = 0;
  }
  socket.send(JSON.stringify({
    type: "send",
    prompt,
    steps: Number.parseInt(form.steps.value, 10),
    provider: form.provider.value,
    seed,
  }));
}

function money(value, estimated) {
  if (value === null || value === undefined) return "unknown";
  return `$${value.toFixed(5)}${estimated ? " (est.)" : ""}`;
}

function seconds(value) {
  return value === null || value === undefined ? "–" : `${Math.round(value * 1000)} ms`;
}

function showLedger(rows) {
  const body = $("ledger").querySelector("tbody");
  body.replaceChildren(...rows.map((row) => {
    const tr = document.createElement("tr");
    for (const text of [row.provider, row.count, row.succeeded, row.canceled, seconds(row.p50_s), money(row.total_cost, row.cost_estimated)]) {
      const td = document.createElement("td");
      td.textContent = String(text);
      tr.append(td);
    }
    return tr;
  }));
}

function showSession(stats) {
  const list = $("session");
  list.replaceChildren(...Object.entries(stats).flatMap(([name, value]) => {
    const dt = document.createElement("dt");
    dt.textContent = name;
    const dd = document.createElement("dd");
    dd.textContent = String(value);
    dd.id = `session-${name}`;
    return [dt, dd];
  }));
}

function handle(message) {
  if (message.type === "hello") {
    const current = form.provider.value;
    form.provider.replaceChildren(...message.providers.map((name) => new Option(name, name, false, name === current)));
    return;
  }
  if (message.type === "frame") {
    error.textContent = "";
    $("frame").src = message.image;
    $("frame").dataset.sendId = String(message.send_id);
    $("frame").dataset.prompt = message.prompt;
    $("meta-provider").textContent = message.provider + (message.emulated ? " (emulated realtime)" : "");
    $("meta-transport").textContent = message.transport;
    $("meta-seed").textContent = String(message.seed);
    $("meta-steps").textContent = String(message.steps);
    $("meta-latency").textContent = `${Math.round(message.latency_ms)} ms` +
      (message.inference_ms === null ? "" : ` (compute ${Math.round(message.inference_ms)} ms)`);
    $("meta-cost").textContent = money(message.cost_usd, message.cost_estimated);
    $("meta-send").textContent = `#${message.send_id}`;
    if (!form.lock.checked) form.seed.value = String(message.seed);
  } else if (message.type === "error") {
    error.textContent = `${message.error}: ${message.message}`;
  }
  if (message.ledger) showLedger(message.ledger);
  if (message.stats) showSession(message.stats);
}

for (const element of [form.prompt, form.steps, form.provider, form.seed, form.lock]) {
  element.addEventListener(element === form.prompt ? "input" : "change", sendNow);
}
$("controls").addEventListener("submit", (event) => { event.preventDefault(); sendNow(); });
connect();
