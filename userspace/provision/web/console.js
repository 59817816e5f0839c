// AtomixOS bootstrap web console. Talks only to this device's API (same origin): health,
// validate, nonce, config, update, the job list, factory reset and the jobs it started.
// No external resources; every state is shown in words, not only in colour.
"use strict";

const $ = (id) => document.getElementById(id);
// The API's contract (atomix-api's `Contract`), put into the page by the device: routes,
// header names, the signing namespace, body types and limits are read from here, never
// repeated in this file.
const C = JSON.parse($("contract").textContent);
const STATUS_EVERY_MS = 3000;
const JOB_EVERY_MS = 400;
// After a successful apply the device moves its listener to the LAN address; the
// page stops polling here after this long without an answer.
const LOST_AFTER_MS = 8000;

const state = {
  bytes: null, // Uint8Array of the chosen file
  name: "",
  contentType: "",
  text: null, // config.toml text, when it could be read in the browser
  nonce: null,
  sha: null,
  nonceExpires: 0,
  following: null,
  bundle: null, // the chosen update bundle (a File: read once to hash it, then sent from the file)
};

// ---------- small DOM helpers ----------

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

/// A message box: `kind` is "good", "bad" or "warn"; the title starts with a word so it
/// reads the same without colour.
function message(kind, title, ...body) {
  const mark = { good: "✓ ", bad: "✗ ", warn: "! " }[kind] || "";
  return el("div", { class: `msg ${kind}` }, el("strong", {}, mark + title), ...body.map((b) => el("p", {}, b)));
}

function show(target, ...nodes) {
  target.replaceChildren(...nodes.filter((n) => n !== null && n !== undefined));
}

// ---------- reading the file ----------

function kindOf(bytes) {
  if (bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b) return C.media_types.gzip;
  if (bytes.length >= 263) {
    const magic = String.fromCharCode(...bytes.subarray(257, 262));
    if (magic === "ustar") return C.media_types.tar;
  }
  return C.media_types.config;
}

async function gunzip(bytes) {
  if (typeof DecompressionStream === "undefined") return null;
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/// config.toml from a tar, or null.
function tarConfig(tar) {
  const dec = new TextDecoder();
  const field = (off, len) => {
    const raw = tar.subarray(off, off + len);
    const end = raw.indexOf(0);
    return dec.decode(end < 0 ? raw : raw.subarray(0, end));
  };
  for (let off = 0; off + 512 <= tar.length; ) {
    const name = field(off, 100);
    if (!name) return null;
    const prefix = field(off + 257, 6).startsWith("ustar") ? field(off + 345, 155) : "";
    const size = parseInt(field(off + 124, 12).trim() || "0", 8);
    const full = (prefix ? prefix + "/" : "") + name;
    if (full === "config.toml" || full === "./config.toml") {
      return dec.decode(tar.subarray(off + 512, off + 512 + size));
    }
    off += 512 + Math.ceil(size / 512) * 512;
  }
  return null;
}

async function readConfigText(bytes, type) {
  try {
    if (type === C.media_types.config) return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
    const tar = type === C.media_types.gzip ? await gunzip(bytes) : bytes;
    return tar ? tarConfig(tar) : null;
  } catch (_) {
    return null;
  }
}

/// `http://ADDRESS:PORT/` from `[network.lan] address = "A.B.C.D/N"`, or null.
function lanConsole(text) {
  if (!text) return null;
  let inLan = false;
  for (const raw of text.split("\n")) {
    const line = raw.replace(/#.*$/, "").trim();
    const table = line.match(/^\[\s*([^\]]+?)\s*\]$/);
    if (table) {
      inLan = table[1].replace(/\s|"/g, "") === "network.lan";
      continue;
    }
    const m = line.match(/^address\s*=\s*"(\d+\.\d+\.\d+\.\d+)\/\d+"/);
    if (inLan && m) return `http://${m[1]}:${C.port}/`;
    const inline = line.match(/^lan\s*=\s*\{.*address\s*=\s*"(\d+\.\d+\.\d+\.\d+)\/\d+"/);
    if (inline) return `http://${inline[1]}:${C.port}/`;
  }
  return null;
}

// ---------- SHA-256: WebCrypto where allowed, else the JS fallback ----------

async function sha256Hex(bytes) {
  if (window.isSecureContext && window.crypto && crypto.subtle) {
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
    return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
  }
  return window.atomixSha256Hex(bytes);
}

// ---------- API ----------

async function api(method, path, { body, headers } = {}) {
  let response;
  try {
    response = await fetch(path, { method, body, headers, cache: "no-store" });
  } catch (e) {
    return { status: 0, json: {}, network: String(e && e.message ? e.message : e) };
  }
  let json = {};
  try {
    json = await response.json();
  } catch (_) {
    json = {};
  }
  return { status: response.status, json, headers: response.headers };
}

/// A limit as people write it: "256 KiB", "16 MiB" (as atomix-api's `limits::describe`).
function describeSize(bytes) {
  for (const [size, unit] of [[2 ** 30, "GiB"], [2 ** 20, "MiB"], [2 ** 10, "KiB"]]) {
    if (bytes >= size && bytes % size === 0) return `${bytes / size} ${unit}`;
  }
  return `${bytes} bytes`;
}

/// "2 minutes", or seconds when it is not a whole number of minutes.
function describeSeconds(secs) {
  if (secs % 60 !== 0) return `${secs} seconds`;
  return secs === 60 ? "1 minute" : `${secs / 60} minutes`;
}

const NO_ANSWER = "The device did not answer. Check the cable and the address in the address bar, make sure the device has finished booting, then try again.";

/// What to do about a refusal, as a sentence, by status.
function refusalSentence(status, json, what) {
  const detail = json && json.error ? ` (The device said: ${json.error}.)` : "";
  switch (status) {
    case 0:
      return NO_ANSWER;
    case 400:
      if (what === "update") return "The bundle that arrived is not the one that was signed (its SHA-256 differs, or it is empty), so nothing was kept. Choose the bundle again, prepare signing and upload." + detail;
      if (what === "log" || what === "reset") return "The device refused the request as sent." + detail + " Prepare signing again.";
      return "The file that arrived is not the one that was signed (its SHA-256 differs), so nothing was stored. Choose the file again, prepare signing and apply." + detail;
    case 408:
      return "The upload stalled and the device stopped waiting for it. Check the connection and apply again." + detail;
    case 503:
      return "The device is busy with other requests. Wait a few seconds and try again." + detail;
    case 401:
      return `The device refused the signature. Sign with a key the device trusts (a provisioning key of its image or, once provisioned, an admin key of its current config), sign the message shown for this exact file, and submit within ${describeSeconds(C.limits.nonce_ttl_secs)} of preparing: press “Prepare signing” for a new nonce and sign again.` + detail;
    case 409:
      if (what === "update" || what === "reset") return "The device is busy with another job or another upload; the job is followed below when there is one. Wait until it has finished, then press “Prepare signing” again." + detail;
      return "The device is already applying a config; that job is followed below. Wait until it has finished, then press “Prepare signing” and apply again.";
    case 413:
      if (what === "update") return `The bundle is too large for the device: it takes at most ${describeSize(C.limits.update_bundle_bytes)}.` + detail;
      if (what === "log" || what === "reset") return "The device refused the request's size." + detail;
      return `The file is too large for the device: a config.toml may be at most ${describeSize(C.limits.config_text_bytes)} and a bundle at most ${describeSize(C.limits.config_bundle_bytes)} unpacked. Leave large files out of the bundle and choose it again.` + detail;
    case 415:
      if (what !== "apply" && what !== "validate") return "The device did not take the request's type." + detail;
      return "The device does not accept this kind of file. Choose a config.toml (text) or a bundle (.tar or .tar.gz)." + detail;
    case 507:
      return "The device's data partition is too full to store the bundle. Nothing was installed." + detail;
    case 422:
      if (what === "reset") return `The device did not take this as a confirmed factory reset, so nothing was changed. Type ${C.factory_reset_confirm} and prepare signing again.` + detail;
      return what === "apply"
        ? "The config is not valid, so nothing was changed. Fix the errors listed under Validate, then choose the file again, prepare signing and apply."
        : "The config is not valid. Fix every error below and choose the file again.";
    default:
      return `The device answered HTTP ${status}.${detail} Try again; if it persists, look at the device's journal.`;
  }
}

// ---------- status ----------

function text(v) {
  return v === null || v === undefined || v === "" ? "–" : String(v);
}

function problemLine(p) {
  const where = p.line ? `config.toml:${p.line}:${p.column}: ` : "";
  return `${where}${p.path ? p.path + ": " : ""}${p.message}`;
}

async function refreshStatus() {
  const r = await api("GET", C.routes.health);
  if (r.status !== 200) {
    $("status-note").textContent = r.status === 0 ? "✗ The device is not answering; retrying…" : `✗ The device answered HTTP ${r.status}; retrying…`;
    return null;
  }
  const h = r.json;
  $("status-note").textContent = `Updated ${new Date().toLocaleTimeString()}.`;
  $("st-provisioned").textContent = h.provisioned ? `Yes — generation ${h.generation}` : "No — waiting for a config";
  $("st-build").textContent = text(h.build_id);
  $("st-slot").textContent = text(h.slot);
  $("st-listening").textContent = (h.listening || []).length ? h.listening.join(", ") : "–";
  const job = $("st-job");
  if (h.job) {
    job.replaceChildren(el("a", { href: h.job }, h.job.split("/").pop()), " (running)");
  } else job.textContent = "none";
  await showLastUpdate(h.last_update);
  const e = h.last_import_error;
  const ie = $("st-import-error");
  if (e) {
    ie.replaceChildren(
      el("span", {}, `✗ ${text(e.location)} (${text(e.origin)}, ${text(e.time)}) was refused:`),
      el("ul", {}, ...(e.errors || []).map((p) => el("li", {}, problemLine(p)))),
      e.job ? el("span", {}, `Apply job: ${e.job}`) : null,
    );
  } else ie.textContent = "none";
  return h;
}

const STATE_MARK = { succeeded: "✓", failed: "✗", running: "▶", queued: "…" };

/// The most recent update job, as health names it: its state, and its error if it failed.
async function showLastUpdate(url) {
  const out = $("st-update");
  if (!url) {
    out.textContent = "none";
    return;
  }
  const r = await api("GET", url);
  if (r.status !== 200) {
    out.replaceChildren(el("a", { href: url }, url.split("/").pop()));
    return;
  }
  const j = r.json;
  const result = j.result || {};
  show(
    out,
    `${STATE_MARK[j.state] || ""} ${j.state} — job `,
    el("a", { href: url }, j.id),
    `, ${text(j.created)}`,
    j.state === "failed" ? el("div", {}, `Failed at “${text(result.failed_step)}”: ${text(result.error)}. The slot the device runs from is unchanged.`) : null,
    j.state === "succeeded" ? el("div", {}, "Installed into the other slot, which boots next (the slot above is the one running now).") : null,
  );
}

// ---------- choosing ----------

async function choose(file) {
  const bytes = new Uint8Array(await file.arrayBuffer());
  state.bytes = bytes;
  state.name = file.name;
  state.contentType = kindOf(bytes);
  state.text = await readConfigText(bytes, state.contentType);
  resetSigning();
  const what = state.contentType === C.media_types.config ? "config.toml" : "bundle";
  $("file-info").textContent = `Chosen: ${file.name} (${what}, ${bytes.length} bytes).`;
  $("validate").disabled = false;
  $("prepare").disabled = false;
  show($("apply-result"));
  await validate();
}

function resetSigning() {
  state.nonce = null;
  state.sha = null;
  $("signing").hidden = true;
  $("signature").value = "";
}

// ---------- validating ----------

/// The offending text: the line before, the line itself marked, a caret under the column.
function sourceContext(lines, line, column) {
  if (!lines || !line || line > lines.length) return null;
  const width = String(Math.min(lines.length, line + 1)).length;
  const gutter = (n, mark) => `${mark} ${String(n).padStart(width)} | `;
  const rows = [];
  if (line > 1) rows.push(el("div", {}, gutter(line - 1, " ") + lines[line - 2]));
  rows.push(el("div", { class: "hit" }, gutter(line, "▶") + lines[line - 1]));
  const pad = " ".repeat(gutter(line, " ").length) + Array.from(lines[line - 1]).slice(0, Math.max(0, column - 1)).map((c) => (c === "\t" ? "\t" : " ")).join("");
  rows.push(el("div", { class: "caret" }, pad + "^ here"));
  return el("div", { class: "source", role: "presentation" }, ...rows);
}

function renderProblems(problems, kind) {
  const lines = state.text === null ? null : state.text.split("\n");
  return el(
    "ol",
    { class: "problems" },
    ...problems.map((p) =>
      el(
        "li",
        { class: `problem ${kind}`, "data-line": p.line || "", "data-column": p.column || "", "data-path": p.path || "" },
        el("span", { class: "where" }, p.line ? `${kind === "warning" ? "Warning" : "Error"} at line ${p.line}, column ${p.column}` : kind === "warning" ? "Warning" : "Error", p.path ? ` — ${p.path}` : ""),
        el("div", { class: "what" }, p.message),
        sourceContext(lines, p.line, p.column),
      ),
    ),
  );
}

async function validate() {
  if (!state.bytes) return;
  const out = $("validation");
  show(out, el("p", {}, "Validating…"));
  const r = await api("POST", C.routes.validate, { body: state.bytes, headers: { "Content-Type": state.contentType } });
  if (r.status === 200) {
    const warnings = r.json.warnings || [];
    show(out, message("good", `Valid: ${state.name} can be applied.`), warnings.length ? renderProblems(warnings, "warning") : "");
  } else if (r.status === 422) {
    const errors = r.json.errors || [];
    show(
      out,
      message("bad", `Not valid: ${errors.length} error${errors.length === 1 ? "" : "s"}.`, refusalSentence(422, r.json, "validate")),
      renderProblems(errors, "error"),
    );
  } else {
    show(out, message("bad", "Not validated.", refusalSentence(r.status, r.json, "validate")));
  }
}

// ---------- signing ----------

function shellQuote(s) {
  if (/^[A-Za-z0-9_.\/~+:@%=-]+$/.test(s)) return s;
  return "'" + s.replace(/'/g, "'\\''") + "'";
}

/// The message the device checks the signature against (atomix-api's `signed_message`).
function signedMessage() {
  return `${C.namespace}\n${state.nonce}\n${state.sha}\n`;
}

function updateCommand() {
  if (!state.nonce) return;
  const key = $("key-path").value.trim() || "KEY";
  $("command").textContent =
    `printf '${C.namespace}\\n%s\\n%s\\n' ${state.nonce} ${state.sha} | ssh-keygen -Y sign -n ${C.namespace} -f ${shellQuote(key)}`;
}

async function prepare() {
  if (!state.bytes) return;
  show($("apply-result"));
  const r = await api("GET", C.routes.nonce);
  if (r.status !== 200) {
    show($("apply-result"), message("bad", "Could not get a nonce.", refusalSentence(r.status, r.json, "nonce")));
    return;
  }
  state.nonce = r.json.nonce;
  state.sha = await sha256Hex(state.bytes);
  state.nonceExpires = Date.now() + (r.json.expires_in || C.limits.nonce_ttl_secs) * 1000;
  tickExpiry();
  $("message").textContent = signedMessage();
  const link = $("message-download");
  if (link.href.startsWith("blob:")) URL.revokeObjectURL(link.href);
  link.href = URL.createObjectURL(new Blob([signedMessage()], { type: "text/plain" }));
  updateCommand();
  $("signing").hidden = false;
  $("signature").value = "";
  $("signature").focus();
}

function tickExpiry() {
  if (!state.nonce) return;
  const left = Math.round((state.nonceExpires - Date.now()) / 1000);
  $("nonce-expiry").textContent = left > 0 ? `valid for ${left} s more` : "EXPIRED: press “Prepare signing” again";
}

async function copyCommand() {
  await copyText($("command").textContent, $("copy"));
}

/// Copies `command` to the clipboard; `button` says whether it worked.
async function copyText(command, button) {
  let ok = false;
  try {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(command);
      ok = true;
    }
  } catch (_) {
    ok = false;
  }
  if (!ok) {
    // Plain HTTP on the LAN: no Clipboard API; the selection fallback still works.
    const area = el("textarea", {});
    area.value = command;
    document.body.append(area);
    area.select();
    try {
      ok = document.execCommand("copy");
    } catch (_) {
      ok = false;
    }
    area.remove();
  }
  button.textContent = ok ? "Copied ✓" : "Select and copy by hand";
  setTimeout(() => (button.textContent = "Copy command"), 2500);
}

/// The header value: base64 of the armored text, whether the armored text or its base64
/// was pasted.
function signatureHeader(pasted) {
  const s = pasted.trim();
  if (s.startsWith("-----BEGIN SSH SIGNATURE-----")) {
    const armored = s.replace(/\r\n/g, "\n") + "\n";
    return btoa(armored);
  }
  return s.replace(/\s+/g, "");
}

// ---------- applying ----------

async function submit() {
  const pasted = $("signature").value;
  if (!state.nonce || !pasted.trim()) {
    show($("apply-result"), message("bad", "No signature yet.", "Run the command above and paste its whole output into the box."));
    return;
  }
  $("submit").disabled = true;
  const nonce = state.nonce;
  const r = await api("POST", C.routes.config, {
    body: state.bytes,
    headers: {
      "Content-Type": state.contentType,
      [C.headers.nonce]: nonce,
      // The device checks the signature against this before it reads the body.
      [C.headers.content_sha256]: state.sha,
      [C.headers.signature]: signatureHeader(pasted),
    },
  });
  $("submit").disabled = false;
  // An accepted request uses the nonce up; after a refusal the file usually changes.
  resetSigning();
  if (r.status === 202) {
    show($("apply-result"), message("good", "Accepted: the device is applying the config.", "Follow its steps below."));
    follow(r.json.job, lanConsole(state.text));
    return;
  }
  show($("apply-result"), message("bad", `Not applied (HTTP ${r.status || "no answer"}).`, refusalSentence(r.status, r.json, "apply")));
  if (r.status === 422) {
    show($("validation"), message("bad", "Not valid.", refusalSentence(422, r.json, "validate")), renderProblems(r.json.errors || [], "error"));
  }
  if (r.status === 409 && r.json.job) follow(r.json.job, null);
}

function rollbackSentence(rb) {
  if (!rb) return "";
  const restored = rb.generation === null || rb.generation === undefined
    ? "the device is back to unprovisioned (the image's defaults)"
    : `generation ${rb.generation} is current again`;
  switch (rb.state) {
    case "completed":
      return `Rollback completed: ${restored}.`;
    case "failed":
      return "Rollback FAILED: the device may be half-configured. Reboot it (the current generation is re-applied at boot) and look at its journal.";
    case "none":
      return "Nothing had been changed, so nothing was rolled back.";
    default:
      return `Rollback: ${rb.state}.`;
  }
}

const KIND_TITLE = { config: "Apply", update: "Update", "factory-reset": "Factory reset" };

/// Follows a job in the job section, which moves under the section that started it
/// (`from`), so the operator sees its steps where they pressed the button.
async function follow(url, lan, kind = "config", from = "apply-section") {
  state.following = url;
  $(from).after($("job-section"));
  $("job-section").hidden = false;
  $("job-kind").textContent = KIND_TITLE[kind] || "";
  $("job-id").textContent = url.split("/").pop();
  $("events").replaceChildren();
  show($("job-outcome"));
  let seen = 0;
  let lostSince = null;
  let lastRunning = null;
  for (;;) {
    if (state.following !== url) return;
    const r = await api("GET", url);
    if (r.status === 200) {
      lostSince = null;
      const job = r.json;
      lastRunning = job;
      const events = job.events || [];
      for (const e of events.slice(seen)) {
        const level = e.level && e.level !== "info" ? el("span", { class: `level-${e.level}` }, `[${e.level}] `) : null;
        const clock = (e.time || "").slice(11, 19);
        $("events").append(el("li", { "data-step": e.step, "data-level": e.level }, `${clock} `, el("span", { class: "step" }, e.step), ": ", level, e.message));
      }
      seen = Math.max(seen, events.length);
      $("job-state").textContent = `State: ${job.state}.`;
      $("job-kind").textContent = KIND_TITLE[job.kind || "config"] || "";
      if (job.state === "succeeded" || job.state === "failed") {
        finish(job, lan);
        return;
      }
    } else if (r.status === 0) {
      lostSince = lostSince || Date.now();
      if (Date.now() - lostSince > LOST_AFTER_MS) {
        const where = lan ? ` After a successful apply it listens only on its LAN address: connect to the LAN port and open ${lan}` : "";
        show($("job-outcome"), message("warn", "The device stopped answering here.", `The job was ${lastRunning ? lastRunning.state : "started"} when it was last seen.${where}`));
        return;
      }
    } else {
      show($("job-outcome"), message("bad", "Could not follow the job.", refusalSentence(r.status, r.json, "job")));
      return;
    }
    await new Promise((res) => setTimeout(res, JOB_EVERY_MS));
  }
}

/// What a finished job came to, in sentences (as atomixctl's `show::outcome`).
function outcomeOf(job) {
  const result = job.result || {};
  const kind = job.kind || "config";
  if (kind === "update") {
    if (job.state === "succeeded") {
      const rebooting = (job.events || []).some((e) => e.step === "reboot");
      return ["good", "Succeeded: the bundle is installed in the other slot, which boots next.", rebooting ? "The device is rebooting into it." : "Reboot the device to run it."];
    }
    return ["bad", `Failed at step “${result.failed_step}”.`, result.error || "", "The slot the device runs from is unchanged."];
  }
  if (kind === "factory-reset") {
    if (job.state === "succeeded") {
      return ["good", "Succeeded: the device is unprovisioned and reboots.", "Its data partition is erased early in the next boot. Then provision it again: a USB stick with a config, or this console on any of its addresses."];
    }
    return ["bad", `Failed at step “${result.failed_step}”.`, result.error || "", "Nothing was erased."];
  }
  if (job.state === "succeeded") return ["good", `Succeeded: generation ${result.generation} is current.`];
  return ["bad", `Failed at step “${result.failed_step}”.`, result.error || "", rollbackSentence(job.rollback)];
}

function finish(job, lan) {
  const result = job.result || {};
  if (job.kind && job.kind !== "config") {
    const [kind, title, ...rest] = outcomeOf(job);
    show($("job-outcome"), message(kind, title, ...rest));
  } else if (job.state === "succeeded") {
    const where = lan
      ? el("span", {}, "This console now lives at ", el("a", { href: lan }, lan), " (the device's LAN gateway address): connect your computer to the LAN port and open it there. It no longer answers on other addresses once the device has switched.")
      : "";
    show($("job-outcome"), message("good", `Succeeded: generation ${result.generation} is current.`, where));
  } else {
    show(
      $("job-outcome"),
      message("bad", `Failed at step “${result.failed_step}”.`, result.error || "", rollbackSentence(job.rollback), "Fix the cause, then prepare signing and apply again."),
    );
  }
  refreshStatus();
}

// ---------- signed actions: update, log, factory reset ----------

/// The signing steps of one action, built into `#<prefix>-signing-slot`: "Prepare
/// signing" fetches a nonce and hashes `body()`; the page shows the message and the
/// command for the key typed; the pasted signature goes to `send(headers)` with the
/// nonce and the digest. `ready()` says whether the action may be prepared now.
function signedAction(prefix, { prepareLabel, submitLabel, body, send, ready, what, danger }) {
  const id = (name) => `${prefix}-${name}`;
  const s = { nonce: null, sha: null, expires: 0 };
  const prepareButton = el("button", { id: id("prepare"), type: "button", class: danger ? "danger" : "" }, prepareLabel);
  const command = el("pre", { id: id("command"), class: "box" });
  const keyBox = el("input", { id: id("key"), type: "text", value: "~/.ssh/id_ed25519", spellcheck: "false", autocomplete: "off" });
  const signature = el("textarea", { id: id("signature"), rows: "7", spellcheck: "false", autocomplete: "off", placeholder: "-----BEGIN SSH SIGNATURE-----" });
  const submitButton = el("button", { id: id("submit"), type: "button", class: danger ? "danger" : "" }, submitLabel);
  const copy = el("button", { id: id("copy"), type: "button" }, "Copy command");
  const expiry = el("span", { id: id("expiry") });
  const messageBox = el("pre", { id: id("message"), class: "box" });
  const box = el(
    "div",
    { id: id("signing"), hidden: "" },
    el("p", {}, "The message to sign (single-use nonce, ", expiry, "):"),
    messageBox,
    el("label", { for: id("key") }, "Your SSH key (a private key, or a .pub whose key is in ssh-agent):"),
    keyBox,
    el("p", {}, "Run this in a terminal on your computer:"),
    el("div", { class: "command-row" }, command, copy),
    el("label", { for: id("signature") }, "Paste the whole signature (or its base64):"),
    signature,
    submitButton,
  );
  $(id("signing-slot")).replaceChildren(prepareButton, box);
  const result = $(id("result"));
  const refreshCommand = () => {
    if (!s.nonce) return;
    const key = keyBox.value.trim() || "KEY";
    command.textContent = `printf '${C.namespace}\\n%s\\n%s\\n' ${s.nonce} ${s.sha} | ssh-keygen -Y sign -n ${C.namespace} -f ${shellQuote(key)}`;
  };
  const reset = () => {
    s.nonce = null;
    s.sha = null;
    box.hidden = true;
    signature.value = "";
  };
  const update = () => {
    prepareButton.disabled = !ready();
    if (!ready()) reset();
  };
  setInterval(() => {
    if (!s.nonce) return;
    const left = Math.round((s.expires - Date.now()) / 1000);
    expiry.textContent = left > 0 ? `valid for ${left} s more` : "EXPIRED: press “Prepare signing” again";
  }, 1000);
  prepareButton.addEventListener("click", async () => {
    if (!ready()) return;
    show(result);
    prepareButton.disabled = true;
    const r = await api("GET", C.routes.nonce);
    if (r.status !== 200) {
      prepareButton.disabled = false;
      show(result, message("bad", "Could not get a nonce.", refusalSentence(r.status, r.json, "nonce")));
      return;
    }
    const bytes = await body();
    s.nonce = r.json.nonce;
    s.sha = await sha256Hex(bytes);
    s.expires = Date.now() + (r.json.expires_in || C.limits.nonce_ttl_secs) * 1000;
    expiry.textContent = `valid for ${r.json.expires_in || C.limits.nonce_ttl_secs} s more`;
    messageBox.textContent = `${C.namespace}\n${s.nonce}\n${s.sha}\n`;
    keyBox.value = keyBox.value === "~/.ssh/id_ed25519" ? $("key-path").value : keyBox.value;
    refreshCommand();
    box.hidden = false;
    prepareButton.disabled = false;
    signature.value = "";
    signature.focus();
  });
  keyBox.addEventListener("input", refreshCommand);
  copy.addEventListener("click", () => copyText(command.textContent, copy));
  submitButton.addEventListener("click", async () => {
    const pasted = signature.value;
    if (!s.nonce || !pasted.trim()) {
      show(result, message("bad", "No signature yet.", "Run the command above and paste its whole output into the box."));
      return;
    }
    if (!ready()) {
      show(result, message("bad", "Not ready.", "Check the steps above, then prepare signing again."));
      return;
    }
    submitButton.disabled = true;
    const headers = {
      [C.headers.nonce]: s.nonce,
      [C.headers.content_sha256]: s.sha,
      [C.headers.signature]: signatureHeader(pasted),
    };
    // An accepted request uses the nonce up; a refused one is prepared afresh anyway.
    reset();
    try {
      await send(headers, result, what);
    } finally {
      submitButton.disabled = false;
    }
  });
  update();
  return { update };
}

/// Sends the bundle with XMLHttpRequest, whose upload events report the bytes sent.
function uploadBundle(url, file, headers, onProgress) {
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", url);
    for (const [k, v] of Object.entries(headers)) xhr.setRequestHeader(k, v);
    xhr.upload.addEventListener("progress", (e) => onProgress(e.loaded, e.lengthComputable ? e.total : file.size));
    xhr.addEventListener("load", () => {
      let json = {};
      try {
        json = JSON.parse(xhr.responseText);
      } catch (_) {
        json = {};
      }
      resolve({ status: xhr.status, json });
    });
    xhr.addEventListener("error", () => resolve({ status: 0, json: {} }));
    xhr.addEventListener("abort", () => resolve({ status: 0, json: {} }));
    xhr.send(file);
  });
}

function progressText(sent, total) {
  const pct = total > 0 ? Math.floor((sent * 100) / total) : 100;
  return `Uploaded ${sent} of ${total} bytes (${pct}%)`;
}

function wireUpdate() {
  const action = signedAction("update", {
    prepareLabel: "Prepare signing",
    submitLabel: "Upload and install",
    what: "update",
    ready: () => !!state.bundle && state.bundle.size > 0 && state.bundle.size <= C.limits.update_bundle_bytes,
    body: async () => new Uint8Array(await state.bundle.arrayBuffer()),
    send: async (headers, result, what) => {
      const file = state.bundle;
      const reboot = $("update-reboot").checked;
      $("update-progress-box").hidden = false;
      $("update-progress").value = 0;
      $("update-progress-text").textContent = progressText(0, file.size);
      show(result, message("warn", "Uploading…", "Keep this page open until the upload has finished."));
      const r = await uploadBundle(`${C.routes.update}?reboot=${reboot}`, file, { ...headers, "Content-Type": C.media_types.update_bundle }, (sent, total) => {
        $("update-progress").value = total > 0 ? (sent * 100) / total : 100;
        $("update-progress-text").textContent = progressText(sent, total);
      });
      if (r.status === 202) {
        $("update-progress").value = 100;
        $("update-progress-text").textContent = progressText(file.size, file.size);
        show(result, message("good", "Uploaded: the device is installing the bundle.", "Follow its steps below."));
        follow(r.json.job, null, "update", "update-section");
        return;
      }
      show(result, message("bad", `Not installed (HTTP ${r.status || "no answer"}).`, refusalSentence(r.status, r.json, what)));
      if (r.status === 409 && r.json.job) follow(r.json.job, null, "config", "update-section");
    },
  });
  $("bundle").addEventListener("change", (e) => {
    const file = e.target.files[0] || null;
    state.bundle = file;
    show($("update-result"));
    if (file && file.size > C.limits.update_bundle_bytes) {
      $("bundle-info").textContent = `✗ ${file.name} is ${file.size} bytes; the device takes at most ${describeSize(C.limits.update_bundle_bytes)}.`;
    } else if (file) {
      $("bundle-info").textContent = `Chosen: ${file.name} (${file.size} bytes).`;
    } else $("bundle-info").textContent = "";
    action.update();
  });
}

/// One job of the log: a summary line, and inside it the events and the outcome.
function renderJob(j, open) {
  const events = (j.events || []).map((e) => {
    const level = e.level && e.level !== "info" ? el("span", { class: `level-${e.level}` }, `[${e.level}] `) : null;
    return el("li", { "data-step": e.step, "data-level": e.level }, `${(e.time || "").slice(11, 19)} `, el("span", { class: "step" }, e.step), ": ", level, e.message);
  });
  const finished = j.state === "succeeded" || j.state === "failed";
  const [kind, title, ...rest] = finished ? outcomeOf(j) : ["warn", `${j.state}`];
  const details = el(
    "details",
    open ? { open: "" } : {},
    el("summary", {}, `${STATE_MARK[j.state] || ""} ${text(j.created)} — ${KIND_TITLE[j.kind || "config"] || j.kind} (${j.origin}): ${j.state} — job ${j.id}`),
    el("ol", { class: "events" }, ...events),
    message(kind, title, ...rest),
  );
  return el("li", { class: "job", "data-id": j.id, "data-kind": j.kind || "config", "data-state": j.state }, details);
}

function wireLog() {
  signedAction("log", {
    prepareLabel: "Prepare signing",
    submitLabel: "Show the log",
    what: "log",
    ready: () => true,
    body: async () => new Uint8Array(0),
    send: async (headers, result, what) => {
      const r = await api("GET", C.routes.job_list, { headers });
      if (r.status !== 200) {
        show(result, message("bad", `No log (HTTP ${r.status || "no answer"}).`, refusalSentence(r.status, r.json, what)));
        return;
      }
      const jobs = r.json.jobs || [];
      show(result, message("good", `${jobs.length} recent job${jobs.length === 1 ? "" : "s"}, newest first (at most ${C.limits.job_list_len}).`, `Read at ${new Date().toLocaleTimeString()}; prepare signing again to refresh.`));
      $("log").replaceChildren(...jobs.map((j, i) => renderJob(j, i === 0)));
    },
  });
}

function wireReset() {
  $("reset-word").textContent = C.factory_reset_confirm;
  $("reset-confirm").placeholder = C.factory_reset_confirm;
  const confirmed = () => $("reset-confirm").value.trim() === C.factory_reset_confirm;
  const action = signedAction("reset", {
    prepareLabel: "Prepare signing",
    submitLabel: "Erase this device",
    what: "reset",
    danger: true,
    ready: confirmed,
    // What is signed says what it is for: the confirmation itself.
    body: async () => new TextEncoder().encode(JSON.stringify({ confirm: C.factory_reset_confirm })),
    send: async (headers, result, what) => {
      const body = new TextEncoder().encode(JSON.stringify({ confirm: C.factory_reset_confirm }));
      const r = await api("POST", C.routes.factory_reset, { body, headers: { ...headers, "Content-Type": C.media_types.json } });
      $("reset-confirm").value = "";
      action.update();
      if (r.status === 202) {
        show(result, message("good", "Accepted: the device is resetting.", "Follow its steps below; it reboots when they are done."));
        follow(r.json.job, null, "factory-reset", "reset-section");
        return;
      }
      show(result, message("bad", `Not reset (HTTP ${r.status || "no answer"}).`, refusalSentence(r.status, r.json, what)));
      if (r.status === 409 && r.json.job) follow(r.json.job, null, "config", "reset-section");
    },
  });
  $("reset-confirm").addEventListener("input", () => action.update());
}

// ---------- wiring ----------

/// The parts of the page that name the contract's constants.
function fillConstants() {
  $("file").accept = [".toml", ".tar", ".tgz", ".gz", C.media_types.config, "text/plain", C.media_types.tar, C.media_types.gzip].join(",");
  $("sign-file-command").textContent = `ssh-keygen -Y sign -n ${C.namespace} -f KEY atomix-message.txt`;
  $("health-link").href = C.routes.health;
  $("health-link").textContent = C.routes.health;
}

function wire() {
  fillConstants();
  const drop = $("drop");
  $("file").addEventListener("change", (e) => e.target.files[0] && choose(e.target.files[0]));
  for (const ev of ["dragenter", "dragover"]) {
    drop.addEventListener(ev, (e) => {
      e.preventDefault();
      drop.classList.add("over");
    });
  }
  for (const ev of ["dragleave", "drop"]) {
    drop.addEventListener(ev, (e) => {
      e.preventDefault();
      drop.classList.remove("over");
    });
  }
  drop.addEventListener("drop", (e) => e.dataTransfer.files[0] && choose(e.dataTransfer.files[0]));
  $("validate").addEventListener("click", validate);
  $("prepare").addEventListener("click", prepare);
  $("copy").addEventListener("click", copyCommand);
  $("submit").addEventListener("click", submit);
  $("key-path").addEventListener("input", updateCommand);
  wireUpdate();
  wireLog();
  wireReset();
  refreshStatus();
  setInterval(refreshStatus, STATUS_EVERY_MS);
  setInterval(tickExpiry, 1000);
}

document.addEventListener("DOMContentLoaded", wire);
