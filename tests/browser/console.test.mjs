// Browser tests of the web console (/console): headless Chromium (Debian's, via
// puppeteer-core, which never downloads a browser) against the real labhook binary with a
// fresh data directory, and a real HTTPS receiver (node's https, a test CA made with
// openssl here). Each flow is clicked through in the page and its result checked through
// the API or at the receiver.
//
//   LABHOOK_BIN           the binary (default: ../../build-test/labhook)
//   CHROMIUM              the browser (default: /usr/bin/chromium)
//   LABHOOK_SCREENSHOTS   a directory: write the docs' screenshots (docs/console/*.png) there
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import https from "node:https";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import puppeteer from "puppeteer-core";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const BIN = process.env.LABHOOK_BIN || path.join(HERE, "../../build-test/labhook");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const SHOTS = process.env.LABHOOK_SCREENSHOTS || "";
const XSS_SCRIPT = "<script>window.__xss = 1</script>";
const XSS_IMG = '"><img src=x onerror="window.__xss = 2">';
const MARKUP_ANSWER = '<img src=x onerror="window.__xss = 5"><script>window.__xss = 6</script>';

let tmp, srv, recv, browser, base, adminKey;

/* ---- the HTTPS receiver ---- */

function makeCerts(dir) {
  const run = (...a) => execFileSync("openssl", a, { cwd: dir, stdio: "pipe" });
  run("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key");
  run("req", "-x509", "-new", "-key", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=console test CA");
  run("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "srv.key");
  run("req", "-new", "-key", "srv.key", "-out", "srv.csr", "-subj", "/CN=127.0.0.1");
  fs.writeFileSync(path.join(dir, "ext.cnf"), "subjectAltName=IP:127.0.0.1\n");
  run("x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
    "-out", "srv.pem", "-days", "2", "-extfile", "ext.cnf");
}

/* Answers 500 under /fail/ and /markup/ (with markup for a body), else 200; keeps every
 * request. */
function startReceiver(dir) {
  const got = [];
  const server = https.createServer({
    key: fs.readFileSync(path.join(dir, "srv.key")),
    cert: fs.readFileSync(path.join(dir, "srv.pem")),
  }, (rq, rs) => {
    let body = "";
    rq.setEncoding("utf8");
    rq.on("data", (d) => { body += d; });
    rq.on("end", () => {
      got.push({ path: rq.url, headers: rq.headers, body, json: JSON.parse(body) });
      const markup = rq.url.startsWith("/markup/");
      rs.writeHead(rq.url.startsWith("/fail/") || markup ? 500 : 200, { "Content-Type": "text/html" });
      rs.end(markup ? MARKUP_ANSWER : rq.url.startsWith("/fail/") ? "receiver says no" : "ok");
    });
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve({
    server, got, url: (p) => `https://127.0.0.1:${server.address().port}${p}`,
  })));
}

/* What a receiver does (docs/delivery.md): v1 over id.timestamp.body with the secret. */
function signedWith(secret, h, body) {
  const key = Buffer.from(secret.slice("whsec_".length), "base64");
  const mac = crypto.createHmac("sha256", key)
    .update(`${h["webhook-id"]}.${h["webhook-timestamp"]}.${body}`).digest("base64");
  return h["webhook-signature"].split(" ").includes("v1," + mac);
}

async function until(what, fn, ms = 30000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error("timed out waiting for " + what);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/* ---- labhook and its API ---- */

function startLabhook(dataDir, caFile) {
  const p = spawn(BIN, ["serve", "--data-dir", dataDir, "--listen", "127.0.0.1:0",
    "--ca-file", caFile, "--allow-net", "127.0.0.0/8", "--retry-schedule", "0,200ms"],
  { stdio: ["ignore", "ignore", "pipe"] });
  let log = "";
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error("labhook did not start:\n" + log)), 20000);
    p.stderr.setEncoding("utf8");
    p.stderr.on("data", (d) => {
      log += d;
      const m = /listen=[^ ]*:(\d+) .*ready/.exec(log);
      if (m && !p.port) {
        p.port = Number(m[1]);
        clearTimeout(t);
        resolve(p);
      }
    });
    p.on("exit", (code) => reject(new Error(`labhook exited ${code}:\n${log}`)));
  });
}

async function call(method, p, body, auth) {
  const headers = {};
  if (auth) headers.Authorization = "Bearer " + auth;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(base + p, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  return { status: r.status, json: await r.json() };
}

async function admin(method, p, body) {
  const r = await call(method, p, body, adminKey);
  assert.equal(r.status, 200, `${method} ${p}: ${JSON.stringify(r.json)}`);
  return r.json;
}

async function clientToken(clientID, clientSecret) {
  const r = await call("POST", "/client/auth/token", { clientID, clientSecret });
  assert.equal(r.status, 200, JSON.stringify(r.json));
  return r.json.authToken;
}

/* An account with a lab, made through the admin API. */
async function makeAccount(name, labName, mode = "catch-all") {
  const a = await admin("POST", "/admin/accounts", { name, mode });
  const l = await admin("POST", `/admin/accounts/${a.clientID}/labs`, { name: labName });
  return { clientID: a.clientID, secret: a.clientSecret, labID: l.labID };
}

/* ---- the page ---- */

/* A page that logs every URL it requests, every Authorization it sends, console errors
 * (a CSP violation is one) and page errors; dialogs are accepted. */
async function openPage(width = 1280, height = 900) {
  const page = await browser.newPage();
  await page.setViewport({ width, height });
  page.requested = [];
  page.auths = [];
  page.errors = [];
  page.on("request", (r) => {
    page.requested.push(r.url());
    const a = r.headers().authorization;
    if (a) page.auths.push({ url: r.url(), auth: a });
  });
  page.on("console", (m) => { if (m.type() === "error") page.errors.push(m.text()); });
  page.on("pageerror", (e) => page.errors.push(String(e)));
  page.on("dialog", (d) => d.accept());
  await page.goto(base + "/console", { waitUntil: "domcontentloaded" });
  return page;
}

async function fill(page, sel, value) {
  await page.$eval(sel, (e) => { e.value = ""; });
  await page.type(sel, value);
}

async function status(page, re) {
  await page.waitForFunction((src) => new RegExp(src).test(document.getElementById("status").textContent),
    { timeout: 30000 }, re.source).catch(async () => {
    const [st, al] = await page.$$eval("#status, #alert", (es) => es.map((e) => e.textContent));
    throw new Error(`no status ${re} (status: "${st}", alert: "${al}")`);
  });
}

async function shot(page, name, top) {
  if (!SHOTS) return;
  fs.mkdirSync(SHOTS, { recursive: true });
  if (top) await page.$eval(top, (e) => e.scrollIntoView({ block: "start" }));
  await page.screenshot({ path: path.join(SHOTS, name + ".png") });
}

/* No credential in any URL the page asked for; nothing kept in the browser's storage. */
async function assertNoLeak(page, secrets) {
  for (const u of page.requested)
    for (const s of secrets.filter(Boolean))
      assert.ok(!u.includes(s), `a credential appears in the URL ${u}`);
  const kept = await page.evaluate(() => ({
    local: localStorage.length, session: sessionStorage.length, cookie: document.cookie,
  }));
  assert.deepEqual(kept, { local: 0, session: 0, cookie: "" });
}

async function signInClient(page, acct) {
  await fill(page, "#ci-id", acct.clientID);
  await fill(page, "#ci-secret", acct.secret);
  await page.click("#client-signin button[type=submit]");
  await status(page, /Signed in/);
}

async function signInAdmin(page) {
  await fill(page, "#ad-key", adminKey);
  await page.click("#admin-signin button[type=submit]");
  await status(page, /Signed in/);
}

/* Clicks the button labelled label in the subscription's row, once the row has it. */
async function rowButton(page, subID, label) {
  const b = await page.waitForFunction((id, l) => [...document.querySelectorAll(`tr[data-sub="${id}"] button`)]
    .find((x) => x.textContent === l), { timeout: 30000 }, subID, label);
  await b.click();
}

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "labhook-console-"));
  makeCerts(tmp);
  recv = await startReceiver(tmp);
  srv = await startLabhook(path.join(tmp, "data"), path.join(tmp, "ca.pem"));
  base = `http://127.0.0.1:${srv.port}`;
  adminKey = fs.readFileSync(path.join(tmp, "data", "admin.key"), "utf8").trim();
  browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: process.getuid && process.getuid() === 0 ? ["--no-sandbox"] : [],
  });
});

after(async () => {
  if (browser) await browser.close();
  if (srv) {
    /* A clean stop: under ASan a leak or an error makes the exit status non-zero. */
    srv.removeAllListeners("exit");
    const code = await new Promise((resolve) => {
      srv.on("exit", (c, sig) => resolve(c === null ? sig : c));
      srv.kill("SIGTERM");
    });
    assert.equal(code, 0, "labhook did not stop cleanly");
  }
  if (recv) recv.server.close();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

test("the console is served from the binary with its security headers", async () => {
  const r = await fetch(base + "/console");
  assert.equal(r.status, 200);
  assert.equal(r.headers.get("content-type"), "text/html; charset=utf-8");
  const csp = r.headers.get("content-security-policy");
  for (const d of ["default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'",
    "img-src 'self' data:", "frame-ancestors 'none'", "base-uri 'none'", "form-action 'self'"])
    assert.ok(csp.includes(d), `CSP lacks ${d}: ${csp}`);
  assert.equal(r.headers.get("x-frame-options"), "DENY");
  assert.equal(r.headers.get("x-content-type-options"), "nosniff");
  assert.equal(r.headers.get("referrer-policy"), "no-referrer");
  assert.match(await r.text(), /<title>labhook console<\/title>/);

  const js = await fetch(base + "/console/console.js");
  assert.equal(js.status, 200);
  assert.equal(js.headers.get("content-type"), "text/javascript; charset=utf-8");
  assert.equal(js.headers.get("cache-control"), "no-cache");
  const etag = js.headers.get("etag");
  assert.match(etag, /^"[0-9a-f]{64}"$/);
  const again = await fetch(base + "/console/console.js", { headers: { "If-None-Match": etag } });
  assert.equal(again.status, 304);
  assert.equal((await fetch(base + "/console/console.css")).headers.get("content-type"), "text/css; charset=utf-8");

  const missing = await fetch(base + "/console/nope.js");
  assert.equal(missing.status, 404);
  assert.equal((await missing.json()).error.code, "not_found");
  assert.equal((await fetch(base + "/console/console.js", { method: "POST" })).status, 405);
});

test("integrator: subscriptions, secrets, test events, deliveries, retry, recover", async () => {
  const acct = await makeAccount("Acme CRM", "Main lab");
  const page = await openPage();
  /* Long timers (the token refresh, a minute before expiry) are kept to be fired by hand. */
  await page.evaluateOnNewDocument(() => {
    const orig = window.setTimeout;
    window.__longTimers = [];
    window.setTimeout = (fn, ms, ...a) => (ms > 60000 ? window.__longTimers.push(fn) : orig(fn, ms, ...a));
  });
  await page.reload({ waitUntil: "domcontentloaded" });
  await shot(page, "signin");
  await signInClient(page, acct);
  assert.equal(await page.$eval("#ci-secret", (e) => e.value), "", "the secret stays in the form");
  assert.match(await page.$eval("#labs-table", (e) => e.textContent), /Main lab/);
  const token = await clientToken(acct.clientID, acct.secret);
  const sub = async (id) => (await call("GET", `/client/events/subscriptions/${id}`, undefined, token)).json.subscription;

  // Create.
  await fill(page, "#sf-endpoint", recv.url("/fail/acme"));
  await page.click("#sf-ev-bill-created");
  await page.click("#sf-ev-report-completed");
  await page.click("#sf-submit");
  await status(page, /Subscription sub_\w+ created/);
  const list = (await call("GET", "/client/events/subscriptions", undefined, token)).json.subscriptions;
  assert.equal(list.length, 1);
  const s = list[0];
  assert.equal(s.endpoint, recv.url("/fail/acme"));
  assert.deepEqual(s.events, ["bill.created", "report.completed"]);
  assert.equal(s.labID, acct.labID);
  await page.waitForSelector(`tr[data-sub="${s.id}"]`);

  // Edit: events and endpoint.
  await rowButton(page, s.id, "Edit");
  await page.click("#sf-ev-bill-completed");
  await page.click("#sf-submit");
  await status(page, /updated/);
  assert.deepEqual((await sub(s.id)).events, ["bill.created", "bill.completed", "report.completed"]);

  // Pause and resume.
  await rowButton(page, s.id, "Pause");
  await status(page, /is paused/);
  assert.equal((await sub(s.id)).status, "paused");
  await rowButton(page, s.id, "Resume");
  await status(page, /is active/);
  assert.equal((await sub(s.id)).status, "active");

  // The secret on request.
  await rowButton(page, s.id, "Show secret");
  await status(page, /Secret shown/);
  const secret = (await call("GET", `/client/events/subscriptions/${s.id}/secret`, undefined, token)).json.signingSecret;
  assert.equal(await page.$eval("#secret-value", (e) => e.textContent), secret);

  // A test event to the failing endpoint: two attempts (the schedule is 0,200ms), failed.
  await rowButton(page, s.id, "Send test event");
  await status(page, /Test event evt_\w+ queued/);
  const dlvs = async (q = "") => (await call("GET", `/client/events/subscriptions/${s.id}/deliveries${q}`, undefined, token)).json.deliveries;
  const failed = await until("a failed delivery", async () => (await dlvs("?status=failed"))[0]);
  assert.equal(failed.attemptCount, 2);
  await page.click("#subs-refresh");
  await status(page, /refreshed/);
  await page.waitForFunction((id) => document.querySelector(`tr[data-sub="${id}"] td.num`).textContent === "2", {}, s.id);
  await rowButton(page, s.id, "Deliveries");
  await page.waitForSelector(`article[data-delivery="${failed.id}"]`);
  const card = await page.$eval(`article[data-delivery="${failed.id}"]`, (e) => e.textContent);
  assert.match(card, /webhook\.test/);
  assert.match(card, /http_500/);
  assert.match(card, /receiver says no/);
  assert.match(card, /\d+ ms/);
  await shot(page, "deliveries", "#dlv-h");

  // Retry one: a third attempt.
  await page.click(`button[data-retry="${failed.id}"]`);
  await status(page, /queued again/);
  await until("a third attempt", async () => (await dlvs()).find((d) => d.id === failed.id && d.attemptCount === 3 && d.status === "failed"));

  // Filters: by status, and by time.
  await page.select("#df-status", "delivered");
  await page.click("#dlv-filter button[type=submit]");
  await page.waitForSelector("#dlv-list p.empty");
  await page.select("#df-status", "failed");
  await page.click("#dlv-filter button[type=submit]");
  await page.waitForSelector(`article[data-delivery="${failed.id}"]`);
  await page.$eval("#df-since", (e) => { e.value = "2099-01-01T00:00:00"; });
  await page.click("#dlv-filter button[type=submit]");
  await page.waitForSelector("#dlv-list p.empty");

  // Recover since an hour ago: the failed delivery goes again (a fourth attempt).
  const hourAgo = new Date(Date.now() - 3600e3);
  const local = new Date(hourAgo.getTime() - hourAgo.getTimezoneOffset() * 60e3).toISOString().slice(0, 19);
  await page.$eval("#rf-since", (e, v) => { e.value = v; }, local);
  await page.click("#recover-form button[type=submit]");
  await status(page, /^1 failed deliveries queued again/);
  await until("a fourth attempt", async () => (await dlvs()).find((d) => d.id === failed.id && d.attemptCount === 4));

  // Point it at a working endpoint, rotate the secret, send a test: the new secret signs it.
  await rowButton(page, s.id, "Edit");
  await fill(page, "#sf-endpoint", recv.url("/ok/acme"));
  await page.click("#sf-submit");
  await status(page, /updated/);
  assert.equal((await sub(s.id)).endpoint, recv.url("/ok/acme"));
  await rowButton(page, s.id, "Rotate secret");
  await status(page, /Secret rotated/);
  const rotated = await page.$eval("#secret-value", (e) => e.textContent);
  assert.notEqual(rotated, secret);
  assert.equal((await call("GET", `/client/events/subscriptions/${s.id}/secret`, undefined, token)).json.signingSecret, rotated);
  assert.match(await page.$eval("#secret-prev", (e) => e.textContent), /previous secret keeps signing until/);
  await rowButton(page, s.id, "Send test event");
  const hit = await until("the test event at /ok/acme", () => recv.got.find((g) => g.path === "/ok/acme"));
  assert.equal(hit.json.eventType, "webhook.test");
  assert.ok(signedWith(rotated, hit.headers, hit.body), "the rotated secret does not sign the delivery");
  await shot(page, "subscriptions", "#subs-h");

  // The access token is refreshed with the refresh token, and the new one is used.
  const before = page.auths.at(-1).auth;
  await page.evaluate(() => window.__longTimers.forEach((f) => f()));
  await until("a refresh", () => page.requested.some((u) => u.endsWith("/client/auth/token/refresh")));
  await until("a call with the new token", async () => {
    await page.click("#subs-refresh");
    await status(page, /refreshed/);
    return page.auths.at(-1).auth !== before;
  });

  // Delete.
  await rowButton(page, s.id, "Delete");
  await status(page, /deleted/);
  assert.equal((await call("GET", `/client/events/subscriptions/${s.id}`, undefined, token)).status, 404);
  await page.waitForFunction((id) => !document.querySelector(`tr[data-sub="${id}"]`), {}, s.id);

  await assertNoLeak(page, [acct.secret, token, ...page.auths.map((a) => a.auth.slice(7)), secret, rotated]);
  assert.deepEqual(page.errors, []);

  // Sign out forgets the tokens: the view is gone.
  await page.click("#signout");
  await status(page, /Signed out/);
  assert.equal(await page.$eval("#client-view", (e) => e.hidden), true);
  await page.close();
});

test("operator: accounts, labs, parties; bills created, completed and deleted, a lead converted", async () => {
  const page = await openPage();
  await signInAdmin(page);

  await fill(page, "#af-name", "Front desk CRM");
  await page.click("#acc-form button[type=submit]");
  await status(page, /Account cl_\w+ created/);
  const clientID = await page.$eval("#acc-secret-id", (e) => e.textContent);
  const clientSecret = await page.$eval("#acc-secret-value", (e) => e.textContent);
  assert.match(clientSecret, /^cs_/);
  await fill(page, "#lf-name", "Branch 2");
  await page.click("#lab-form button[type=submit]");
  await status(page, /Lab lab_\w+ created/);
  await page.select("#pf-kind", "organization");
  await fill(page, "#pf-name", "Dr. Rao");
  await page.click("#party-form button[type=submit]");
  await status(page, /Party org_\w+ created/);

  const acc = (await admin("GET", `/admin/accounts/${clientID}`)).account;
  assert.equal(acc.name, "Front desk CRM");
  const labs = (await admin("GET", `/admin/accounts/${clientID}/labs`)).labs;
  assert.deepEqual(labs.map((l) => l.name), ["Branch 2"]);
  const parties = (await admin("GET", `/admin/accounts/${clientID}/parties`)).parties;
  assert.deepEqual(parties.map((p) => [p.kind, p.name]), [["organization", "Dr. Rao"]]);
  assert.match(await page.$eval("#acc-table", (e) => e.textContent), /Front desk CRM/);
  assert.equal(await page.$eval("#bf-lab", (e) => e.value), labs[0].labID);

  // The integrator listens to every event of the lab.
  const token = await clientToken(clientID, clientSecret);
  const r = await call("POST", "/client/events/subscribe", {
    labID: labs[0].labID, protocol: "https", endpoint: recv.url("/ok/desk"),
    events: ["bill.created", "bill.completed", "bill.deleted", "report.completed", "lead.created", "booking.created"],
  }, token);
  assert.equal(r.status, 200, JSON.stringify(r.json));
  const at = (type, pred = () => true) => recv.got.filter((g) => g.path === "/ok/desk" && g.json.eventType === type && pred(g.json));

  // A bill with two reports, each completed in the page.
  await fill(page, "#bf-first", "Asha");
  await fill(page, "#bf-tests", "CBC, LDL");
  await page.click("#bill-form button[type=submit]");
  await status(page, /Bill bill_\w+ created/);
  const billID = await page.$eval("#bl-id", (e) => e.value);
  await page.waitForSelector(`article[data-bill="${billID}"]`);
  const reports = await page.$$eval("tr[data-report]", (rs) => rs.map((x) => x.dataset.report));
  assert.equal(reports.length, 2);
  await shot(page, "operator-bill", "#lab-side-h");
  for (const rep of reports) {
    await page.click(`button[data-complete="${rep}"]`);
    await status(page, new RegExp(`Report ${rep} completed`));
    await page.waitForFunction((id) => !document.querySelector(`button[data-complete="${id}"]`), {}, rep);
  }
  await status(page, /the bill is completed/);
  const bill = (await call("GET", `/client/bills/${billID}`, undefined, token)).json.bill;
  assert.equal(bill.billData.status, "completed");
  const ofBill = (j) => j.data.billID === billID;
  await until("bill.created", () => at("bill.created", ofBill).length === 1);
  await until("report.completed twice", () => at("report.completed", ofBill).length === 2);
  await until("bill.completed", () => at("bill.completed", ofBill).length === 1);

  // Another bill, deleted in the page.
  await fill(page, "#bf-tests", "TSH");
  await page.click("#bill-form button[type=submit]");
  await status(page, /Bill bill_\w+ created/);
  const second = await page.$eval("#bl-id", (e) => e.value);
  assert.notEqual(second, billID);
  await page.waitForSelector(`button[data-delete-bill="${second}"]`);
  await page.click(`button[data-delete-bill="${second}"]`);
  await status(page, /deleted/);
  await until("bill.deleted", () => at("bill.deleted", (j) => j.data.billID === second).length === 1);
  assert.equal((await call("GET", `/client/bills/${second}`, undefined, token)).json.bill.billData.status, "deleted");

  // A lead the integrator made, converted to a booking in the page.
  const lead = await call("POST", "/client/crm/lead/create", {
    branchID: labs[0].labID, integratorID: "INT-9", first_name: "Ravi", contact: "9876543210",
    age: 41, age_type: "year",
  }, token);
  assert.equal(lead.status, 200, JSON.stringify(lead.json));
  await fill(page, "#ld-id", lead.json.leadID);
  await page.$eval("#ld-at", (e) => { e.value = "2030-01-02T08:30"; });
  await page.click("#lead-form button[type=submit]");
  await status(page, /is now booking bkg_/);
  const booked = await until("booking.created", () => at("booking.created", (j) => j.data.leadID === lead.json.leadID)[0]);
  assert.equal(booked.json.data.bookingType, "home_collection");

  await assertNoLeak(page, [adminKey, clientSecret]);
  assert.deepEqual(page.errors, []);
  await page.close();
});

test("names and endpoints holding markup render as text, and no script runs", async () => {
  const a = await admin("POST", "/admin/accounts", { name: XSS_SCRIPT });
  const lab = await admin("POST", `/admin/accounts/${a.clientID}/labs`, { name: XSS_IMG });
  await admin("POST", `/admin/accounts/${a.clientID}/parties`, { kind: "organization", name: XSS_IMG });
  const token = await clientToken(a.clientID, a.clientSecret);
  const endpoint = recv.url('/markup/"><img/src=x/onerror=window.__xss=3><script>window.__xss=4</script>');
  const r = await call("POST", "/client/events/subscribe",
    { labID: lab.labID, protocol: "https", endpoint, events: ["lead.created"] }, token);
  assert.equal(r.status, 200, JSON.stringify(r.json));
  const stored = r.json.subscription.endpoint;

  const noScriptRan = async (page) => {
    const seen = await page.evaluate(() => ({
      flag: window.__xss === undefined ? null : window.__xss,
      imgs: document.querySelectorAll("img").length,
      scripts: [...document.scripts].map((s) => s.src.replace(location.origin, "")),
    }));
    assert.deepEqual(seen, { flag: null, imgs: 0, scripts: ["/console/console.js"] });
  };

  // The operator's view: the account's name, its lab's and its party's.
  const op = await openPage();
  await signInAdmin(op);
  const accText = await op.$eval(`tr[data-account="${a.clientID}"]`, (e) => e.textContent);
  assert.ok(accText.includes(XSS_SCRIPT), accText);
  await op.$eval(`tr[data-account="${a.clientID}"] button`, (b) => b.click());
  await op.waitForSelector(`li[data-lab="${lab.labID}"]`);
  assert.ok((await op.$eval("#acct-name", (e) => e.textContent)) === XSS_SCRIPT);
  assert.ok((await op.$eval(`li[data-lab="${lab.labID}"]`, (e) => e.textContent)).includes(XSS_IMG));
  assert.ok((await op.$eval("#acct-parties", (e) => e.textContent)).includes(XSS_IMG));
  await noScriptRan(op);
  assert.deepEqual(op.errors, []);
  await op.close();

  // The integrator's view: the lab's name, the endpoint and its answer. Signed in with the
  // keyboard alone: the skip link first, then the form, the focus always drawn.
  const page = await openPage();
  const focused = () => page.evaluate(() => {
    const e = document.activeElement;
    return { id: e.id || e.className, outline: getComputedStyle(e).outlineStyle };
  });
  await page.keyboard.press("Tab");
  assert.deepEqual(await focused(), { id: "skip", outline: "solid" });
  await page.keyboard.press("Tab");
  assert.deepEqual(await focused(), { id: "ci-id", outline: "solid" });
  await page.keyboard.type(a.clientID);
  await page.keyboard.press("Tab");
  assert.equal((await focused()).id, "ci-secret");
  await page.keyboard.type(a.clientSecret);
  await page.keyboard.press("Enter");
  await status(page, /Signed in/);
  const subID = r.json.subscription.id;
  await page.waitForSelector(`tr[data-sub="${subID}"]`);
  await rowButton(page, subID, "Send test event");
  await status(page, /Test event/);
  const dlv = await until("the answer with markup", async () => (await call("GET",
    `/client/events/subscriptions/${subID}/deliveries?status=failed`, undefined, token)).json.deliveries[0]);
  await rowButton(page, subID, "Deliveries");
  await page.waitForSelector(`article[data-delivery="${dlv.id}"]`);
  const answer = await page.$eval(`article[data-delivery="${dlv.id}"] td code`, (e) => e.textContent);
  assert.equal(answer, MARKUP_ANSWER);
  assert.ok((await page.$eval("#labs-table", (e) => e.textContent)).includes(XSS_IMG));
  const row = await page.$eval(`tr[data-sub="${r.json.subscription.id}"]`, (e) => e.textContent);
  assert.ok(row.includes(stored), `${row} lacks ${stored}`);
  await noScriptRan(page);
  assert.deepEqual(page.errors, []);
  await page.close();
});

test("screenshots for the docs at laptop and phone widths", { skip: !SHOTS && "LABHOOK_SCREENSHOTS not set" }, async () => {
  const acct = await makeAccount("Demo CRM", "City lab");
  const token = await clientToken(acct.clientID, acct.secret);
  for (const [ep, events] of [["/ok/demo", ["bill.created", "bill.completed", "report.completed"]],
    ["/fail/demo", ["lead.created", "booking.created"]]]) {
    const r = await call("POST", "/client/events/subscribe",
      { labID: acct.labID, protocol: "https", endpoint: recv.url(ep), events }, token);
    assert.equal(r.status, 200);
  }
  const phone = await openPage(390, 844);
  await signInClient(phone, acct);
  await phone.waitForSelector("tr[data-sub]");
  await shot(phone, "phone", "#subs-h");
  await phone.close();
  const op = await openPage(1280, 900);
  await signInAdmin(op);
  await shot(op, "operator");
  await op.close();
});
