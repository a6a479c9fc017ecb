"use strict";
// The commissioning page: reads /api/state every 2 s, draws it, and runs the check and scans.
// Text in English or Chinese, following the browser's language.

const TEXT = {
  en: {
    title: "Gateway", login: "Log in", logout: "Log out", password: "password", today: "Today",
    actions: "Commissioning", run_check: "Run the check", bus: "Bus", units: "Units", scan: "Scan",
    site: "Site", software: "Software", clock: "Clock", synced: "synchronised", unsynced: "not synchronised (waiting for NTP)",
    uplink: "Uplink", connected: "connected", offline: "offline", disabled: "disabled",
    last_publish: "Last publish", backlog: "Not yet delivered", readings: "readings", oldest: "oldest",
    disk: "Buffer", of: "of", answering: "answering", not_answering: "not answering",
    latency: "Response", cadence: "Poll cadence", kept: "kept", late: "late polls",
    backed_off: "polled less often (failing)", energy_today: "Energy today", site_today: "Site energy today",
    power_chart: "Site power, last hours", no_data: "no data yet", ago: "ago", never: "never",
    wrong_password: "Wrong password", log_in_first: "Log in to see the gateway.",
    scanning: "Scanning…", found: "Found", none_found: "Nothing answered.", configured_as: "configured as",
    not_configured: "not in the configuration", snippet: "Configuration for what was found",
    updated: "Updated", to: "to", keeps_up: "keeps up", cannot_keep_up: "cannot keep up",
  },
  zh: {
    title: "网关", login: "登录", logout: "退出", password: "密码", today: "今日",
    actions: "调试", run_check: "运行检查", bus: "总线", units: "地址", scan: "扫描",
    site: "站点", software: "软件版本", clock: "时钟", synced: "已同步", unsynced: "未同步（等待 NTP）",
    uplink: "上行链路", connected: "已连接", offline: "离线", disabled: "未启用",
    last_publish: "最近上传", backlog: "待上传", readings: "条读数", oldest: "最早",
    disk: "缓存", of: "/", answering: "应答正常", not_answering: "无应答",
    latency: "响应时间", cadence: "采集周期", kept: "正常", late: "次延迟",
    backed_off: "通讯失败，已降低采集频率", energy_today: "今日电量", site_today: "全厂今日电量",
    power_chart: "全厂功率（最近数小时）", no_data: "暂无数据", ago: "前", never: "从未",
    wrong_password: "密码错误", log_in_first: "请先登录查看网关。",
    scanning: "正在扫描…", found: "发现", none_found: "没有设备应答。", configured_as: "已配置为",
    not_configured: "未在配置中", snippet: "所发现设备的配置",
    updated: "更新于", to: "截至", keeps_up: "周期正常", cannot_keep_up: "总线过载",
  },
};
const LANG = (navigator.languages || [navigator.language || "en"])
  .map((l) => l.toLowerCase().slice(0, 2)).find((l) => l in TEXT) || "en";
const T = TEXT[LANG];
document.documentElement.lang = LANG === "zh" ? "zh-CN" : "en";

let csrf = null;
let publicView = false;

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

function translate() {
  document.querySelectorAll("[data-t]").forEach((n) => { n.textContent = T[n.dataset.t] || n.textContent; });
  document.querySelectorAll("[data-t-placeholder]").forEach((n) => { n.placeholder = T[n.dataset.tPlaceholder]; });
}

function number(value, digits = 2) {
  return Number(value).toLocaleString(LANG === "zh" ? "zh-CN" : "en", { maximumFractionDigits: digits });
}

function age(ms) {
  if (ms === null || ms === undefined) return T.never;
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  const text = s < 120 ? `${s} s` : s < 7200 ? `${Math.round(s / 60)} min` : `${Math.round(s / 3600)} h`;
  return LANG === "zh" ? `${text}${T.ago}` : `${text} ${T.ago}`;
}

function badge(good, yes, no, cls) {
  return el("span", { class: `badge ${good ? "ok" : cls || "fail"}` }, good ? yes : no);
}

function row(label, ...value) {
  return el("tr", {}, el("td", {}, label), el("td", { class: "value" }, ...value));
}

async function api(path, body) {
  const options = body === undefined ? {} : {
    method: "POST", body: JSON.stringify(body),
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf || "" },
  };
  const response = await fetch(path, { credentials: "same-origin", ...options });
  const data = await response.json().catch(() => ({}));
  return { status: response.status, data };
}

function drawGateway(g) {
  const up = g.uplink || {};
  const disk = g.disk || {};
  $("gw-id").textContent = `${g.id || ""}`;
  const uplink = !up.enabled ? el("span", {}, T.disabled)
    : badge(up.connected, T.connected, `${T.offline}${up.last_error ? `: ${up.last_error}` : ""}`);
  const table = el("table", {},
    row(T.site, g.site || ""),
    row(T.software, g.software || ""),
    row(T.clock, badge(g.clock_synced, T.synced, T.unsynced, "warn")),
    row(T.uplink, uplink),
    row(T.last_publish, age(up.last_publish_ms)),
    row(T.backlog, `${number(g.backlog_records || 0, 0)} ${T.readings}` +
      (g.oldest_undelivered_age_s ? ` (${T.oldest} ${age(Date.now() - g.oldest_undelivered_age_s * 1000)})` : "")),
    row(T.disk, disk.quota_bytes ? `${number(disk.used_bytes / 1e6, 1)} MB ${T.of} ${number(disk.quota_bytes / 1e6, 0)} MB` : ""));
  $("gateway").replaceChildren(el("h2", {}, T.title), table);
}

function drawBuses(buses) {
  const rows = Object.entries(buses || {}).map(([id, b]) => el("tr", { "data-bus": id },
    el("td", {}, `${T.bus} ${id}`),
    el("td", { class: "value" }, badge(b.keeps_up !== false, T.keeps_up, T.cannot_keep_up, "warn"),
      ` ${number((b.demand || 0) * 100, 0)} %`)));
  $("gateway").append(el("table", { class: "buses" }, ...rows));
}

function drawDevice(d, units) {
  const values = el("table", { class: "values" });
  for (const [q, v] of Object.entries(d.values).sort()) {
    values.append(el("tr", { "data-quantity": q }, el("td", {}, q.replace(/_(v|a|w|var|va|hz|kwh|kvarh|m3|nm3)$/, "")),
      el("td", { class: "value" }, `${number(v, 3)} ${units[q] || ""}`)));
  }
  const warnings = d.warnings.map((w) => el("p", { class: `warning ${w.status}` }, `⚠ ${w.check}: ${w.detail}`));
  const cadence = d.backed_off_s > 0 ? el("span", { class: "error" }, T.backed_off)
    : d.late_polls > 0 ? `${d.late_polls} ${T.late}` : T.kept;
  return el("section", { class: "card device", "data-device": d.id, "data-answering": String(d.answering) },
    el("h2", {}, el("span", {}, d.id), badge(d.answering, T.answering, T.not_answering)),
    d.answering ? null : el("p", { class: "error last-error" }, d.error || d.quality || ""),
    el("table", {},
      row(T.latency, d.latency_ms === null || d.latency_ms === undefined ? "–" : `${number(d.latency_ms, 0)} ms`),
      row(T.cadence, cadence),
      d.today_kwh === null ? null : row(T.energy_today, `${number(d.today_kwh, 3)} kWh` +
        (d.today_to_ms ? ` (${T.to} ${new Date(d.today_to_ms).toLocaleTimeString(LANG === "zh" ? "zh-CN" : "en", { hour: "2-digit", minute: "2-digit" })})` : ""))),
    ...warnings, values);
}

function drawChart(history) {
  const svg = $("chart");
  if (history.length < 2) { svg.replaceChildren(); $("chart-caption").textContent = `${T.power_chart}: ${T.no_data}`; return; }
  const t0 = history[0][0], t1 = history[history.length - 1][0];
  const ws = history.map((p) => p[1]);
  const lo = Math.min(0, ...ws), hi = Math.max(...ws, lo + 1);
  const points = history.map(([t, w]) => `${(300 * (t - t0)) / Math.max(t1 - t0, 1)},${80 - (80 * (w - lo)) / (hi - lo)}`);
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("points", points.join(" "));
  svg.replaceChildren(line);
  $("chart-caption").textContent = `${T.power_chart}: ${number(ws[ws.length - 1] / 1000, 2)} kW (${number(lo / 1000, 1)}–${number(hi / 1000, 1)} kW)`;
}

function draw(view) {
  drawGateway(view.gateway);
  drawBuses(view.buses);
  const units = view.units || {};
  $("devices").replaceChildren(...view.devices.map((d) => drawDevice(d, d.units || units)));
  const site = view.site || {};
  $("site-today").textContent = site.today_kwh === null || site.today_kwh === undefined ? T.no_data
    : `${T.site_today}: ${number(site.today_kwh, 3)} kWh`;
  drawChart(view.history || []);
  const select = $("scan-bus");
  const buses = Object.keys(view.buses || {});
  if (select.options.length !== buses.length) select.replaceChildren(...buses.map((b) => el("option", { value: b }, b)));
  $("updated").textContent = `${T.updated} ${new Date().toLocaleTimeString(LANG === "zh" ? "zh-CN" : "en")}`;
}

async function refresh() {
  const { status, data } = await api("/api/state").catch(() => ({ status: 0, data: {} }));
  if (status === 200) draw(data);
  else if (status === 401) $("devices").replaceChildren(el("p", { class: "card" }, T.log_in_first));
}

async function session() {
  const { data } = await api("/api/session");
  csrf = data.csrf;
  publicView = data.public_view;
  $("login").hidden = data.logged_in;
  $("logout").hidden = !data.logged_in;
  $("actions").hidden = !data.logged_in;
}

async function login(event) {
  event.preventDefault();
  const { status, data } = await api("/api/login", { password: $("password").value });
  $("password").value = "";
  $("login-error").textContent = status === 200 ? "" : status === 401 ? T.wrong_password : data.error || "";
  await session();
  await refresh();
}

async function runCheck() {
  const { data } = await api("/api/check", {});
  const list = el("ul", { class: "findings" }, ...(data.findings || []).map((f) =>
    el("li", { class: `finding ${f.status}` }, `${f.status} ${f.subject} ${f.check}: ${f.detail}`)));
  $("check-result").replaceChildren(el("p", { class: "verdict" }, data.verdict || data.error || ""), list);
}

async function scan(event) {
  event.preventDefault();
  const body = { bus: $("scan-bus").value, first: Number($("scan-first").value), last: Number($("scan-last").value) };
  const { status, data } = await api("/api/scan", body);
  if (status !== 202) { $("scan-result").textContent = data.error || String(status); return; }
  $("scan-result").textContent = T.scanning;
  for (;;) {
    await new Promise((r) => setTimeout(r, 1000));
    const result = (await api(`/api/scan/${data.scan}`)).data;
    if (result.state !== "running") { drawScan(result); return; }
  }
}

function drawScan(result) {
  if (result.error) { $("scan-result").replaceChildren(el("p", { class: "error" }, result.error)); return; }
  const found = result.found.map((f) => el("li", { class: "found", "data-unit": String(f.unit) },
    `${f.unit}: ${f.model}` + (f.configured_as ? ` (${T.configured_as} ${f.configured_as})` : ` (${T.not_configured})`)));
  $("scan-result").replaceChildren(
    el("p", {}, found.length ? `${T.found} ${found.length}` : T.none_found), el("ul", {}, ...found),
    found.length ? el("p", {}, T.snippet) : null, found.length ? el("pre", { class: "snippet" }, result.snippet) : null);
}

translate();
$("login").addEventListener("submit", login);
$("logout").addEventListener("click", async () => { await api("/api/logout", {}); await session(); await refresh(); });
$("run-check").addEventListener("click", runCheck);
$("scan").addEventListener("submit", scan);
session().then(refresh);
setInterval(refresh, 2000);
