// proxlab live updates: VM and node state arrive over Server-Sent Events and update the page
// in place; power buttons submit through the JSON API. Without JavaScript every form still
// works as a plain form post.
"use strict";

(function () {
  const csrf = document.body.dataset.csrf || "";
  const liveState = document.getElementById("live-state");

  function setText(element, text) {
    if (element) element.textContent = text;
  }

  // An error on a tile: the sentence, and for staff what the node said, folded away.
  function showTileMessage(tile, text, detail) {
    clearTileMessage(tile);
    const note = document.createElement("div");
    note.className = "flash flash-error";
    note.setAttribute("role", "alert");
    note.textContent = text;
    if (detail) {
      const more = document.createElement("details");
      more.className = "staff-detail";
      const summary = document.createElement("summary");
      summary.textContent = "Details for staff";
      const pre = document.createElement("pre");
      pre.textContent = detail;
      more.append(summary, pre);
      note.appendChild(more);
    }
    tile.appendChild(note);
  }

  function clearTileMessage(tile) {
    const note = tile.querySelector(".flash");
    if (note) note.remove();
  }

  function setBadge(tile, status, label) {
    const badge = tile.querySelector('[data-field="status"]');
    if (!badge) return;
    badge.className = "badge status-" + status;
    badge.textContent = label;
    tile.dataset.status = status;
  }

  const IP_UNKNOWN = "IP unknown: install the QEMU guest agent in the VM (or give it a DHCP lease the node sees)";

  function showIp(tile, address, note) {
    const ip = tile.querySelector('[data-field="ip"]');
    if (!ip) return;
    ip.textContent = "";
    if (address) {
      const code = document.createElement("code");
      code.textContent = address;
      ip.appendChild(code);
    } else if (note) {
      const hint = document.createElement("span");
      hint.className = "hint";
      hint.textContent = note;
      ip.appendChild(hint);
    } else {
      ip.textContent = "—";
    }
  }

  // A running VM with no known address is "Starting…" for a while; when the wait ends
  // without news from the hub, it is running and the tile says why no address is shown.
  function waitForIp(tile, until) {
    clearTimeout(tile.ipWait);
    if (!until) return;
    tile.ipWait = setTimeout(() => {
      if (tile.dataset.status !== "starting") return;
      setBadge(tile, "running", "Running");
      showIp(tile, null, IP_UNKNOWN);
    }, Math.max(0, until * 1000 - Date.now()));
  }

  for (const tile of document.querySelectorAll("[data-ip-wait-until]")) {
    waitForIp(tile, Number(tile.dataset.ipWaitUntil));
  }

  function applyVm(vm) {
    for (const tile of document.querySelectorAll('[data-vm="' + vm.id + '"]')) {
      setBadge(tile, vm.display_status, vm.status_label);
      showIp(tile, vm.ip, vm.ip_note);
      waitForIp(tile, vm.ip_wait_until);
      setText(tile.querySelector('[data-field="node"]'), vm.node);
      const title = tile.querySelector('.tile-name a, [data-field="name"]');
      if (title && title.textContent !== vm.name) title.textContent = vm.name;
      for (const form of tile.querySelectorAll("form[data-action]")) {
        form.hidden = !vm.actions.includes(form.dataset.action);
        for (const button of form.querySelectorAll("button")) button.disabled = false;
      }
      // When the class schedule stops it matters only while it runs.
      for (const line of tile.querySelectorAll("[data-scheduled-stop]")) line.hidden = vm.status !== "running";
      // Why proxlab stopped it (an idle policy), while it stays stopped.
      for (const line of tile.querySelectorAll("[data-stop-reason]")) line.hidden = !vm.stop_reason;
      setText(tile.querySelector('[data-field="stop-reason"]'), vm.stop_reason || "");
      // A VM that was still being made gets its console once it exists.
      const consoleLink = tile.querySelector('a[data-action="console"]');
      if (consoleLink) consoleLink.hidden = vm.template || vm.display_status === "preparing";
    }
    const ips = document.querySelector('[data-field="ips"]');
    if (ips && document.querySelector('.tiles.single [data-vm="' + vm.id + '"]')) {
      ips.textContent = vm.ips.length ? vm.ips.map((a) => a.address + " (" + a.source + ")").join(", ") : "none known yet";
    }
  }

  function removeVm(id) {
    for (const tile of document.querySelectorAll('.tiles:not(.single) [data-vm="' + id + '"]')) tile.remove();
  }

  function applyNode(node) {
    for (const tile of document.querySelectorAll('[data-node="' + CSS.escape(node.name) + '"]')) {
      const badge = tile.querySelector('[data-field="online"]');
      if (badge) {
        badge.className = "badge " + (node.online ? "status-running" : "status-stopped");
        badge.textContent = node.online ? "Online" : "Offline";
      }
      if (node.last_seen_at) setText(tile.querySelector('[data-field="last-seen"]'), node.last_seen_at);
    }
  }

  function applyClass(progress) {
    const section = document.querySelector('[data-class-id="' + progress.class_id + '"]');
    if (!section) return;
    let text = progress.ready + " of " + progress.total + " VMs ready";
    if (progress.failed > 0) text += ", " + progress.failed + " failed";
    setText(section.querySelector('[data-field="progress"]'), text);
    if (progress.job_state) {
      setText(section.querySelector('[data-field="job"]'),
        "— " + progress.job_state + (progress.job_message ? ": " + progress.job_message : ""));
    }
    const stage = section.querySelector('[data-field="stage"]');
    if (stage) {
      stage.textContent = progress.stage || "";
      stage.hidden = !progress.stage;
    }
    const nodes = section.querySelector('[data-field="nodes"]');
    if (nodes) {
      nodes.replaceChildren(...progress.nodes.map((node) => {
        const line = document.createElement("li");
        const name = document.createElement("strong");
        name.textContent = node.node;
        line.append(name, ": " + node.ready + " of " + node.total + " VMs ready"
          + (node.base_ready === false ? ", base on its way" : ""));
        return line;
      }));
    }
    const meter = section.querySelector('[data-field="meter"]');
    if (meter) { meter.max = progress.total; meter.value = progress.ready; }
    let unseen = 0;
    for (const [id, state] of progress.vms) {
      const cell = document.querySelector('[data-deploy="' + id + '"]');
      if (cell && cell.firstChild) cell.firstChild.textContent = state;
      else if (!cell) unseen += 1;
    }
    // Only the class's own page has a row per VM.
    const table = document.querySelector("[data-deploy]") && document.querySelector("[data-deploy]").closest("table");
    if (unseen > 0 && table) showNewRows(table, unseen);
  }

  // A warning for the viewer (their VM stops soon, say): a banner at the top of the page, or
  // over the console (so it shows in full screen too), until the time it announces or until
  // it is withdrawn. An idle warning has an "I'm still here" button.
  function showNotice(notice) {
    let banner = document.querySelector('[data-notice="' + CSS.escape(notice.key) + '"]');
    if (notice.withdrawn) {
      if (banner) banner.remove();
      return;
    }
    if (!banner) {
      banner = document.createElement("div");
      banner.className = "flash flash-error notice";
      banner.setAttribute("role", "alert");
      banner.dataset.notice = notice.key;
      const console = document.querySelector("[data-console]");
      if (console) banner.classList.add("notice-overlay");
      (console || document.querySelector("main") || document.body).prepend(banner);
    }
    window.clearTimeout(Number(banner.dataset.timer || 0));
    const left = notice.at * 1000 - Date.now();
    banner.dataset.timer = String(window.setTimeout(() => banner.remove(), Math.max(0, left)));
    banner.replaceChildren(document.createTextNode(notice.message));
    if (notice.still_here) {
      const stay = document.createElement("button");
      stay.type = "button";
      stay.dataset.stillHere = String(notice.still_here);
      stay.textContent = "I'm still here";
      stay.addEventListener("click", () => stillHere(notice.still_here, banner, stay));
      banner.append(" ", stay);
    }
  }

  async function stillHere(id, banner, button) {
    button.disabled = true;
    try {
      const answer = await fetch("/api/v1/vms/" + id + "/still-here", {
        method: "POST",
        credentials: "same-origin",
        headers: { "X-CSRF-Token": csrf, "Accept": "application/json" },
      });
      if (!answer.ok) {
        const body = await answer.json().catch(() => ({}));
        throw new Error((body.error && body.error.message) || answer.statusText);
      }
      banner.remove();
    } catch (err) {
      button.disabled = false;
      banner.append(" (" + (err.message || "the portal could not reach the VM's node") + ")");
    }
  }

  // VMs the class gained after the page was drawn (capacity added, here or elsewhere) get
  // their rows by drawing the page again, unless someone is typing on it: then a notice
  // offers to.
  function showNewRows(table, count) {
    const typing = document.activeElement && document.activeElement.matches("input:not([type=checkbox]), textarea, select");
    if (!typing) {
      window.location.reload();
      return;
    }
    let notice = document.querySelector("[data-new-rows]");
    if (!notice) {
      notice = document.createElement("p");
      notice.dataset.newRows = "";
      notice.className = "flash flash-ok";
      const link = document.createElement("a");
      link.href = window.location.pathname + "#vms";
      link.addEventListener("click", (event) => { event.preventDefault(); window.location.reload(); });
      notice.append(link);
      table.before(notice);
    }
    notice.firstChild.textContent = (count === 1 ? "1 new VM" : count + " new VMs") + " in this class: show them";
  }

  // Live updates: one stream per browser, shared by its tabs. The tab holding the lock
  // "proxlab-live:<user>" opens the stream and passes every event to the others over a
  // BroadcastChannel; when it goes away the next tab takes over. A page in the back/forward
  // cache holds no stream and no lock, so parked pages never take the browser's six HTTP/1.1
  // connections per host. Where locks or channels are missing, each page has its own stream.
  const EVENT_TYPES = {
    "vm": (data) => applyVm(data),
    "vm-removed": (data) => removeVm(data.id),
    "node": (data) => applyNode(data),
    "class": (data) => applyClass(data),
    "resync": () => window.location.reload(),
    "notice": (data) => showNotice(data),
    // A VM given to this user (off a waitlist, say): a list of VMs without it is redrawn.
    "assigned": (data) => {
      if (document.querySelector("[data-vm-list]") && !document.querySelector('[data-vm="' + data.id + '"]')) {
        window.location.reload();
      }
    },
  };

  // `holder` names the tab whose stream feeds this one (a new one on every takeover).
  let wasConnected = false;
  function showLiveState(connected, holder) {
    if (holder) document.body.dataset.liveHolder = holder;
    document.body.dataset.liveReady = connected ? "yes" : "no";
    liveState.hidden = connected;
    if (!connected) liveState.textContent = "Live updates paused; reconnecting…";
    if (connected && !wasConnected) catchUp();
    wasConnected = connected;
  }

  function deliver(type, text) {
    const apply = EVENT_TYPES[type];
    if (apply) apply(text ? JSON.parse(text) : {});
  }

  // What an event is about: a later event about the same thing replaces it.
  function keyOf(type, data) {
    if (type === "vm" || type === "vm-removed" || type === "assigned") return "vm:" + data.id;
    if (type === "class") return "class:" + data.class_id;
    if (type === "notice") return "notice:" + data.key;
    if (type === "node") return "node:" + data.name;
    return type;
  }

  // Events from the stream are counted, so a catch-up never overwrites newer news.
  let streamed = 0;
  const lastStreamed = new Map();
  function deliverStreamed(type, text) {
    streamed += 1;
    try { lastStreamed.set(keyOf(type, text ? JSON.parse(text) : {}), streamed); } catch (err) { /* shown as is */ }
    deliver(type, text);
  }

  // The page was drawn before its stream connected, and a stream may drop and come back:
  // what changed meanwhile reached no stream. Once connected, ask for the current state of
  // everything shown; the stream keeps it current from then on.
  async function catchUp() {
    const ids = (selector, attribute) => [...new Set([...document.querySelectorAll(selector)]
      .map((element) => element.getAttribute(attribute)).filter(Boolean))];
    const shown = {
      vms: ids("[data-vm]", "data-vm"),
      classes: ids("[data-class-id]", "data-class-id"),
      nodes: ids("[data-node]", "data-node"),
    };
    const list = document.querySelector("[data-vm-list]");
    if (!list && !shown.vms.length && !shown.classes.length && !shown.nodes.length) return;
    const asked = streamed;
    const query = new URLSearchParams({ vms: shown.vms.join(","), classes: shown.classes.join(","), nodes: shown.nodes.join(",") });
    let body;
    try {
      const response = await fetch("/api/v1/events/catch-up?" + query, { credentials: "same-origin", headers: { "Accept": "application/json" } });
      if (!response.ok) return;
      body = await response.json();
    } catch (err) {
      return;
    }
    for (const missed of body.events) {
      if ((lastStreamed.get(keyOf(missed.type, missed.data)) || 0) > asked) continue;
      deliver(missed.type, JSON.stringify(missed.data));
    }
    // A VM list drawn before the viewer was given a VM is drawn again.
    if (list) {
      const held = new Set((list.dataset.held || "").split(",").filter(Boolean));
      if (body.assigned.some((id) => !held.has(id))) window.location.reload();
    }
  }

  const shared = window.BroadcastChannel && navigator.locks;
  const channel = shared ? new BroadcastChannel("proxlab-live:" + (document.body.dataset.liveUser || "")) : null;
  let source = null;
  let connected = false;
  let leaving = null; // ends this tab's turn as the stream's holder
  let waiting = null; // withdraws this tab from the queue for the lock

  const tabId = Math.random().toString(36).slice(2);

  function announce(state) {
    connected = state;
    showLiveState(state, tabId);
    if (channel) channel.postMessage({ state, holder: tabId });
  }

  // A browser retries a dropped stream itself, but gives up for good when the hub (or a proxy
  // in front of it) answers with an error or the network refuses: then open a new one, later.
  let retryDelay = 1000;
  let retryTimer = null;

  function openStream() {
    document.body.dataset.liveRole = "stream";
    source = new EventSource("/api/v1/events");
    source.addEventListener("open", () => {
      retryDelay = 1000;
      announce(true);
    });
    source.addEventListener("error", () => {
      announce(false);
      if (source && source.readyState === EventSource.CLOSED) {
        source.close();
        source = null;
        retryTimer = setTimeout(() => {
          retryTimer = null;
          if (!source && (leaving || !shared)) openStream();
        }, retryDelay);
        retryDelay = Math.min(retryDelay * 2, 30000);
      }
    });
    for (const type of Object.keys(EVENT_TYPES)) {
      source.addEventListener(type, (event) => {
        if (channel) channel.postMessage({ type, data: event.data });
        deliverStreamed(type, event.data);
      });
    }
  }

  function closeStream() {
    if (source) {
      source.close();
      source = null;
    }
  }

  function connect() {
    if (!shared) {
      if (!source) openStream();
      return;
    }
    document.body.dataset.liveRole = "shared";
    channel.onmessage = (message) => {
      const note = message.data;
      if (note.hello) {
        if (source) channel.postMessage({ state: connected, holder: tabId });
      } else if ("state" in note) {
        if (!source) showLiveState(note.state, note.holder);
      } else if (!source) {
        deliverStreamed(note.type, note.data);
      }
    };
    channel.postMessage({ hello: true });
    waiting = new AbortController();
    navigator.locks.request(channel.name, { signal: waiting.signal }, () => {
      openStream();
      return new Promise((resolve) => { leaving = resolve; });
    }).catch(() => {});
  }

  function disconnect() {
    if (source) announce(false);
    clearTimeout(retryTimer);
    retryTimer = null;
    closeStream();
    if (leaving) leaving();
    if (waiting) waiting.abort();
    leaving = waiting = null;
  }

  async function submitAction(form) {
    const tile = form.closest("[data-vm]");
    const id = tile.dataset.vm;
    const action = form.dataset.action;
    for (const button of tile.querySelectorAll("form[data-action] button")) button.disabled = true;
    clearTileMessage(tile);
    setBadge(tile, "working", "Working…");
    try {
      const response = await fetch("/api/v1/vms/" + id + "/" + action, {
        method: "POST",
        headers: { "X-CSRF-Token": csrf, "Accept": "application/json" },
        credentials: "same-origin",
      });
      const body = await response.json().catch(() => ({}));
      if (response.ok) {
        applyVm(body);
      } else {
        const error = body.error || {};
        showTileMessage(tile, error.message || "The request failed (" + response.status + ").", error.detail);
        const current = await fetch("/api/v1/vms/" + id, { credentials: "same-origin" });
        if (current.ok) applyVm(await current.json());
      }
    } catch (err) {
      showTileMessage(tile, "The hub could not be reached. Try again.");
      for (const button of tile.querySelectorAll("form[data-action] button")) button.disabled = false;
    }
  }

  // Plugin upload (admin): the two files go to the JSON API, the component base64-encoded.
  async function uploadPlugin(form) {
    const status = document.getElementById("plugin-upload-status");
    const manifest = form.querySelector("#plugin-manifest").files[0];
    const wasm = form.querySelector("#plugin-wasm").files[0];
    if (!manifest || !wasm) return;
    if (wasm.size > Number(form.dataset.maxBytes)) {
      status.textContent = "The component is larger than " + form.dataset.maxBytes + " bytes.";
      return;
    }
    status.textContent = "Uploading…";
    const bytes = new Uint8Array(await wasm.arrayBuffer());
    let binary = "";
    for (let i = 0; i < bytes.length; i += 0x8000) {
      binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    }
    const response = await fetch("/api/v1/plugins", {
      method: "POST",
      headers: { "X-CSRF-Token": csrf, "Content-Type": "application/json", "Accept": "application/json" },
      credentials: "same-origin",
      body: JSON.stringify({ manifest: await manifest.text(), wasm: btoa(binary) }),
    });
    const body = await response.json().catch(() => ({}));
    if (response.ok) {
      window.location.reload();
    } else {
      status.textContent = (body.error && body.error.message) || "The upload failed (" + response.status + ").";
    }
  }

  // Times as the reader's clock shows them; the absolute time (UTC) stays in the title.
  for (const time of document.querySelectorAll("time[datetime]")) {
    const when = time.dataset.localTime
      ? new Date(Number(time.dataset.localTime) * 1000)
      : new Date(time.getAttribute("datetime"));
    if (Number.isNaN(when.getTime())) continue;
    time.title = time.getAttribute("datetime");
    time.textContent = when.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
  }

  // Copy buttons: the named field's text to the clipboard (selecting it where the clipboard
  // is not offered, on plain-HTTP sites).
  document.addEventListener("click", async (event) => {
    const button = event.target.closest("[data-copy-from]");
    if (!button) return;
    const field = document.getElementById(button.dataset.copyFrom);
    if (!field) return;
    field.select();
    let copied = false;
    if (navigator.clipboard && window.isSecureContext) {
      copied = await navigator.clipboard.writeText(field.value).then(() => true, () => false);
    }
    if (!copied) copied = document.execCommand && document.execCommand("copy");
    button.textContent = copied ? "Copied" : "Press Ctrl+C to copy";
  });

  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (form.id === "plugin-upload") {
      event.preventDefault();
      uploadPlugin(form);
      return;
    }
    let confirmText = (event.submitter && event.submitter.dataset.confirm) || form.dataset.confirm;
    if (form.id === "bulk") {
      // A bulk action names how many VMs it touches; with none chosen it asks for a choice.
      const all = form.querySelector("[data-select-all]").checked;
      const chosen = all
        ? document.querySelectorAll('input[name="vmid"][form="bulk"]').length
        : document.querySelectorAll('input[name="vmid"][form="bulk"]:checked').length;
      if (chosen === 0) {
        event.preventDefault();
        window.alert("Select VMs in the table first, or tick All VMs.");
        return;
      }
      if (confirmText) confirmText = confirmText.replace("{count}", chosen === 1 ? "1 VM" : chosen + " VMs");
    }
    if (confirmText && !window.confirm(confirmText)) {
      event.preventDefault();
      return;
    }
    if (form.dataset.action && form.closest("[data-vm]") && window.fetch) {
      event.preventDefault();
      submitAction(form);
    }
  });

  if (document.body.dataset.liveUser && window.EventSource) {
    connect();
    window.addEventListener("pagehide", disconnect);
    // Back from the cache: what changed meanwhile was not streamed, so the page is redrawn.
    window.addEventListener("pageshow", (event) => {
      if (event.persisted) window.location.reload();
    });
  }
})();
