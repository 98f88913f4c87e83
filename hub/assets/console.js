// The console page: the VM's screen (noVNC) and its serial terminal (xterm.js), each over a
// WebSocket to the hub that a single-use ticket opens. The hub relays the bytes to the VM's
// node; this page never learns where the VM is.
import RFB from "/assets/vendor/@novnc/novnc/core/rfb.js";
import { Terminal } from "/assets/vendor/@xterm/xterm/lib/xterm.mjs";
import { FitAddon } from "/assets/vendor/@xterm/addon-fit/lib/addon-fit.mjs";

const root = document.querySelector("[data-console]");
const csrf = document.body.dataset.csrf || "";
const vmid = root.dataset.vmid;
const message = root.querySelector("[data-field=console-message]");
const button = (name) => root.querySelector(`[data-command="${name}"]`);

// What each close code of the hub means to the person at the console, and what they can do.
const CLOSED = {
  1000: ["The console was closed.", "reconnect"],
  1006: ["The connection to the hub was lost.", "reconnect"],
  1009: ["The console closed: the browser sent more than the hub accepts at once.", "reconnect"],
  4001: ["The console link expired before it was used.", "reconnect"],
  4002: ["The console link was used already.", "reconnect"],
  4003: ["The console link is not valid.", "reconnect"],
  4004: ["There is no such VM, or it is no longer yours.", null],
  4009: ["The VM is not running.", "start"],
  4010: ["The VM stopped (or closed its console).", "start"],
  4011: ["The session was ended by a teacher or an administrator.", "reconnect"],
  4012: ["You no longer have access to this VM.", null],
  4013: ["The console was closed after a long time without activity.", "reconnect"],
  4014: ["The hub is restarting.", "reconnect"],
  4029: ["Too many consoles are open.", "reconnect"],
  4040: ["This VM has no serial port. A teacher adds one as “serial0: socket” in its hardware, then restarts it.", null],
  4502: ["The VM's node could not be reached.", "reconnect"],
};

let kind = "vnc";
let session = null; // { kind, socket, rfb?, terminal? }
let scaled = true;

function setState(state, text, offer) {
  root.dataset.consoleState = state;
  message.textContent = text;
  button("start").hidden = offer !== "start";
  button("reconnect").hidden = offer !== "reconnect";
}

async function api(path, body) {
  const response = await fetch(path, {
    method: "POST",
    credentials: "same-origin",
    headers: { "X-CSRF-Token": csrf, "Content-Type": "application/json", "Accept": "application/json" },
    body: JSON.stringify(body || {}),
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error((data.error && data.error.message) || `The hub answered ${response.status}.`);
    error.status = response.status;
    throw error;
  }
  return data;
}

function endSession() {
  if (!session) return;
  const old = session;
  session = null;
  if (old.rfb) old.rfb.disconnect();
  else if (old.socket.readyState <= WebSocket.OPEN) old.socket.close(1000);
  if (old.terminal) old.terminal.dispose();
}

function closedBy(event) {
  const [text, offer] = CLOSED[event.code] || [`The console closed (${event.code}).`, "reconnect"];
  const reason = event.reason && ![1000, 1006].includes(event.code) ? ` (${event.reason})` : "";
  root.dataset.closeCode = String(event.code);
  setState(event.code === 4009 || event.code === 4010 ? "stopped" : "closed", text + reason, offer);
}

async function connect() {
  endSession();
  setState("connecting", "Connecting…", null);
  let ticket;
  try {
    ticket = await api(`/api/v1/vms/${vmid}/console`, { kind });
  } catch (error) {
    const stopped = error.status === 409 && /not running/.test(error.message);
    setState(stopped ? "stopped" : "error", error.message, stopped ? "start" : "reconnect");
    return;
  }
  const url = new URL(ticket.url, location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  const socket = new WebSocket(url, ["binary"]);
  socket.binaryType = "arraybuffer";
  const current = { kind, socket };
  session = current;
  socket.addEventListener("close", (event) => {
    if (session === current) {
      session = null;
      closedBy(event);
    }
  });
  if (kind === "vnc") openScreen(current, ticket.password);
  else openTerminal(current);
}

function openScreen(current, password) {
  const panel = root.querySelector("[data-panel=vnc]");
  panel.replaceChildren();
  const rfb = new RFB(panel, current.socket, { credentials: { password }, shared: true });
  current.rfb = rfb;
  rfb.scaleViewport = scaled;
  rfb.clipViewport = !scaled;
  rfb.background = "#000";
  rfb.addEventListener("connect", () => {
    if (session === current) setState("connected", "Connected to the VM's screen.", null);
  });
  rfb.addEventListener("credentialsrequired", () => rfb.sendCredentials({ password }));
  rfb.addEventListener("securityfailure", (event) => {
    setState("error", `The VM's screen refused the login: ${event.detail.reason || "wrong or expired password"}.`, "reconnect");
  });
  rfb.addEventListener("desktopname", (event) => { root.dataset.desktopName = event.detail.name; });
}

function openTerminal(current) {
  const panel = root.querySelector("[data-panel=serial]");
  panel.replaceChildren();
  const terminal = new Terminal({ cursorBlink: true, convertEol: false, scrollback: 5000, fontSize: 14 });
  const fit = new FitAddon();
  terminal.loadAddon(fit);
  terminal.open(panel);
  fit.fit();
  current.terminal = terminal;
  current.fit = fit;
  const encoder = new TextEncoder();
  terminal.onData((data) => {
    if (current.socket.readyState === WebSocket.OPEN) current.socket.send(encoder.encode(data));
  });
  terminal.onBinary((data) => {
    const bytes = Uint8Array.from(data, (c) => c.charCodeAt(0));
    if (current.socket.readyState === WebSocket.OPEN) current.socket.send(bytes);
  });
  current.socket.addEventListener("open", () => {
    if (session === current) {
      setState("connected", "Connected to the VM's serial console.", null);
      terminal.focus();
    }
  });
  current.socket.addEventListener("message", (event) => {
    terminal.write(new Uint8Array(event.data));
    root.dataset.terminalBytes = String(Number(root.dataset.terminalBytes || 0) + event.data.byteLength);
  });
}

function selectTab(next) {
  for (const tab of root.querySelectorAll("[role=tab]")) {
    const selected = tab.dataset.tab === next;
    tab.setAttribute("aria-selected", String(selected));
    tab.tabIndex = selected ? 0 : -1;
  }
  for (const panel of root.querySelectorAll("[data-panel]")) panel.hidden = panel.dataset.panel !== next;
  for (const tool of root.querySelectorAll("[data-for]")) tool.hidden = tool.dataset.for !== next;
  if (next !== kind) {
    kind = next;
    connect();
  }
}

root.querySelector("[role=tablist]").addEventListener("click", (event) => {
  const tab = event.target.closest("[role=tab]");
  if (tab) selectTab(tab.dataset.tab);
});
root.querySelector("[role=tablist]").addEventListener("keydown", (event) => {
  if (event.key !== "ArrowLeft" && event.key !== "ArrowRight") return;
  const tabs = [...root.querySelectorAll("[role=tab]")];
  const at = tabs.findIndex((tab) => tab.getAttribute("aria-selected") === "true");
  const next = tabs[(at + (event.key === "ArrowRight" ? 1 : tabs.length - 1)) % tabs.length];
  next.focus();
  selectTab(next.dataset.tab);
});

button("reconnect").addEventListener("click", connect);
button("start").addEventListener("click", async () => {
  setState("connecting", "Starting the VM…", null);
  try {
    await api(`/api/v1/vms/${vmid}/start`);
  } catch (error) {
    setState("error", error.message, "start");
    return;
  }
  connect();
});
button("ctrl-alt-del").addEventListener("click", () => session && session.rfb && session.rfb.sendCtrlAltDel());
button("scale").addEventListener("click", () => {
  scaled = !scaled;
  button("scale").setAttribute("aria-pressed", String(scaled));
  button("scale").textContent = scaled ? "Fit to window" : "Actual size";
  if (session && session.rfb) {
    session.rfb.scaleViewport = scaled;
    session.rfb.clipViewport = !scaled;
  }
});
button("fullscreen").addEventListener("click", () => {
  if (document.fullscreenElement) document.exitFullscreen();
  else root.requestFullscreen().catch(() => {});
});
button("paste").addEventListener("click", () => {
  const text = root.querySelector("[data-field=clipboard]").value;
  if (session && session.rfb && text) session.rfb.clipboardPasteFrom(text);
});
window.addEventListener("resize", () => session && session.fit && session.fit.fit());
// Leaving the page ends the console at once (the hub then closes the VM's side).
window.addEventListener("pagehide", endSession);
window.addEventListener("pageshow", (event) => { if (event.persisted) connect(); });

if (root.dataset.vmStatus === "running") connect();
else setState("stopped", "The VM is not running.", "start");
