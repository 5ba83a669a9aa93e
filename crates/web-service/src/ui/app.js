// Ferry's dashboard: pages drawn from the HTTP API's JSON (docs/http-api.md), with the
// token kept in this tab's sessionStorage. Routes: #/endpoints, #/endpoint/<id>,
// #/sessions, #/session/<id>[?offset=N], #/task/<id>. A session's page asks for its O(1) document
// and one page of its tasks, never all of them. Pages that show running work are drawn
// again when it moves: they listen on the WebSocket (/v1/ws: a session's `progress`, a
// task's events; the token goes as the subprotocol ferry.bearer.<hex>, since a browser
// sets no headers on a socket) and ask the API again after a change. The endpoints page,
// and any page whose socket cannot open, asks again every second.
"use strict";

const main = document.getElementById("main");
const TOKEN = "ferry-token";
const PAGE = 50;
let timer = null;
// The page's socket and what it is subscribed to (JSON), while a page listens on one.
let socket = null;
let listening = null;

const token = () => sessionStorage.getItem(TOKEN);

async function api(path) {
  const r = await fetch(path, { headers: { Authorization: `Bearer ${token()}` } });
  const body = await r.json().catch(() => ({}));
  if (r.status === 401) {
    sessionStorage.removeItem(TOKEN);
    route();
    throw new Error("the token was refused");
  }
  if (!r.ok) throw new Error(body.message || `${r.status} ${r.statusText}`);
  return body;
}

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") el.className = v;
    // Through the CSSOM: the page's policy refuses style attributes in markup.
    else if (k === "style") el.style.cssText = v;
    else el.setAttribute(k, v);
  }
  for (const c of children.flat()) el.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
  return el;
}

const ago = (secs) => {
  if (secs == null) return "never";
  const d = Date.now() / 1000 - secs;
  return d < 60 ? `${Math.max(0, Math.round(d))} s ago` : d < 3600 ? `${Math.round(d / 60)} min ago` : `${Math.round(d / 3600)} h ago`;
};
const when = (secs) => (secs ? new Date(secs * 1000).toLocaleString() : "");
const took = (s) => (s < 1 ? `${(s * 1000).toFixed(1)} ms` : `${s.toFixed(2)} s`);
const link = (href, text) => h("a", { href }, text);

function show(...nodes) {
  main.replaceChildren(...nodes);
}

function failed(e) {
  show(h("p", { class: "error" }, `Could not load this page: ${e.message}`));
}

function progress(doc) {
  const c = doc.counts, size = doc.size || 1;
  const pct = (n) => `${(100 * (n || 0)) / size}%`;
  const running = (c.running || 0) + (c["waiting-for-launch"] || 0);
  return h(
    "div",
    { class: "bar", title: JSON.stringify(c) },
    h("span", { class: "s", style: `width:${pct(c.success)}` }),
    h("span", { class: "f", style: `width:${pct(c.failed)}` }),
    h("span", { class: "r", style: `width:${pct(running)}` }),
  );
}

function done(doc) {
  const finished = (doc.counts.success || 0) + (doc.counts.failed || 0);
  return `${Math.floor((100 * finished) / (doc.size || 1))}% (${finished.toLocaleString()}/${doc.size.toLocaleString()})`;
}

// ---- pages ---------------------------------------------------------------------------

async function endpoints() {
  const list = await api("/v1/endpoints");
  const rows = list.map((e) => {
    const d = e.details || {};
    const blocks = ((d.provider || {}).blocks || []).map((b) => `${b.block_id}: ${b.state}`).join(", ");
    return h(
      "tr", {},
      h("td", {}, h("div", {}, link(`#/endpoint/${e.endpoint_id}`, e.name)), h("div", { class: "id muted" }, e.endpoint_id)),
      h("td", { class: `status ${e.status}` }, e.status),
      h("td", {}, ago(e.last_heartbeat)),
      h("td", {}, `${d.managers ?? 0}`),
      h("td", {}, `${(d.total_workers ?? 0) - (d.idle_workers ?? 0)} busy of ${d.total_workers ?? 0}`),
      h("td", {}, `${d.pending_tasks ?? 0} waiting, ${d.outstanding_tasks ?? 0} at managers`),
      h("td", { class: "muted" }, blocks),
    );
  });
  show(
    h("h1", {}, "Endpoints"),
    rows.length
      ? h("table", {}, h("tr", {}, ...["Endpoint", "Status", "Heartbeat", "Managers", "Workers", "Tasks", "Blocks"].map((t) => h("th", {}, t))), ...rows)
      : h("p", { class: "muted" }, "No endpoints yet: start one with ferry-endpoint start NAME."),
  );
  return true;
}

const GiB = 1024 ** 3;

function table(headings, rows, empty) {
  return rows.length
    ? h("table", {}, h("tr", {}, ...headings.map((t) => h("th", {}, t))), ...rows)
    : h("p", { class: "muted" }, empty);
}

async function endpoint(id) {
  const e = await api(`/v1/endpoints/${id}`);
  const d = e.details || {};
  const provider = d.provider || {};
  const seconds = (micros) => (micros ? micros / 1e6 : null);
  // A block's tasks as of this heartbeat, from its managers (the provider's own count
  // is as of its last scaling pass).
  const held = {};
  for (const m of d.manager_loads || []) if (m.block_id) held[m.block_id] = (held[m.block_id] || 0) + m.tasks;
  const blocks = (provider.blocks || []).map((b) =>
    h(
      "tr", {},
      h("td", {}, b.block_id), h("td", { class: "id" }, b.job_id || ""),
      h("td", { class: `status ${b.state}` }, b.state), h("td", {}, `${b.nodes}`),
      h("td", {}, `${b.managers}`), h("td", {}, `${d.manager_loads ? held[b.block_id] || 0 : b.tasks}`),
      h("td", {}, ago(seconds(b.submitted_at))), h("td", {}, b.ended_at ? ago(seconds(b.ended_at)) : ""),
      h("td", { class: "muted" }, b.reason || ""),
    ),
  );
  const managers = (d.manager_loads || []).map((m) =>
    h(
      "tr", {},
      h("td", {}, h("div", {}, m.hostname), h("div", { class: "id muted" }, m.manager_id)),
      h("td", {}, m.block_id || ""),
      h("td", {}, `${m.tasks} of ${m.workers}`),
      h("td", {}, `${m.cores} cores, ${(m.memory_bytes / GiB).toFixed(1)} GiB${m.gpus ? `, ${m.gpus} GPUs` : ""}`),
      h("td", { class: "muted" }, (m.tags || []).join(", ")),
      h("td", {}, m.draining ? "draining" : ""),
    ),
  );
  show(
    h("h1", {}, "Endpoint ", e.name),
    h("p", {}, h("span", { class: `status ${e.status}`, id: "endpoint-status" }, e.status), ` · last heartbeat ${ago(e.last_heartbeat)} · `, h("span", { class: "id" }, e.endpoint_id)),
    h("p", { class: "muted" }, `${provider.kind || "no"} provider · ${d.managers ?? 0} managers · ${(d.total_workers ?? 0) - (d.idle_workers ?? 0)} of ${d.total_workers ?? 0} workers busy · ${d.pending_tasks ?? 0} tasks waiting, ${d.outstanding_tasks ?? 0} at managers`),
    provider.scaling ? h("p", { class: "error" }, `Scaling holds back: ${provider.scaling}`) : "",
    h("h2", {}, "Blocks"),
    table(["Block", "Job", "State", "Nodes", "Managers", "Tasks", "Submitted", "Ended", "Why"], blocks, "No blocks."),
    h("h2", {}, "Managers"),
    h("div", { id: "managers" }, table(["Host", "Block", "Tasks", "Node", "Tags", ""], managers, "No managers connected.")),
  );
  return true;
}

async function sessions() {
  const { sessions } = await api("/v1/sessions?limit=50");
  const rows = sessions.map((s) =>
    h(
      "tr", {},
      h("td", {}, link(`#/session/${s.session_id}`, s.session_id)),
      h("td", { class: `status ${s.status}` }, s.status),
      h("td", {}, progress(s)),
      h("td", {}, done(s)),
      h("td", {}, `${s.counts.failed || 0}`),
      h("td", { class: "muted" }, when(s.created_at)),
    ),
  );
  show(
    h("h1", {}, "Sessions"),
    rows.length
      ? h("table", {}, h("tr", {}, ...["Session", "Status", "Progress", "Done", "Failed", "Created"].map((t) => h("th", {}, t))), ...rows)
      : h("p", { class: "muted" }, "No sessions yet."),
  );
  const running = sessions.filter((s) => s.pending).map((s) => s.session_id);
  return running.length ? { sessions: running } : false;
}

async function session(id, offset) {
  const doc = await api(`/v1/sessions/${id}`);
  const page = await api(`/v1/sessions/${id}/tasks?offset=${offset}&limit=${PAGE}`);
  const counts = Object.entries(doc.counts).filter(([, n]) => n).map(([s, n]) => `${s} ${n.toLocaleString()}`).join(" · ");
  const rows = page.tasks.map((t) =>
    h("tr", {}, h("td", {}, link(`#/task/${t.task_id}`, t.task_id)), h("td", { class: `status ${t.status}` }, t.status), h("td", {}, `${t.attempt}`)),
  );
  const pager = h(
    "div", { class: "pager" },
    offset > 0 ? link(`#/session/${id}?offset=${Math.max(0, offset - PAGE)}`, "← previous") : "",
    h("span", { class: "muted" }, `tasks ${offset + 1}–${Math.min(offset + PAGE, doc.size)} of ${doc.size.toLocaleString()}`),
    page.next_offset != null ? link(`#/session/${id}?offset=${page.next_offset}`, "next →") : "",
  );
  show(
    h("h1", {}, "Session ", h("span", { class: "id" }, id)),
    h("p", {}, h("span", { class: `status ${doc.status}`, id: "session-status" }, doc.status), doc.reason ? ` (${doc.reason})` : "", " · endpoint ", h("span", { class: "id" }, doc.endpoint_id)),
    h("div", { class: "pager" }, progress(doc), h("strong", { id: "session-done" }, done(doc))),
    h("p", { class: "muted" }, counts),
    h("h2", {}, "Tasks"),
    pager,
    h("table", {}, h("tr", {}, h("th", {}, "Task"), h("th", {}, "Status"), h("th", {}, "Attempt")), ...rows),
  );
  return doc.pending ? { sessions: [id] } : false;
}

function timeline(history) {
  if (!history.length) return h("p", { class: "muted" }, "No steps yet.");
  const start = history[0].at;
  const spans = history.map((s, i) => (i + 1 < history.length ? history[i + 1].at - s.at : 0));
  const longest = Math.max(...spans, 1e-6);
  return h(
    "div", { class: "timeline", id: "timeline" },
    ...history.map((s, i) =>
      h(
        "div", { class: `step ${s.state}` },
        h("span", { class: "muted" }, `+${took(s.at - start)}`),
        h("span", { class: "status" }, s.state + (s.reason ? ` (${s.reason})` : "")),
        h("span", {}, `${s.by} · #${s.attempt}`),
        h("span", {}, i + 1 < history.length ? took(spans[i]) : ""),
        i + 1 < history.length ? h("div", { class: "len", style: `width:${(100 * spans[i]) / longest}%` }) : h("span"),
      ),
    ),
  );
}

async function task(id) {
  const t = await api(`/v1/tasks/${id}`);
  const parts = [
    h("h1", {}, "Task ", h("span", { class: "id" }, id)),
    h("p", {}, h("span", { class: `status ${t.status}`, id: "task-status" }, t.status), ` · attempt ${t.attempt} · session `, link(`#/session/${t.batch_id}`, t.batch_id)),
    h("p", { class: "muted" }, `function ${t.function_id} · endpoint ${t.endpoint_id}`),
  ];
  if (t.waiting) parts.push(h("p", {}, `Waiting: ${t.waiting}`));
  parts.push(h("h2", {}, "Timeline"), timeline(t.history || []));
  if (t.exception) parts.push(h("h2", {}, "Exception"), h("pre", { id: "traceback" }, t.exception));
  if (t.result != null) parts.push(h("h2", {}, "Result"), h("p", { class: "muted" }, `${t.result.length} characters, serialized (the SDK's get_result reads it)`));
  for (const stream of ["stdout", "stderr"]) if (t[stream]) parts.push(h("h2", {}, stream), h("pre", {}, t[stream]));
  show(...parts);
  return t.pending ? { tasks: [id] } : false;
}

// ---- live updates --------------------------------------------------------------------

function hex(text) {
  return [...new TextEncoder().encode(text)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

function quiet() {
  if (socket) {
    socket.onclose = null;
    socket.close();
  }
  socket = null;
  listening = null;
  document.body.dataset.live = "";
}

// Subscribes to `want` ({sessions} or {tasks}) and calls `redraw` (at most every 200 ms)
// when it moves; calls `poll` instead if the socket cannot serve.
function listen(want, redraw, poll) {
  const key = JSON.stringify(want);
  if (socket && listening === key) return;
  quiet();
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/v1/ws`;
  const s = new WebSocket(url, ["ferry.v1", `ferry.bearer.${hex(token())}`]);
  socket = s;
  listening = key;
  let soon = null;
  const fallBack = () => {
    if (socket !== s) return;
    quiet();
    document.body.dataset.live = "polling";
    poll();
  };
  s.onopen = () => s.send(JSON.stringify({ op: "subscribe", progress: true, ...want }));
  s.onmessage = (m) => {
    const message = JSON.parse(m.data);
    if (message.type === "error") return fallBack();
    if (message.type === "subscribed") {
      document.body.dataset.live = "socket";
      return;
    }
    if (!soon) soon = setTimeout(() => { soon = null; if (socket === s) redraw(); }, 200);
  };
  s.onclose = fallBack;
}

// ---- routing -------------------------------------------------------------------------

async function route() {
  clearTimeout(timer);
  quiet();
  document.getElementById("logout").hidden = !token();
  if (!token()) {
    show(document.getElementById("login").content.cloneNode(true));
    document.getElementById("login-form").onsubmit = login;
    return;
  }
  const [path, query] = (location.hash.slice(1) || "/sessions").split("?");
  const parts = path.split("/").filter(Boolean);
  const offset = Number(new URLSearchParams(query).get("offset") || 0);
  const page =
    parts[0] === "endpoints" ? () => endpoints()
    : parts[0] === "endpoint" ? () => endpoint(parts[1])
    : parts[0] === "session" ? () => session(parts[1], offset)
    : parts[0] === "task" ? () => task(parts[1])
    : () => sessions();
  const here = location.hash;
  // A page returns what to listen for ({sessions} or {tasks}), true to be asked again
  // in a second, or false when nothing on it moves any more.
  const draw = async () => {
    let again = false;
    try {
      again = await page();
    } catch (e) {
      failed(e);
    }
    if (location.hash !== here) return;
    const poll = () => { timer = setTimeout(draw, 1000); };
    if (again && typeof again === "object" && document.body.dataset.live !== "polling") listen(again, draw, poll);
    else if (again) {
      if (typeof again !== "object") quiet();
      poll();
    } else quiet();
  };
  await draw();
}

async function login(event) {
  event.preventDefault();
  const value = document.getElementById("token").value.trim();
  const r = await fetch("/v1/whoami", { headers: { Authorization: `Bearer ${value}` } });
  if (!r.ok) {
    document.getElementById("login-error").textContent = "That token was refused.";
    return;
  }
  sessionStorage.setItem(TOKEN, value);
  route();
}

document.getElementById("logout").onclick = () => {
  sessionStorage.removeItem(TOKEN);
  route();
};

document.getElementById("search").onsubmit = async (event) => {
  event.preventDefault();
  const id = document.getElementById("search-id").value.trim();
  if (!id) return;
  const isTask = await fetch(`/v1/tasks/${id}`, { headers: { Authorization: `Bearer ${token()}` } }).then((r) => r.ok);
  location.hash = isTask ? `#/task/${id}` : `#/session/${id}`;
};

window.addEventListener("hashchange", route);
route();
