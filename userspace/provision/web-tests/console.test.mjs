// The web console end to end in headless Debian chromium (driven by playwright-core;
// playwright never downloads a browser), against the real
// `atomix-provision serve --system record` on loopback with a temporary root, signed by
// the real ssh-keygen running the exact command the page shows.
//
// Environment: ATOMIX_PROVISION_BIN (the service binary), ARTIFACTS (screenshots),
// CHROMIUM (default /usr/bin/chromium). Run by scripts/test-browser.sh.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";

const BIN = process.env.ATOMIX_PROVISION_BIN;
const ARTIFACTS = process.env.ARTIFACTS || path.resolve("../../../target/browser-tests");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const EXAMPLE = fs.readFileSync(new URL("../../../examples/config.toml", import.meta.url), "utf8");
const TIMEOUT = 20_000;

let dir, root, server, serverLog, base, browser, key, stranger;

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function keygen(name) {
  const file = path.join(dir, name);
  execFileSync("ssh-keygen", ["-q", "-N", "", "-C", name, "-t", "ed25519", "-f", file]);
  return { private: file, public: fs.readFileSync(file + ".pub", "utf8").trim() };
}

/// The example with `k` as its admin key and `hostname`.
function configWithAdmin(k, hostname) {
  const line = EXAMPLE.split("\n").find((l) => l.trimStart().startsWith('"ssh-ed25519'));
  return EXAMPLE.replace(line, `  "${k.public}",`).replace("edge-042", hostname);
}

async function waitListening(port, deadline) {
  for (;;) {
    const ok = await new Promise((resolve) => {
      const c = net.connect(port, "127.0.0.1", () => (c.end(), resolve(true)));
      c.on("error", () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`the service did not listen; its log:\n${serverLog}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`), fullPage: true });
}

async function newPage(viewport = { width: 1280, height: 900 }) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  // Refusals (401, 422) are logged by Chromium as failed loads: expected, not errors.
  page.on("console", (m) => m.type() === "error" && !m.text().startsWith("Failed to load resource") && errors.push(m.text()));
  page.jsErrors = errors;
  await page.goto(base + "/");
  return page;
}

/// Drops a file on the drop zone, as a user dragging it from the desktop would.
async function dropFile(page, name, content, type) {
  const bytes = Array.from(Buffer.from(content));
  const dataTransfer = await page.evaluateHandle(
    ({ name, bytes, type }) => {
      const dt = new DataTransfer();
      dt.items.add(new File([new Uint8Array(bytes)], name, { type }));
      return dt;
    },
    { name, bytes, type },
  );
  await page.dispatchEvent("#drop", "drop", { dataTransfer });
}

async function chooseFile(page, name, content) {
  await page.setInputFiles("#file", { name, mimeType: "application/octet-stream", buffer: Buffer.from(content) });
  await page.locator("#validation .msg").waitFor();
}

/// Prepares signing, runs the command the page shows (with `k`'s path typed into the
/// key box) and pastes its output.
async function signOnPage(page, k) {
  await page.click("#prepare");
  await page.locator("#signing").waitFor({ state: "visible" });
  await page.fill("#key-path", k.private);
  const command = await page.locator("#command").textContent();
  assert.match(command, /^printf 'atomix-provision\\n%s\\n%s\\n' [0-9a-f]{64} [0-9a-f]{64} \| ssh-keygen -Y sign -n atomix-provision -f /);
  const signature = execFileSync("sh", ["-c", command], { encoding: "utf8" });
  assert.match(signature, /^-----BEGIN SSH SIGNATURE-----/);
  await page.fill("#signature", signature);
  return command;
}

/// The same for one of the other signed actions (`update`, `log`, `reset`): its own
/// prepare button, key box, command and signature box.
async function signAction(page, prefix, k) {
  await page.click(`#${prefix}-prepare`);
  await page.locator(`#${prefix}-signing`).waitFor({ state: "visible" });
  await page.fill(`#${prefix}-key`, k.private);
  const command = await page.locator(`#${prefix}-command`).textContent();
  assert.match(command, /^printf 'atomix-provision\\n%s\\n%s\\n' [0-9a-f]{64} [0-9a-f]{64} \| ssh-keygen -Y sign -n atomix-provision -f /);
  const signature = execFileSync("sh", ["-c", command], { encoding: "utf8" });
  await page.fill(`#${prefix}-signature`, signature);
  return command;
}

async function noRunningJob() {
  for (let i = 0; i < 100; i++) {
    const h = await (await fetch(base + "/api/health")).json();
    if (!h.job) return h;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error("a job is still running");
}

before(async () => {
  assert.ok(BIN && fs.existsSync(BIN), `ATOMIX_PROVISION_BIN must name the built service binary (got ${BIN})`);
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  for (const f of fs.readdirSync(ARTIFACTS)) if (f.endsWith(".png")) fs.rmSync(path.join(ARTIFACTS, f));
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "atomix-console-"));
  key = keygen("provisioning");
  stranger = keygen("stranger");
  root = path.join(dir, "root");
  fs.mkdirSync(path.join(root, "boot"), { recursive: true });
  fs.writeFileSync(path.join(dir, "keys"), key.public + "\n");
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  serverLog = "";
  server = spawn(BIN, ["serve", "--system", "record", "--listen", `127.0.0.1:${port}`, "--root", root, "--keys", path.join(dir, "keys")], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  server.stdout.on("data", (d) => (serverLog += d));
  server.stderr.on("data", (d) => (serverLog += d));
  await waitListening(port, Date.now() + 15_000);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    chromiumSandbox: false,
    // Playwright gives every launch a fresh temporary profile (--user-data-dir).
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
});

after(async () => {
  if (browser) await browser.close();
  if (server) server.kill("SIGTERM");
  fs.writeFileSync(path.join(ARTIFACTS, "service.log"), serverLog || "");
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

test("the page loads and shows the device's status", async () => {
  const page = await newPage();
  await assert.doesNotReject(page.locator("#st-provisioned", { hasText: "No — waiting for a config" }).waitFor());
  assert.match(await page.locator("#st-listening").textContent(), new RegExp(base.replace("http://", "")));
  assert.equal(await page.locator("#st-import-error").textContent(), "none");
  assert.match(await page.locator("#status-note").textContent(), /^Updated /);
  await shot(page, "01-status");
  assert.deepEqual(page.jsErrors, []);
});

test("a dropped invalid config shows each error at its line, under the offending text", async () => {
  const page = await newPage();
  const lines = configWithAdmin(key, "edge-100").split("\n");
  const hostLine = lines.findIndex((l) => l.startsWith("hostname")) + 1;
  const portLine = lines.findIndex((l) => l.startsWith("port = 443")) + 1;
  lines[hostLine - 1] = 'hostname = "-bad-host-"';
  lines[portLine - 1] = "port = 70000";
  await dropFile(page, "config.toml", lines.join("\n"), "application/toml");
  await page.locator("#validation .msg.bad").waitFor();
  assert.match(await page.locator("#validation .msg").textContent(), /Not valid: 2 errors/);

  const host = page.locator(`#validation .problem[data-line="${hostLine}"]`);
  assert.equal(await host.getAttribute("data-path"), "device.hostname");
  assert.match(await host.locator(".where").textContent(), new RegExp(`Error at line ${hostLine}, column \\d+`));
  assert.match(await host.locator(".source .hit").textContent(), /▶ +\d+ \| hostname = "-bad-host-"/);
  assert.match(await host.locator(".source .caret").textContent(), /\^ here/);
  const port = page.locator(`#validation .problem[data-line="${portLine}"]`);
  assert.match(await port.locator(".source .hit").textContent(), /port = 70000/);
  await shot(page, "02-invalid-config");

  // The same on a phone-sized screen: no horizontal scrolling of the page itself.
  await page.setViewportSize({ width: 375, height: 800 });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `the page is ${overflow}px wider than a phone`);
  await shot(page, "03-invalid-config-phone");
  assert.deepEqual(page.jsErrors, []);
});

test("an invalid config inside a tar.gz bundle is shown at its line too", async () => {
  const page = await newPage();
  const src = path.join(dir, "bundle-src");
  fs.mkdirSync(src, { recursive: true });
  fs.writeFileSync(path.join(src, "config.toml"), configWithAdmin(key, "edge-100").replace("schema = 1", "schema = 7"));
  const tgz = path.join(dir, "bundle.tar.gz");
  execFileSync("tar", ["-czf", tgz, "-C", src, "config.toml"]);
  await chooseFile(page, "bundle.tar.gz", fs.readFileSync(tgz));
  assert.match(await page.locator("#file-info").textContent(), /bundle/);
  const schema = page.locator('#validation .problem[data-path="schema"]');
  assert.match(await schema.locator(".source .hit").textContent(), /schema = 7/);
  await shot(page, "04-invalid-bundle");
});

test("the JS SHA-256 fallback agrees with WebCrypto", async () => {
  const page = await newPage();
  const mismatches = await page.evaluate(async () => {
    const bad = [];
    for (const n of [0, 1, 55, 56, 63, 64, 65, 1000, 200_000]) {
      const data = new Uint8Array(n);
      for (let i = 0; i < n; i++) data[i] = (i * 31 + 7) & 0xff;
      const want = Array.from(new Uint8Array(await crypto.subtle.digest("SHA-256", data)), (b) => b.toString(16).padStart(2, "0")).join("");
      if (window.atomixSha256Hex(data) !== want) bad.push(n);
    }
    return bad;
  });
  assert.deepEqual(mismatches, []);
});

test("a signature from an untrusted key gets the 401 sentence and changes nothing", async () => {
  const page = await newPage();
  await chooseFile(page, "config.toml", configWithAdmin(key, "edge-100"));
  assert.match(await page.locator("#validation .msg").textContent(), /Valid/);
  await signOnPage(page, stranger);
  await shot(page, "05-signing");
  await page.click("#submit");
  const result = page.locator("#apply-result .msg.bad");
  await result.waitFor();
  const sentence = await result.textContent();
  assert.match(sentence, /Not applied \(HTTP 401\)/);
  assert.match(sentence, /The device refused the signature\. Sign with a key the device trusts/);
  assert.ok(await page.locator("#signing").isHidden(), "a used nonce is not offered again");
  assert.match(await page.locator("#st-provisioned").textContent(), /^No/);
  await shot(page, "06-refused-401");
});

test("applying a valid config signed with ssh-keygen: the job succeeds live and the device is provisioned", async () => {
  const page = await newPage();
  await chooseFile(page, "config.toml", configWithAdmin(key, "edge-100"));
  await signOnPage(page, key);
  await page.click("#submit");
  await page.locator("#apply-result .msg.good").waitFor();
  const outcome = page.locator("#job-outcome .msg");
  await outcome.waitFor();
  const text = await outcome.textContent();
  assert.match(text, /Succeeded: generation 1 is current/);
  assert.match(text, /This console now lives at http:\/\/192\.168\.100\.1:8080\/ \(the device's LAN gateway address\)/);
  const steps = await page.locator("#events li").evaluateAll((lis) => lis.map((li) => li.dataset.step));
  for (const step of ["validate", "render", "persist", "firewall", "switch"]) assert.ok(steps.includes(step), `event ${step} in ${steps}`);
  assert.ok(steps.indexOf("validate") < steps.indexOf("switch"), "events in order");
  await page.locator("#st-provisioned", { hasText: "Yes — generation 1" }).waitFor();
  await shot(page, "07-provisioned");
  await page.setViewportSize({ width: 375, height: 800 });
  await shot(page, "08-provisioned-phone");
  assert.deepEqual(page.jsErrors, []);
});

test("an update bundle is uploaded with its progress, installed by a job followed live, and shown in the status", async () => {
  await noRunningJob();
  const page = await newPage();
  // 3 MiB of stand-in bundle: the recording system never reads it.
  const bundle = Buffer.alloc(3 << 20);
  for (let i = 0; i < bundle.length; i++) bundle[i] = (i * 7 + 3) & 0xff;
  assert.ok(await page.locator("#update-prepare").isDisabled(), "nothing to sign before a bundle is chosen");
  await page.setInputFiles("#bundle", { name: "atomixos-rock64.raucb", mimeType: "application/octet-stream", buffer: bundle });
  assert.match(await page.locator("#bundle-info").textContent(), new RegExp(`Chosen: atomixos-rock64\\.raucb \\(${bundle.length} bytes\\)`));
  await page.check("#update-reboot");
  // Every progress report the page shows, in order.
  await page.evaluate(() => {
    window.progressSeen = [];
    new MutationObserver(() => window.progressSeen.push(document.getElementById("update-progress-text").textContent)).observe(document.getElementById("update-progress-text"), { childList: true, characterData: true, subtree: true });
  });
  const command = await signAction(page, "update", key);
  const sha = execFileSync("sha256sum", { input: bundle, encoding: "utf8" }).split(" ")[0];
  assert.ok(command.includes(` ${sha} `), "the page hashed the bundle");
  await shot(page, "09-update-signing");
  await page.click("#update-submit");
  await page.locator("#update-result .msg.good").waitFor();
  const outcome = page.locator("#job-outcome .msg");
  await outcome.waitFor();
  const text = await outcome.textContent();
  assert.match(text, /Succeeded: the bundle is installed in the other slot, which boots next\./);
  assert.match(text, /The device is rebooting into it\./);
  assert.equal(await page.locator("#job-kind").textContent(), "Update");
  assert.equal(await page.evaluate(() => document.getElementById("update-section").nextElementSibling.id), "job-section", "followed under the page that started it");
  const seen = await page.evaluate(() => window.progressSeen);
  assert.ok(seen.length >= 2, `progress shown: ${seen}`);
  assert.equal(seen[seen.length - 1], `Uploaded ${bundle.length} of ${bundle.length} bytes (100%)`);
  for (const line of seen) assert.match(line, /^Uploaded \d+ of \d+ bytes \(\d+%\)$/);
  const steps = await page.locator("#events li").evaluateAll((lis) => lis.map((li) => li.dataset.step));
  assert.deepEqual(steps, ["receive", "install", "install", "cleanup", "reboot"]);
  await page.locator("#st-update", { hasText: "✓ succeeded" }).waitFor();
  assert.doesNotMatch(await page.locator("#st-update").textContent(), /null|undefined/);
  await shot(page, "10-update-installed");
  const actions = fs.readFileSync(path.join(root, "run/atomix/actions.log"), "utf8");
  assert.match(actions, /"action":"rauc-install"/);
  assert.deepEqual(page.jsErrors, []);
});

test("the provisioning log needs a signature, then shows every job with its events", async () => {
  const page = await newPage();
  await signAction(page, "log", stranger);
  await page.click("#log-submit");
  await page.locator("#log-result .msg.bad").waitFor();
  assert.match(await page.locator("#log-result").textContent(), /No log \(HTTP 401\).*The device refused the signature/);
  assert.equal(await page.locator("#log li.job").count(), 0, "nothing read without a trusted signature");

  await signAction(page, "log", key);
  await page.click("#log-submit");
  await page.locator("#log-result .msg.good").waitFor();
  const jobs = await page.locator("#log li.job").evaluateAll((lis) => lis.map((li) => [li.dataset.kind, li.dataset.state]));
  assert.deepEqual(jobs.slice(0, 2), [["update", "succeeded"], ["config", "succeeded"]], "newest first");
  const configSteps = await page.locator('#log li.job[data-kind="config"] .events li').evaluateAll((lis) => lis.map((li) => li.dataset.step));
  for (const step of ["validate", "persist", "switch"]) assert.ok(configSteps.includes(step), `${step} in ${configSteps}`);
  await page.locator('#log li.job[data-kind="config"] summary').click();
  await shot(page, "11-log");
  assert.deepEqual(page.jsErrors, []);
});

test("a factory reset is confirmed by typing the word, signed, followed, and leaves the device unprovisioned", async () => {
  await noRunningJob();
  const page = await newPage();
  await page.locator("#st-provisioned", { hasText: "Yes" }).waitFor();
  assert.equal(await page.locator("#reset-word").textContent(), "erase");
  assert.ok(await page.locator("#reset-prepare").isDisabled(), "not without the word");
  await page.fill("#reset-confirm", "eras");
  assert.ok(await page.locator("#reset-prepare").isDisabled());
  await page.fill("#reset-confirm", "erase");
  assert.ok(await page.locator("#reset-prepare").isEnabled());
  const command = await signAction(page, "reset", key);
  const sha = execFileSync("sha256sum", { input: '{"confirm":"erase"}', encoding: "utf8" }).split(" ")[0];
  assert.ok(command.includes(` ${sha} `), "the confirmation is what is signed");
  await shot(page, "12-reset-confirm");
  await page.click("#reset-submit");
  await page.locator("#reset-result .msg.good").waitFor();
  const outcome = page.locator("#job-outcome .msg");
  await outcome.waitFor();
  assert.match(await outcome.textContent(), /Succeeded: the device is unprovisioned and reboots\./);
  assert.equal(await page.locator("#job-kind").textContent(), "Factory reset");
  await page.locator("#st-provisioned", { hasText: "No — waiting for a config" }).waitFor();
  assert.ok(fs.existsSync(path.join(root, "data/atomix/factory-reset")), "the erase waits for the next boot");
  await shot(page, "13-reset-accepted");
  for (let i = 0; i < 100 && !fs.readFileSync(path.join(root, "run/atomix/actions.log"), "utf8").includes('"reboot"'); i++) {
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.match(fs.readFileSync(path.join(root, "run/atomix/actions.log"), "utf8"), /"args":\["reboot"\]/);
  await page.setViewportSize({ width: 375, height: 800 });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `the page is ${overflow}px wider than a phone`);
  await shot(page, "14-reset-phone");
  assert.deepEqual(page.jsErrors, []);
});
