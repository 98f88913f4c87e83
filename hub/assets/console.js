// The console page: the VM's screen (noVNC), its serial terminal and an SSH terminal (xterm.js),
// each over a WebSocket to the hub that a single-use ticket opens. The hub relays the bytes to
// the VM's node (for SSH it is the SSH client itself); this page never learns where the VM is.
import RFB from "/assets/vendor/@novnc/novnc/core/rfb.js";
import { Terminal } from "/assets/vendor/@xterm/xterm/lib/xterm.mjs";
import { FitAddon } from "/assets/vendor/@xterm/addon-fit/lib/addon-fit.mjs";

const root = document.querySelector("[data-console]");
const csrf = document.body.dataset.csrf || "";
const vmid = root.dataset.vm;
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
  4015: ["The SSH session ended.", "reconnect"],
  4040: ["This VM has no serial port. A teacher adds one as “serial0: socket” in its hardware, then restarts it.", null],
  4400: ["The login was not complete.", "reconnect"],
  4401: ["The VM refused the login: wrong username, password or key.", "reconnect"],
  4402: ["Not connected: the VM's new host key was not accepted, and nothing was sent to it.", "reconnect"],
  4403: ["The VM's node refused to connect to it.", null],
  4502: ["The VM's node could not be reached.", "reconnect"],
  4503: ["The VM's SSH server could not be reached: is the VM up, with SSH running?", "reconnect"],
};

const firstTab = root.querySelector("[role=tab][aria-selected=true]");
let kind = firstTab ? firstTab.dataset.tab : null;
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

function field(name) {
  return root.querySelector(`[data-field="${name}"]`);
}

function endSession() {
  const hostKey = field("host-key");
  if (hostKey) hostKey.hidden = true;
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

// The SSH tab waits for the login form; the consoles connect at once.
async function connect() {
  endSession();
  if (kind === "ssh") {
    showLogin(true);
    setState("idle", "Log in to the VM to open its SSH terminal.", null);
    return;
  }
  await open(null);
}

async function open(login) {
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
      if (current.kind === "ssh") {
        field("host-key").hidden = true;
        showLogin(true);
      }
    }
  });
  if (kind === "vnc") openScreen(current, ticket.password);
  else if (kind === "ssh") openShell(current, login);
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
    // How long the page took to reach the VM's screen (the browser's performance timeline).
    performance.mark("proxlab-screen-connected");
    if (session === current) setState("connected", "Connected to the VM's screen.", null);
  });
  rfb.addEventListener("credentialsrequired", () => rfb.sendCredentials({ password }));
  rfb.addEventListener("securityfailure", (event) => {
    setState("error", `The VM's screen refused the login: ${event.detail.reason || "wrong or expired password"}.`, "reconnect");
  });
  rfb.addEventListener("desktopname", (event) => { root.dataset.desktopName = event.detail.name; });
}

function openTerminal(current) {
  const panel = root.querySelector(`[data-panel="${current.kind}"]`);
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
    if (session === current && current.kind === "serial") {
      setState("connected", "Connected to the VM's serial console.", null);
      terminal.focus();
    }
  });
  current.socket.addEventListener("message", (event) => {
    if (typeof event.data === "string") return;
    terminal.write(new Uint8Array(event.data));
    root.dataset.terminalBytes = String(Number(root.dataset.terminalBytes || 0) + event.data.byteLength);
  });
}

function showLogin(shown) {
  const form = root.querySelector("[data-ssh-login]");
  if (form) form.hidden = !shown || kind !== "ssh";
}

// The SSH terminal: the login goes first (and is forgotten here), then the hub's notices about
// the VM's host key, then the shell's bytes.
function openShell(current, login) {
  openTerminal(current);
  const { terminal } = current;
  const send = (message) => {
    if (current.socket.readyState === WebSocket.OPEN) current.socket.send(JSON.stringify(message));
  };
  current.socket.addEventListener("open", () => {
    send({ ...login, cols: terminal.cols, rows: terminal.rows });
    setState("connecting", "Logging in…", null);
  });
  terminal.onResize(({ cols, rows }) => send({ type: "resize", cols, rows }));
  current.socket.addEventListener("message", (event) => {
    if (typeof event.data !== "string") return;
    const notice = JSON.parse(event.data);
    if (notice.type === "connected") {
      showLogin(false);
      setState("connected", "Connected to the VM over SSH.", null);
      terminal.focus();
    } else if (notice.type === "host-key") {
      hostKey(current, notice, send);
    }
  });
}

function hostKey(current, notice, send) {
  root.dataset.hostKey = notice.status;
  if (notice.status === "new") {
    setState("connecting", `First connection: the VM's host key (${notice.fingerprint}) is remembered from now on.`, null);
    return;
  }
  if (notice.status !== "changed") return;
  const box = field("host-key");
  const why = notice.reset_since
    ? `The VM was reset on ${notice.reset_since}, after the old key was remembered, which explains a new key: accept it.`
    : "If the VM was not reset or reinstalled since, someone may be intercepting the connection: cancel and tell your teacher.";
  field("host-key-text").textContent =
    `The VM's SSH host key has changed since ${notice.known_since} (it was ${notice.known_fingerprint}). ${why} The new key is:`;
  field("host-key-fingerprint").textContent = notice.fingerprint;
  box.hidden = false;
  setState("connecting", "The VM's host key has changed: decide below.", null);
  const accept = button("accept-host-key");
  accept.onclick = () => {
    box.hidden = true;
    send({ type: "accept-host-key", fingerprint: notice.fingerprint });
  };
  button("reject-host-key").onclick = () => {
    box.hidden = true;
    if (session === current) current.socket.close(1000);
  };
  accept.focus();
}

const loginForm = root.querySelector("[data-ssh-login]");
if (loginForm) {
  loginForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(loginForm);
    const key = String(data.get("private_key") || "").trim();
    const login = { username: String(data.get("username") || "") };
    if (key) {
      login.private_key = key + "\n";
      const passphrase = String(data.get("passphrase") || "");
      if (passphrase) login.passphrase = passphrase;
    } else {
      login.password = String(data.get("password") || "");
    }
    // The secrets leave the page with the login and are not kept in it.
    for (const name of ["password", "private_key", "passphrase"]) loginForm.elements[name].value = "";
    showLogin(false);
    endSession();
    open(login);
  });
}

function selectTab(next, first) {
  for (const tab of root.querySelectorAll("[role=tab]")) {
    const selected = tab.dataset.tab === next;
    tab.setAttribute("aria-selected", String(selected));
    tab.tabIndex = selected ? 0 : -1;
  }
  for (const panel of root.querySelectorAll("[data-panel]")) panel.hidden = panel.dataset.panel !== next;
  for (const tool of root.querySelectorAll("[data-for]")) tool.hidden = tool.dataset.for !== next;
  showLogin(next === "ssh" && !(session && session.kind === "ssh"));
  if (next !== kind || first) {
    kind = next;
    connect();
  }
}

// Ports the hub forwards to the VM, for the user's own SSH and Remote Desktop apps.
async function forward(service) {
  const box = field("forward");
  let answer;
  try {
    answer = await api(`/api/v1/vms/${vmid}/forwards`, { service });
  } catch (error) {
    box.hidden = false;
    field("forward-text").textContent = error.message;
    field("forward-command-line").hidden = true;
    return;
  }
  const from = answer.allowed_from ? `from your address ${answer.allowed_from} only` : "from any address";
  const until = `until ${answer.expires}`;
  box.hidden = false;
  if (service === "ssh") {
    const user = (root.querySelector("#ssh-username") || {}).value || "USER";
    field("forward-text").textContent = `Port ${answer.port} on ${answer.host} reaches the VM's SSH server, ${from}, ${until}. In a terminal on your computer:`;
    field("forward-command").textContent = answer.ssh_command.replace("USER@", `${user}@`);
    field("forward-command-line").hidden = false;
  } else {
    field("forward-text").textContent = `Port ${answer.port} on ${answer.host} reaches the VM's Remote Desktop, ${from}, ${until}. Open the downloaded file with your Remote Desktop app.`;
    field("forward-command-line").hidden = true;
    location.href = answer.rdp_file;
  }
}

for (const service of ["ssh", "rdp"]) {
  const trigger = button(`forward-${service}`);
  if (trigger) trigger.addEventListener("click", () => forward(service));
}
if (button("copy-command")) {
  button("copy-command").addEventListener("click", () => {
    navigator.clipboard.writeText(field("forward-command").textContent).catch(() => {});
  });
}

const tablist = root.querySelector("[role=tablist]");
tablist.addEventListener("click", (event) => {
  const tab = event.target.closest("[role=tab]");
  if (tab) selectTab(tab.dataset.tab);
});
tablist.addEventListener("keydown", (event) => {
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
if (button("scale")) button("scale").addEventListener("click", () => {
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
if (button("paste")) button("paste").addEventListener("click", () => {
  const text = root.querySelector("[data-field=clipboard]").value;
  if (session && session.rfb && text) session.rfb.clipboardPasteFrom(text);
});
window.addEventListener("resize", () => session && session.fit && session.fit.fit());
// Leaving the page ends the console at once (the hub then closes the VM's side).
window.addEventListener("pagehide", endSession);
window.addEventListener("pageshow", (event) => { if (event.persisted) connect(); });

if (!kind) setState("closed", "There is no way into this VM for you here.", null);
else if (root.dataset.vmStatus === "running") selectTab(kind, true);
else setState("stopped", "The VM is not running.", "start");
