// A dashboard (/dashboard/<name>): rows of 12 columns of widgets, from the config's
// `dashboards:` section (GET /panel/dashboards/<name>), kept live by the event stream.
// A read-scoped API token may come in the URL fragment (#token=...), which the browser
// never sends to a server; otherwise the panel's session cookie is used.

import { api, blobUrl, execute, setCsrf, setToken } from "./api.js";
import { Live } from "./live.js";
import { h, fill, sparkline, brief, clock, toast } from "./ui.js";

const UNITS = { temperature: "°C", humidity: "%", pressure: "hPa", light: "lx" };

async function main() {
  const name = decodeURIComponent(location.pathname.split("/").pop() || "");
  const token = new URLSearchParams(location.hash.slice(1)).get("token");
  if (token) setToken(token);
  let session, board;
  try {
    session = await api("/panel/session");
    board = await api(`/panel/dashboards/${encodeURIComponent(name)}`);
  } catch (e) {
    fill(document.getElementById("dash"), h("p", { class: "error", role: "alert", text: `${e.code || "error"}: ${e.message}` }));
    return;
  }
  setCsrf(session.csrf_token);
  const control = session.scopes.includes("control");
  document.getElementById("dash-title").textContent = board.title;
  document.title = `${board.title} · pihub`;
  const fs = document.getElementById("fullscreen");
  if (document.fullscreenEnabled) fs.addEventListener("click", () => document.documentElement.requestFullscreen());
  else fs.hidden = true;

  const widgets = [];
  const root = document.getElementById("dash");
  for (const row of board.rows) {
    const el = h("div", { class: "dash-row" });
    for (const spec of row) {
      const w = make(spec, { control, board });
      w.el.classList.add("widget", `span-${spec.columns}`);
      w.el.dataset.widget = spec.widget;
      w.el.dataset.columns = spec.columns;
      el.append(w.el);
      widgets.push(w);
    }
    root.append(el);
  }
  if (widgets.some((w) => w.devices)) refreshDevices(widgets);

  const conn = document.getElementById("conn");
  if (session.websocket) {
    const live = new Live(session.websocket.port, session.websocket.path, token);
    live.onState((state) => { conn.dataset.state = state; conn.textContent = state; });
    let pending = 0;
    live.subscribe((ev) => {
      if (!ev) return;
      for (const w of widgets) if (w.onEvent) w.onEvent(ev);
      if (!pending && widgets.some((w) => w.devices)) pending = setTimeout(() => { pending = 0; refreshDevices(widgets); }, 1000);
    });
    live.start();
  } else {
    conn.dataset.state = "off";
    conn.textContent = "no live updates";
  }
  document.body.dataset.ready = "1";
}

async function refreshDevices(widgets) {
  try {
    const list = await api("/panel/devices");
    for (const w of widgets) if (w.devices) w.devices(list);
  } catch { /* shown stale until the next event */ }
}

function card(title, ...body) {
  return h("section", { class: "card" }, title ? h("h2", { text: title }) : null, ...body);
}

function shortType(ev) { return String((ev.args && ev.args.type) || "").split(".").pop(); }

function make(spec, ctx) {
  switch (spec.widget) {
    case "clock": return clockWidget(spec);
    case "sensor": return sensorWidget(spec);
    case "switch": return switchWidget(spec, ctx);
    case "events": return eventsWidget(spec);
    case "action": return actionWidget(spec, ctx);
    case "carousel": return carouselWidget(spec, ctx);
    case "camera": return cameraWidget(spec);
    default: return { el: card(spec.widget, h("p", { class: "error", text: `unknown widget ${spec.widget}` })) };
  }
}

function clockWidget(spec) {
  const time = h("div", { class: "big clock-time" });
  const date = h("div", { class: "muted" });
  const tick = () => {
    const d = new Date();
    time.textContent = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    date.textContent = d.toLocaleDateString([], { weekday: "long", day: "numeric", month: "long" });
  };
  tick();
  setInterval(tick, 1000);
  return { el: card(spec.label, time, date) };
}

function sensorWidget(spec) {
  const value = h("div", { class: "big", text: "–" });
  const chart = h("div", { class: "chart" });
  const when = h("div", { class: "muted" });
  const values = [];
  const unit = spec.unit ?? UNITS[spec.key] ?? "";
  return {
    el: card(spec.label || `${spec.source} ${spec.key}`, value, chart, when),
    onEvent(ev) {
      if (ev.origin !== spec.source || !shortType(ev).startsWith("SensorData")) return;
      const data = (ev.args && ev.args.data) || {};
      if (!(spec.key in data)) return;
      const v = data[spec.key];
      value.textContent = typeof v === "number" ? `${Number(v.toFixed(2))}${unit ? " " + unit : ""}` : brief(v, 30);
      when.textContent = clock(ev._timestamp || Date.now() / 1000);
      if (typeof v === "number") {
        values.push(v);
        if (values.length > spec.history) values.shift();
        fill(chart, sparkline(values, 300, 60));
      }
    },
  };
}

function switchWidget(spec, ctx) {
  const button = h("button", { type: "button", role: "switch", class: "switch big-switch", "aria-label": spec.label || spec.entity, disabled: true, text: "…" });
  const note = h("p", { class: "muted", text: ctx.control ? "" : "read-only: this credential has no control scope" });
  let ent = null;
  const paint = () => {
    const on = ent && (ent.value === true || Number(ent.value) > 0);
    button.setAttribute("aria-checked", on ? "true" : "false");
    button.textContent = ent ? (on ? "on" : "off") : "unknown";
    button.disabled = !ent || !ent.set || !ctx.control;
  };
  button.addEventListener("click", async () => {
    if (!ent || !ent.set) return;
    const next = !(ent.value === true || Number(ent.value) > 0);
    button.disabled = true;
    try {
      const { output, errors } = await execute(ent.set.action, { ...ent.set.args, [ent.set.value_arg]: next });
      if (errors.length) toast(errors.join("; "));
      else ent.value = output && typeof output === "object" && "value" in output ? output.value : next;
    } catch (e) { toast(e.message); }
    paint();
  });
  return {
    el: card(spec.label || spec.entity, button, note),
    devices(list) {
      const b = list.find((x) => x.name === spec.backend);
      ent = b ? (b.entities || []).find((e) => e.name === spec.entity) || null : null;
      if (!ent) note.textContent = `no output ${spec.entity} on backend ${spec.backend}`;
      paint();
    },
    onEvent(ev) {
      if (ent && ev.origin === spec.backend && shortType(ev) === "GPIOEvent" && ev.args.name === spec.entity) {
        ent.value = ev.args.value;
        paint();
      }
    },
  };
}

function eventsWidget(spec) {
  const list = h("ol", { class: "dash-events" });
  return {
    el: card(spec.label || "Events", list),
    onEvent(ev) {
      const type = shortType(ev);
      if (spec.types.length && !spec.types.includes(type)) return;
      const { type: _t, ...args } = ev.args || {};
      list.prepend(h("li", {}, h("time", { text: clock(ev._timestamp || Date.now() / 1000).slice(0, 8) }), " ",
        h("strong", { text: type }), " ", h("span", { class: "muted", text: brief(args, 80) })));
      while (list.childElementCount > spec.limit) list.lastElementChild.remove();
    },
  };
}

function actionWidget(spec, ctx) {
  const button = h("button", { type: "button", class: "big-button", text: spec.label || spec.action, disabled: !ctx.control });
  const out = h("p", { class: "muted", "aria-live": "polite", text: ctx.control ? "" : "needs the control scope" });
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      const { output, errors } = await execute(spec.action, spec.args);
      out.className = errors.length ? "error" : "muted";
      out.textContent = errors.length ? errors.join("; ") : `done: ${brief(output, 80)}`;
    } catch (e) {
      out.className = "error";
      out.textContent = e.message;
    } finally {
      button.disabled = false;
    }
  });
  return { el: card(null, button, out) };
}

// A fresh snapshot (GET /camera/<name>/photo.jpg) every `interval` seconds, fetched with
// the page's credential (a token in the fragment cannot ride on an <img src>), shown as a
// blob: URL; the next one is asked for only once the last one arrived.
function cameraWidget(spec) {
  const img = h("img", { class: "camera-img", alt: `camera ${spec.camera}` });
  const note = h("p", { class: "muted" });
  const el = card(spec.label || `Camera ${spec.camera}`, h("div", { class: "camera" }, img), note);
  const path = `/camera/${spec.camera.split("/").map(encodeURIComponent).join("/")}/photo.jpg`;
  let current = null;
  const next = async () => {
    try {
      const blob = await blobUrl(path);
      if (current) URL.revokeObjectURL(current);
      current = blob;
      img.src = blob;
      note.textContent = new Date().toLocaleTimeString();
    } catch (e) { note.textContent = e.message; }
    setTimeout(next, spec.interval * 1000);
  };
  next();
  return { el };
}

function carouselWidget(spec, ctx) {
  const img = h("img", { class: "carousel-img", alt: "" });
  const note = h("p", { class: "muted" });
  const info = ctx.board.images[spec.dir] || { files: [], error: `no images for ${spec.dir}` };
  const el = card(spec.label, h("div", { class: "carousel" }, img), note);
  if (info.error) note.textContent = info.error;
  let i = 0;
  let current = null;
  const next = async () => {
    if (!info.files.length) return;
    const url = info.files[i % info.files.length];
    i += 1;
    try {
      const blob = await blobUrl(url);
      if (current) URL.revokeObjectURL(current);
      current = blob;
      img.src = blob;
      img.alt = decodeURIComponent(url.split("/").pop());
    } catch (e) { note.textContent = e.message; }
  };
  next();
  if (info.files.length > 1) setInterval(next, spec.interval * 1000);
  return { el };
}

main().catch((e) => toast(String(e)));
