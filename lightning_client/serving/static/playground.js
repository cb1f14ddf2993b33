// The playground: every edit of the form is sent on the realtime socket; the newest frame replaces the image.
const $ = (id) => document.getElementById(id);
const form = { prompt: $("prompt"), steps: $("steps"), provider: $("provider"), seed: $("seed"), lock: $("seed-lock") };
const status = $("status");
const error = $("error");
const keyForm = $("key-form");
const keyInput = $("api-key");
// The API key lives for this tab only (sessionStorage); `?key=` in the address fills it too.
const KEY_ITEM = "lightning-client.api-key";
let socket = null;
let retryMs = 500;
let retryTimer = null;

function apiKey() {
  const fromUrl = new URLSearchParams(window.location.search).get("key");
  if (fromUrl) sessionStorage.setItem(KEY_ITEM, fromUrl);
  return sessionStorage.getItem(KEY_ITEM) || "";
}

function socketUrl() {
  const url = new URL("v1/realtime", window.location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  const key = apiKey();
  if (key) url.searchParams.set("api_key", key);
  return url.toString();
}

function connect() {
  clearTimeout(retryTimer);
  let opened = false;
  socket = new WebSocket(socketUrl());
  socket.addEventListener("open", () => {
    opened = true;
    status.textContent = "connected";
    keyForm.hidden = true;
    retryMs = 500;
    if (form.prompt.value.trim()) sendNow();
  });
  socket.addEventListener("message", (event) => handle(JSON.parse(event.data)));
  socket.addEventListener("close", (event) => {
    if (opened) {
      retry(`disconnected${event.reason ? ` (${event.reason})` : ""}`);
    } else {
      diagnose(event.reason);
    }
  });
}

function retry(why) {
  status.textContent = `${why}; reconnecting…`;
  retryTimer = setTimeout(connect, retryMs);
  retryMs = Math.min(retryMs * 2, 8000);
}

// A refused socket tells the page nothing (a browser sees no status), so ask the HTTP API with the same key.
async function diagnose(reason) {
  const key = apiKey();
  let answer = null;
  try {
    answer = await fetch("v1/capabilities", { headers: key ? { Authorization: `Bearer ${key}` } : {} });
  } catch {
    retry("disconnected: the server cannot be reached");
    return;
  }
  if (answer.status === 401 || answer.status === 403) {
    let message = "invalid or missing API key";
    try {
      message = (await answer.json()).error.message || message;
    } catch {}
    keyForm.hidden = false;
    keyInput.focus();
    status.textContent = key
      ? `disconnected: the server refused this API key (${answer.status}: ${message})`
      : "disconnected: this server needs an API key; enter it above";
    error.textContent = `${answer.status}: ${message}`;
    return;  // no retry loop: the next try comes with the key the user enters
  }
  retry(`disconnected: the server refused the socket${reason ? ` (${reason})` : ""}`);
}

keyForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const key = keyInput.value.trim();
  if (!key) return;
  sessionStorage.setItem(KEY_ITEM, key);
  error.textContent = "";
  status.textContent = "connecting…";
  retryMs = 500;
  connect();
});

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

// Dollars as the CLI and the reports print them: four decimals, or enough for two significant digits.
function money(value, estimated, known) {
  if (value === null || value === undefined) return known ? `unknown (at least ${money(known, false)})` : "unknown";
  const decimals = value === 0 || !Number.isFinite(value) ? 4 : Math.max(4, 1 - Math.floor(Math.log10(Math.abs(value))));
  return `$${value.toFixed(decimals)}${estimated ? " (est.)" : ""}`;
}

function seconds(value) {
  return value === null || value === undefined ? "–" : `${Math.round(value * 1000)} ms`;
}

function showLedger(rows) {
  const body = $("ledger").querySelector("tbody");
  body.replaceChildren(...rows.map((row) => {
    const tr = document.createElement("tr");
    const unknown = row.count - row.succeeded - row.failed - row.canceled;  // never finished counts as unknown
    const cells = [row.provider, row.count, row.succeeded, row.failed, row.canceled, unknown];
    for (const text of [...cells, seconds(row.p50_s), money(row.total_cost, row.cost_estimated, row.known_cost)]) {
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
