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

  function showTileMessage(tile, text) {
    let note = tile.querySelector(".flash");
    if (!note) {
      note = document.createElement("p");
      note.className = "flash flash-error";
      note.setAttribute("role", "alert");
      tile.appendChild(note);
    }
    note.textContent = text;
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
    for (const tile of document.querySelectorAll('[data-vmid="' + vm.vmid + '"]')) {
      setBadge(tile, vm.display_status, vm.status_label);
      showIp(tile, vm.ip, vm.ip_note);
      waitForIp(tile, vm.ip_wait_until);
      setText(tile.querySelector('[data-field="node"]'), vm.node);
      const title = tile.querySelector('h3 a, [data-field="name"]');
      if (title && title.textContent !== vm.name) title.textContent = vm.name;
      for (const form of tile.querySelectorAll("form[data-action]")) {
        form.hidden = !vm.actions.includes(form.dataset.action);
        for (const button of form.querySelectorAll("button")) button.disabled = false;
      }
    }
    const ips = document.querySelector('[data-field="ips"]');
    if (ips && document.querySelector('.tiles.single [data-vmid="' + vm.vmid + '"]')) {
      ips.textContent = vm.ips.length ? vm.ips.map((a) => a.address + " (" + a.source + ")").join(", ") : "none known yet";
    }
  }

  function removeVm(vmid) {
    for (const tile of document.querySelectorAll('.tiles:not(.single) [data-vmid="' + vmid + '"]')) tile.remove();
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
    const meter = section.querySelector('[data-field="meter"]');
    if (meter) { meter.max = progress.total; meter.value = progress.ready; }
    for (const [vmid, state] of progress.vms) {
      const cell = document.querySelector('[data-deploy="' + vmid + '"]');
      if (cell && cell.firstChild) cell.firstChild.textContent = state;
    }
  }

  // One stream while the page is shown. A page in the back/forward cache keeps nothing open:
  // browsers allow six connections per host over HTTP/1.1, and parked pages holding streams
  // would make the seventh page wait.
  let source = null;

  function disconnect() {
    if (source) {
      source.close();
      source = null;
    }
  }

  function connect() {
    if (source) return;
    source = new EventSource("/api/v1/events");
    source.addEventListener("open", () => { liveState.hidden = true; document.body.dataset.liveReady = "yes"; });
    source.addEventListener("error", () => {
      liveState.textContent = "Live updates paused; reconnecting…";
      liveState.hidden = false;
    });
    source.addEventListener("vm", (event) => applyVm(JSON.parse(event.data)));
    source.addEventListener("vm-removed", (event) => removeVm(JSON.parse(event.data).vmid));
    source.addEventListener("node", (event) => applyNode(JSON.parse(event.data)));
    source.addEventListener("class", (event) => applyClass(JSON.parse(event.data)));
    source.addEventListener("resync", () => window.location.reload());
    // A VM given to this user (off a waitlist, say): a list of VMs without it is redrawn.
    source.addEventListener("assigned", (event) => {
      const vmid = JSON.parse(event.data).vmid;
      if (document.querySelector(".tiles") && !document.querySelector('[data-vmid="' + vmid + '"]')) {
        window.location.reload();
      }
    });
  }

  async function submitAction(form) {
    const tile = form.closest("[data-vmid]");
    const vmid = tile.dataset.vmid;
    const action = form.dataset.action;
    for (const button of tile.querySelectorAll("form[data-action] button")) button.disabled = true;
    clearTileMessage(tile);
    setBadge(tile, "working", "Working…");
    try {
      const response = await fetch("/api/v1/vms/" + vmid + "/" + action, {
        method: "POST",
        headers: { "X-CSRF-Token": csrf, "Accept": "application/json" },
        credentials: "same-origin",
      });
      const body = await response.json().catch(() => ({}));
      if (response.ok) {
        applyVm(body);
      } else {
        showTileMessage(tile, (body.error && body.error.message) || "The request failed (" + response.status + ").");
        const current = await fetch("/api/v1/vms/" + vmid, { credentials: "same-origin" });
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
    if (form.dataset.action && form.closest("[data-vmid]") && window.fetch) {
      event.preventDefault();
      submitAction(form);
    }
  });

  if (document.body.dataset.live === "on" && window.EventSource) {
    connect();
    window.addEventListener("pagehide", disconnect);
    // Back from the cache: what changed meanwhile was not streamed, so the page is redrawn.
    window.addEventListener("pageshow", (event) => {
      if (event.persisted) window.location.reload();
    });
  }
})();
