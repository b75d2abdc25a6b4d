/* labhook console: the integrator's and the lab operator's views over the JSON API.
 *
 * Rules this file keeps (docs/console.md):
 * - credentials live in the variables of this closure only: never localStorage,
 *   sessionStorage, cookies or a URL; they go out in the Authorization header;
 * - every value from the API reaches the page as text (textContent, createElement via el()),
 *   never as markup;
 * - the access token is refreshed with the refresh token a minute before it expires, and
 *   once more when a call finds it expired.
 */
"use strict";
(function () {
  const EVENTS = ["bill.created", "bill.completed", "bill.deleted", "report.completed",
    "lead.created", "booking.created"];

  /* The session: {kind: "client", clientID, authToken, refreshToken, timer} or
   * {kind: "admin", key}; null when signed out. */
  let session = null;
  let labs = [];
  let subs = [];
  let currentDlvSub = null;
  let currentAccount = null;

  const $ = (id) => document.getElementById(id);

  /* An element with attributes and children; strings become text nodes, never markup. */
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "onclick") e.addEventListener("click", v);
      else if (k === "className") e.className = v;
      else e.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null) continue;
      e.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
    }
    return e;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function say(text) {
    $("alert").hidden = true;
    $("status").textContent = text;
  }

  function fail(err) {
    const a = $("alert");
    clear(a);
    a.appendChild(document.createTextNode(err.message));
    if (err.code) a.appendChild(el("span", { className: "code" }, " (" + err.code + (err.field ? ", " + err.field : "") + ")"));
    a.hidden = false;
    $("status").textContent = "";
  }

  class ApiError extends Error {
    constructor(status, body) {
      const e = (body && body.error) || {};
      super(e.message || "HTTP " + status);
      this.status = status;
      this.code = e.code;
      this.field = e.field;
    }
  }

  async function rawCall(method, path, body, auth) {
    const headers = { Accept: "application/json" };
    if (auth) headers.Authorization = "Bearer " + auth;
    const init = { method, headers, cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const r = await fetch(path, init);
    let j = null;
    try { j = await r.json(); } catch (e) { j = null; }
    if (!r.ok || !j || j.success === false) throw new ApiError(r.status, j);
    return j;
  }

  /* A call with the session's credentials; a client token found expired is refreshed once. */
  async function api(method, path, body) {
    if (!session) throw new ApiError(401, { error: { message: "not signed in" } });
    if (session.kind === "admin") return rawCall(method, path, body, session.key);
    const used = session.authToken;
    try {
      return await rawCall(method, path, body, used);
    } catch (e) {
      if (e.status !== 401 || e.code !== "invalid_token") throw e;
      /* Another call may have refreshed meanwhile: then only retry with its token. */
      if (session && session.authToken === used) await refresh();
      if (!session) throw e;
      return rawCall(method, path, body, session.authToken);
    }
  }

  function keepTokens(j) {
    session.authToken = j.authToken;
    session.refreshToken = j.refreshToken;
    clearTimeout(session.timer);
    const ms = Math.max(10, (j.expiresIn || 600) - 60) * 1000;
    session.timer = setTimeout(() => { refresh().catch(() => {}); }, ms);
  }

  /* One refresh at a time: a refresh token is single-use, and the service revokes the
   * whole family when one is used twice (parallel calls that all found the token expired
   * would otherwise each spend it). Every caller awaits the same refresh. */
  function refresh() {
    if (!session || session.kind !== "client") return Promise.reject(new ApiError(401, null));
    if (session.refreshing) return session.refreshing;
    const s = session;
    s.refreshing = (async () => {
      try {
        const j = await rawCall("POST", "/client/auth/token/refresh",
          { clientID: s.clientID, refreshToken: s.refreshToken });
        if (session === s) keepTokens(j);
      } catch (e) {
        if (session === s) signedOut(e);
        throw e;
      } finally {
        s.refreshing = null;
      }
    })();
    return s.refreshing;
  }

  function signedOut(e) {
    signOut();
    if (e) fail(new ApiError(401, { error: { message: "Your session ended; sign in again." } }));
  }

  function show(view) {
    for (const id of ["signin", "client-view", "admin-view"]) $(id).hidden = id !== view;
    $("session").hidden = view === "signin";
  }

  function signOut() {
    if (session && session.timer) clearTimeout(session.timer);
    session = null;
    labs = [];
    subs = [];
    currentDlvSub = null;
    currentAccount = null;
    for (const id of ["labs-table", "subs-table", "acc-table"]) clear($(id).tBodies[0]);
    for (const id of ["dlv-list", "bill-view", "acct-labs", "acct-parties"]) clear($(id));
    for (const id of ["secret-panel", "dlv-panel", "acct-panel", "acc-secret"]) $(id).hidden = true;
    $("secret-value").textContent = "";
    $("acc-secret-value").textContent = "";
    show("signin");
    say("Signed out.");
  }

  /* Runs fn for a form's submit (or a button's click) with errors shown, not thrown. */
  function guard(fn) {
    return async (ev) => {
      if (ev) ev.preventDefault();
      $("status").textContent = ""; /* what the last action said is not this one's answer */
      try { await fn(ev); } catch (e) { fail(e); }
    };
  }

  /* Every item of a paged list (docs/api.md: limit and cursor), following nextCursor. */
  async function listAll(path, key) {
    const all = [];
    for (let cursor = ""; ;) {
      const j = await api("GET", path + "?limit=500" + (cursor ? "&cursor=" + encodeURIComponent(cursor) : ""));
      all.push(...(j[key] || []));
      if (!j.nextCursor) return all;
      cursor = j.nextCursor;
    }
  }

  function localToRfc3339(v) {
    return v ? new Date(v).toISOString().replace(/\.\d{3}Z$/, "Z") : "";
  }

  /* ---- integrator ---- */

  async function clientSignIn() {
    const clientID = $("ci-id").value.trim();
    const j = await rawCall("POST", "/client/auth/token", { clientID, clientSecret: $("ci-secret").value });
    $("ci-secret").value = "";
    session = { kind: "client", clientID };
    keepTokens(j);
    $("who").textContent = "Integrator " + clientID;
    show("client-view");
    await loadLabs();
    await loadSubs();
    say("Signed in.");
    $("main").focus();
  }

  async function loadLabs() {
    const j = await api("GET", "/client/labs");
    labs = j.labs || [];
    const tb = $("labs-table").tBodies[0];
    clear(tb);
    const sel = $("sf-lab");
    clear(sel);
    for (const l of labs) {
      tb.appendChild(el("tr", {}, el("td", {}, el("code", {}, l.labID)), el("td", {}, l.name)));
      sel.appendChild(el("option", { value: l.labID }, l.name + " (" + l.labID + ")"));
    }
    if (!labs.length) tb.appendChild(el("tr", {}, el("td", { colspan: 2 }, "No labs yet.")));
  }

  function labName(id) {
    const l = labs.find((x) => x.labID === id);
    return l ? l.name : id;
  }

  /* Failed attempts since the last successful one, newest first across deliveries. */
  function failureStreak(deliveries) {
    let n = 0;
    for (const d of deliveries) {
      const at = (d.attempts || []).slice().sort((a, b) => b.attempt - a.attempt);
      for (const a of at) {
        if (a.statusCode >= 200 && a.statusCode < 300) return n;
        n++;
      }
    }
    return n;
  }

  async function loadSubs() {
    subs = await listAll("/client/events/subscriptions", "subscriptions");
    const streaks = await Promise.all(subs.map((s) =>
      api("GET", "/client/events/subscriptions/" + encodeURIComponent(s.id) + "/deliveries?limit=50")
        .then((j) => failureStreak(j.deliveries || []), () => null)));
    const tb = $("subs-table").tBodies[0];
    clear(tb);
    subs.forEach((s, i) => tb.appendChild(subRow(s, streaks[i])));
    if (!subs.length) tb.appendChild(el("tr", {}, el("td", { colspan: 6 }, "No subscriptions yet.")));
  }

  function subRow(s, streak) {
    const party = s.corporateUser || s.organization;
    const btn = (label, fn) => el("button", { type: "button", "data-sub": s.id, onclick: guard(fn) }, label);
    const paused = s.status === "paused";
    return el("tr", { "data-sub": s.id },
      el("td", { className: "endpoint", "data-label": "Endpoint" }, el("span", { className: "break" }, s.endpoint),
        el("br"), el("small", {}, el("code", {}, s.id))),
      el("td", { "data-label": "Lab" }, labName(s.labID), party ? el("small", {}, el("br"), "party ", party) : null),
      el("td", { "data-label": "Events" }, el("ul", { className: "plain" }, s.events.map((e) => el("li", {}, e)))),
      el("td", { "data-label": "Status" }, el("span", { className: "badge " + s.status }, s.status)),
      el("td", { className: "num", "data-label": "Failure streak" }, streak === null ? "?" : String(streak)),
      el("td", { className: "row-actions", "data-label": "Actions" },
        btn("Edit", () => editSub(s)),
        s.status === "disabled" ? btn("Enable", () => setStatus(s, "active"))
          : btn(paused ? "Resume" : "Pause", () => setStatus(s, paused ? "active" : "paused")),
        btn("Show secret", () => showSecret(s, false)),
        btn("Rotate secret", () => showSecret(s, true)),
        btn("Send test event", () => sendTest(s)),
        btn("Deliveries", () => openDeliveries(s)),
        btn("Delete", () => deleteSub(s))));
  }

  function eventBoxes() {
    const fs = $("sf-events");
    for (const e of EVENTS) {
      const id = "sf-ev-" + e.replace(".", "-");
      fs.appendChild(el("div", { className: "check" },
        el("input", { type: "checkbox", id, value: e }), el("label", { for: id }, e)));
    }
  }

  function checkedEvents() {
    return EVENTS.filter((e) => $("sf-ev-" + e.replace(".", "-")).checked);
  }

  function resetSubForm() {
    $("sub-form").reset();
    $("sf-id").value = "";
    $("sub-form-h").textContent = "New subscription";
    $("sf-submit").textContent = "Create subscription";
    $("sf-cancel").hidden = true;
    for (const id of ["sf-lab-field", "sf-party-kind-field", "sf-party-field"]) $(id).hidden = false;
  }

  function editSub(s) {
    resetSubForm();
    $("sf-id").value = s.id;
    $("sf-endpoint").value = s.endpoint;
    for (const e of EVENTS) $("sf-ev-" + e.replace(".", "-")).checked = s.events.includes(e);
    $("sub-form-h").textContent = "Edit subscription " + s.id;
    $("sf-submit").textContent = "Save changes";
    $("sf-cancel").hidden = false;
    /* The lab and party of a subscription do not change. */
    for (const id of ["sf-lab-field", "sf-party-kind-field", "sf-party-field"]) $(id).hidden = true;
    $("sf-endpoint").focus();
  }

  async function saveSub() {
    const id = $("sf-id").value;
    const body = { events: checkedEvents(), endpoint: $("sf-endpoint").value.trim() };
    const token = $("sf-token").value;
    let msg;
    if (token) body.authToken = token;
    if (id) {
      await api("PATCH", "/client/events/subscriptions/" + encodeURIComponent(id), body);
      msg = "Subscription " + id + " updated.";
    } else {
      body.labID = $("sf-lab").value;
      body.protocol = "https";
      const kind = $("sf-party-kind").value;
      if (kind) body[kind] = $("sf-party").value.trim();
      const j = await api("POST", "/client/events/subscribe", body);
      msg = "Subscription " + j.subscription.id + " created. Its signing secret: use \u201cShow secret\u201d.";
    }
    resetSubForm();
    await loadSubs();
    say(msg);
  }

  async function setStatus(s, status) {
    await api("PATCH", "/client/events/subscriptions/" + encodeURIComponent(s.id), { status });
    await loadSubs();
    say("Subscription " + s.id + " is " + status + ".");
  }

  async function deleteSub(s) {
    if (!window.confirm("Delete the subscription to " + s.endpoint + "? Its pending deliveries are cancelled.")) return;
    await api("DELETE", "/client/events/subscriptions/" + encodeURIComponent(s.id));
    if (currentDlvSub === s.id) $("dlv-panel").hidden = true;
    await loadSubs();
    say("Subscription " + s.id + " deleted.");
  }

  async function showSecret(s, rotate) {
    const path = "/client/events/subscriptions/" + encodeURIComponent(s.id) + "/secret";
    const j = rotate ? await api("POST", path + "/rotate") : await api("GET", path);
    $("secret-sub").textContent = s.id;
    $("secret-value").textContent = j.signingSecret;
    $("secret-prev").textContent = j.previousSecretExpiresAt
      ? "The previous secret keeps signing until " + j.previousSecretExpiresAt + "." : "";
    $("secret-panel").hidden = false;
    say(rotate ? "Secret rotated: the new one signs from now on." : "Secret shown.");
    $("secret-value").scrollIntoView({ block: "nearest" });
  }

  async function sendTest(s) {
    const j = await api("POST", "/client/events/subscriptions/" + encodeURIComponent(s.id) + "/test");
    say("Test event " + j.eventID + " queued.");
  }

  async function openDeliveries(s) {
    currentDlvSub = s.id;
    $("dlv-sub").textContent = s.id + " \u2192 " + s.endpoint;
    $("dlv-panel").hidden = false;
    await loadDeliveries();
    $("dlv-h").scrollIntoView({ block: "start" });
  }

  async function loadDeliveries() {
    const q = new URLSearchParams({ limit: "50" });
    if ($("df-status").value) q.set("status", $("df-status").value);
    if ($("df-since").value) q.set("since", localToRfc3339($("df-since").value));
    const j = await api("GET", "/client/events/subscriptions/" + encodeURIComponent(currentDlvSub) + "/deliveries?" + q);
    const list = $("dlv-list");
    clear(list);
    const ds = j.deliveries || [];
    if (!ds.length) list.appendChild(el("p", { className: "empty" }, "No deliveries match."));
    for (const d of ds) list.appendChild(deliveryCard(d));
  }

  function deliveryCard(d) {
    const rows = (d.attempts || []).map((a) => el("tr", {},
      el("td", { className: "num" }, String(a.attempt)),
      el("td", {}, a.at || ""),
      el("td", { className: "num" }, a.statusCode === undefined ? "\u2013" : String(a.statusCode)),
      el("td", { className: "num" }, a.durationMs === undefined ? "" : a.durationMs + " ms"),
      el("td", {}, a.error || ""),
      el("td", {}, el("code", { className: "break" }, a.response || ""))));
    return el("article", { className: "delivery", "data-delivery": d.id },
      el("header", {},
        el("h4", {}, d.eventType, " ", el("span", { className: "badge " + d.status }, d.status)),
        el("p", {}, el("code", {}, d.id), " \u00b7 event ", el("code", {}, d.eventID),
          " \u00b7 created " + d.createdAt + " \u00b7 " + d.attemptCount + " attempt(s)",
          d.nextAttemptAt ? " \u00b7 next " + d.nextAttemptAt : ""),
        el("button", { type: "button", "data-retry": d.id, onclick: guard(() => retry(d)) }, "Retry now")),
      rows.length ? el("div", { className: "scroll" }, el("table", {},
        el("caption", { className: "visually-hidden" }, "Attempts of " + d.id),
        el("thead", {}, el("tr", {}, ["#", "At", "Status", "Duration", "Error", "Response"].map((h) => el("th", { scope: "col" }, h)))),
        el("tbody", {}, rows))) : el("p", { className: "empty" }, "Not tried yet."));
  }

  async function retry(d) {
    await api("POST", "/client/events/deliveries/" + encodeURIComponent(d.id) + "/retry");
    await loadDeliveries();
    say("Delivery " + d.id + " queued again.");
  }

  async function recover() {
    const since = localToRfc3339($("rf-since").value);
    const j = await api("POST", "/client/events/subscriptions/" + encodeURIComponent(currentDlvSub) + "/recover", { since });
    await loadDeliveries();
    say(j.queued + " failed deliveries queued again.");
  }

  /* ---- lab operator ---- */

  async function adminSignIn() {
    const key = $("ad-key").value.trim();
    $("ad-key").value = "";
    session = { kind: "admin", key };
    try {
      await loadAccounts();
    } catch (e) {
      session = null;
      throw e;
    }
    $("who").textContent = "Lab operator";
    show("admin-view");
    say("Signed in.");
    $("main").focus();
  }

  async function loadAccounts() {
    const all = await listAll("/admin/accounts", "accounts");
    const tb = $("acc-table").tBodies[0];
    clear(tb);
    for (const a of all) {
      tb.appendChild(el("tr", { "data-account": a.clientID },
        el("td", {}, el("code", {}, a.clientID)), el("td", {}, a.name), el("td", {}, a.mode),
        el("td", {}, a.createdAt),
        el("td", {}, el("button", { type: "button", onclick: guard(() => openAccount(a.clientID)) }, "Open"))));
    }
    if (!all.length) tb.appendChild(el("tr", {}, el("td", { colspan: 5 }, "No accounts yet.")));
  }

  async function createAccount() {
    const j = await api("POST", "/admin/accounts", { name: $("af-name").value, mode: $("af-mode").value });
    $("acc-form").reset();
    $("acc-secret-id").textContent = j.clientID;
    $("acc-secret-value").textContent = j.clientSecret;
    $("acc-secret").hidden = false;
    await loadAccounts();
    await openAccount(j.clientID);
    say("Account " + j.clientID + " created.");
  }

  async function openAccount(id) {
    const j = await api("GET", "/admin/accounts/" + encodeURIComponent(id));
    const a = j.account;
    currentAccount = a.clientID;
    $("acct-name").textContent = a.name;
    $("acct-id").textContent = a.clientID;
    const [lj, pj] = await Promise.all([
      api("GET", "/admin/accounts/" + encodeURIComponent(id) + "/labs"),
      api("GET", "/admin/accounts/" + encodeURIComponent(id) + "/parties")]);
    const ul = $("acct-labs");
    clear(ul);
    for (const l of lj.labs || []) ul.appendChild(el("li", { "data-lab": l.labID }, l.name, " ", el("code", {}, l.labID)));
    if (!(lj.labs || []).length) ul.appendChild(el("li", {}, "No labs yet."));
    const pl = $("acct-parties");
    clear(pl);
    for (const p of pj.parties || []) pl.appendChild(el("li", { "data-party": p.partyID }, p.name, " ", el("small", {}, p.kind), " ", el("code", {}, p.partyID)));
    if (!(pj.parties || []).length) pl.appendChild(el("li", {}, "No parties yet."));
    $("acct-panel").hidden = false;
    $("bf-client").value = a.clientID;
    if ((lj.labs || []).length) $("bf-lab").value = lj.labs[0].labID;
  }

  async function createLab() {
    const j = await api("POST", "/admin/accounts/" + encodeURIComponent(currentAccount) + "/labs", { name: $("lf-name").value });
    $("lab-form").reset();
    await openAccount(currentAccount);
    $("bf-lab").value = j.labID;
    say("Lab " + j.labID + " created.");
  }

  async function createParty() {
    const j = await api("POST", "/admin/accounts/" + encodeURIComponent(currentAccount) + "/parties",
      { kind: $("pf-kind").value, name: $("pf-name").value });
    $("party-form").reset();
    await openAccount(currentAccount);
    say("Party " + j.partyID + " created.");
  }

  async function createBill() {
    const body = {
      clientID: $("bf-client").value.trim(),
      labID: $("bf-lab").value.trim(),
      integrator_id: $("bf-integrator").value,
      patient_details: {
        first_name: $("bf-first").value, gender: $("bf-gender").value,
        age: Number($("bf-age").value), age_type: $("bf-age-type").value,
      },
      unmapped_tests: $("bf-tests").value.split(",").map((t) => t.trim()).filter(Boolean),
    };
    if ($("bf-cu").value.trim()) body.corporateUser = $("bf-cu").value.trim();
    if ($("bf-org").value.trim()) body.referredOrganization = $("bf-org").value.trim();
    const j = await api("POST", "/lab/bills", body);
    $("bl-id").value = j.billID;
    await showBill(j.billID);
    say("Bill " + j.billID + " created.");
  }

  async function showBill(id) {
    const j = await api("GET", "/lab/bills/" + encodeURIComponent(id));
    const b = j.bill;
    const view = $("bill-view");
    clear(view);
    const reports = (b.billData && b.billData.testData) || [];
    view.appendChild(el("article", { className: "bill", "data-bill": b.billID },
      el("h5", {}, "Bill ", el("code", {}, b.billID), " ", el("span", { className: "badge " + b.billData.status }, b.billData.status)),
      el("p", {}, "Account ", el("code", {}, b.clientID), " \u00b7 lab ", el("code", {}, b.labID),
        " \u00b7 patient ", (b.patient_details && b.patient_details.first_name) || ""),
      el("div", { className: "scroll" }, el("table", {},
        el("caption", { className: "visually-hidden" }, "Reports of " + b.billID),
        el("thead", {}, el("tr", {}, ["Report", "Name", "Status", "Action"].map((h) => el("th", { scope: "col" }, h)))),
        el("tbody", {}, reports.map((r) => el("tr", { "data-report": r._id },
          el("td", {}, el("code", {}, r._id)), el("td", {}, r.name),
          el("td", {}, el("span", { className: "badge " + r.status }, r.status)),
          el("td", {}, r.status === "pending" && b.billData.status !== "deleted"
            ? el("button", { type: "button", "data-complete": r._id, onclick: guard(() => completeReport(b.billID, r._id)) }, "Complete report")
            : "")))))),
      b.billData.status === "deleted" ? null
        : el("button", { type: "button", className: "danger", "data-delete-bill": b.billID, onclick: guard(() => deleteBill(b.billID)) }, "Delete bill")));
  }

  async function completeReport(bill, report) {
    const j = await api("POST", "/lab/bills/" + encodeURIComponent(bill) + "/reports/" + encodeURIComponent(report) + "/complete");
    await showBill(bill);
    say("Report " + report + " completed; the bill is " + j.billStatus + ".");
  }

  async function deleteBill(bill) {
    if (!window.confirm("Delete bill " + bill + "? It takes no more changes afterwards.")) return;
    await api("DELETE", "/lab/bills/" + encodeURIComponent(bill));
    await showBill(bill);
    say("Bill " + bill + " deleted.");
  }

  async function convertLead() {
    const id = $("ld-id").value.trim();
    const j = await api("POST", "/lab/leads/" + encodeURIComponent(id) + "/convert",
      { bookingType: $("ld-type").value, scheduledAt: localToRfc3339($("ld-at").value) });
    say("Lead " + j.leadID + " is now booking " + j.bookingID + ".");
  }

  /* ---- wiring ---- */

  function init() {
    eventBoxes();
    $("client-signin").addEventListener("submit", guard(clientSignIn));
    $("admin-signin").addEventListener("submit", guard(adminSignIn));
    $("signout").addEventListener("click", () => signOut());
    $("subs-refresh").addEventListener("click", guard(async () => {
      await loadSubs();
      say("Subscriptions refreshed.");
    }));
    $("sub-form").addEventListener("submit", guard(saveSub));
    $("sf-cancel").addEventListener("click", () => resetSubForm());
    $("secret-hide").addEventListener("click", () => {
      $("secret-value").textContent = "";
      $("secret-panel").hidden = true;
    });
    $("dlv-filter").addEventListener("submit", guard(loadDeliveries));
    $("recover-form").addEventListener("submit", guard(recover));
    $("acc-form").addEventListener("submit", guard(createAccount));
    $("lab-form").addEventListener("submit", guard(createLab));
    $("party-form").addEventListener("submit", guard(createParty));
    $("bill-form").addEventListener("submit", guard(createBill));
    $("bill-find").addEventListener("submit", guard(() => showBill($("bl-id").value.trim())));
    $("lead-form").addEventListener("submit", guard(convertLead));
    show("signin");
  }

  document.addEventListener("DOMContentLoaded", init);
})();
