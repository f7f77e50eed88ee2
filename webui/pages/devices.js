// Devices: a card per backend (status, and why when it is not running) with its
// entities (outputs as switches, inputs as indicators, ADC channels, MIDI inputs, Flic
// buttons, card readers, cameras: see VIEWS), its sensors' values with a sparkline of
// recent values, and its last event. Kept live by the event stream.

import { api, execute } from "../api.js";
import { h, fill, sparkline, brief, clock, toast } from "../ui.js";

const HISTORY = 60; // sensor values kept for a sparkline
const UNITS = { temperature: "°C", temp_c: "°C", humidity: "%", rh: "%", pressure: "hPa", light: "lx",
  voltage: "V", volts: "V", current: "A", power: "W", co2: "ppm", battery: "%" };

export class DevicesPage {
  constructor(root) {
    this.root = root;
    this.backends = new Map(); // name -> {info, card, entities: Map, sensors: Map, last}
    this.pending = [];         // events that came before the first load
    this.loaded = false;
    this.visible = false;
    this.timer = 0;
    this.cameras = []; // camera entities (their live view stops when the page hides)
    document.addEventListener("visibilitychange", () => { if (document.hidden) for (const e of this.cameras) e.stop(); });
  }

  async load() {
    let list;
    try {
      list = await api("/panel/devices");
    } catch (e) {
      fill(this.root, h("p", { class: "error", text: `cannot load the devices: ${e.message}` }));
      return;
    }
    fill(this.root);
    for (const info of list) this.backend(info.name, info);
    if (!list.length) this.root.append(h("p", { class: "muted", text: "No backend is configured." }));
    this.loaded = true;
    for (const ev of this.pending.splice(0)) this.onEvent(ev);
  }

  show() { this.visible = true; if (this.loaded) this.refresh(); }

  // A live camera holds one of the daemon's few HTTP workers: stop it with the page.
  hide() { this.visible = false; for (const e of this.cameras) e.stop(); }

  // Outputs changed by hooks send no event: re-read the devices at most once a second
  // while events come and the page is shown.
  soon() {
    if (!this.visible || this.timer) return;
    this.timer = setTimeout(() => { this.timer = 0; this.refresh(); }, 1000);
  }

  async refresh() {
    try {
      for (const info of await api("/panel/devices")) this.backend(info.name, info);
    } catch { /* the stream keeps the cards live anyway */ }
  }

  backend(name, info) {
    let b = this.backends.get(name);
    if (!b) {
      const status = h("span", { class: "badge" });
      const why = h("p", { class: "why", hidden: true });
      const list = h("ul", { class: "entities" });
      const sensors = h("dl", { class: "sensors" });
      const last = h("p", { class: "last muted", text: "no event yet" });
      const card = h("article", { class: "card device", "data-backend": name, "aria-label": `backend ${name}` },
        h("header", {}, h("h2", { text: name }), status), why, list, sensors, last);
      b = { card, status, why, list, sensors, last, entities: new Map(), sensorRows: new Map() };
      this.backends.set(name, b);
      this.root.append(card);
    }
    if (info) {
      this.setStatus(b, info.status, info.error);
      for (const ent of info.entities || []) this.entity(b, ent);
    }
    return b;
  }

  setStatus(b, status, error) {
    const word = String(status || "unknown").split(":")[0];
    b.status.textContent = word;
    b.status.dataset.status = word;
    b.card.dataset.status = word;
    b.why.hidden = !error;
    b.why.textContent = error ? `why: ${error}` : "";
  }

  entity(b, ent) {
    let e = b.entities.get(ent.name);
    const view = VIEWS[ent.kind];
    if (!e && view) {
      e = { ent: { ...ent }, view };
      e.row = h("li", { class: `entity ent-${ent.kind}`, "data-entity": ent.name }, h("span", { class: "ename", text: ent.name }));
      view.make(e, this);
      b.entities.set(ent.name, e);
      b.list.append(e.row);
    } else if (!e) {
      e = { ent: { ...ent } };
      const label = h("span", { class: "ename", text: ent.name });
      const pin = ent.pin !== undefined ? h("span", { class: "muted", text: ` GPIO${ent.pin}` }) : null;
      let control;
      if (ent.kind === "output" && ent.set && ent.pwm) {
        control = h("input", { type: "range", min: 0, max: 1, step: 0.01, "aria-label": `${ent.name} duty cycle` });
        control.addEventListener("change", () => this.drive(e, Number(control.value)));
      } else if (ent.kind === "output" && ent.set) {
        control = h("button", { type: "button", role: "switch", class: "switch", "aria-label": ent.name });
        control.addEventListener("click", () => this.drive(e, !truthy(e.ent.value)));
      } else {
        control = h("span", { class: "indicator", role: "img" });
      }
      e.control = control;
      e.row = h("li", { class: `entity ${ent.kind || ""}`, "data-entity": ent.name }, label, pin, control);
      b.entities.set(ent.name, e);
      b.list.append(e.row);
    }
    Object.assign(e.ent, ent);
    this.paint(e);
  }

  paint(e) {
    const { ent, control } = e;
    if (e.view) {
      e.view.paint(e);
    } else if (control.type === "range") {
      control.value = Number(ent.value) || 0;
    } else if (control.getAttribute("role") === "switch") {
      const on = truthy(ent.value);
      control.setAttribute("aria-checked", on ? "true" : "false");
      control.textContent = on ? "on" : "off";
    } else {
      const on = truthy(ent.value);
      control.dataset.on = on ? "1" : "0";
      control.setAttribute("aria-label", `${ent.name} ${on ? "high" : "low"}`);
      control.textContent = on ? "high" : "low";
    }
  }

  async drive(e, value) {
    const { action, args, value_arg: arg } = e.ent.set;
    e.control.disabled = true;
    try {
      const { output, errors } = await execute(action, { ...args, [arg]: value });
      if (errors.length) {
        toast(`${action}: ${errors.join("; ")}`);
      } else {
        e.ent.value = output && typeof output === "object" && "value" in output ? output.value : value;
      }
    } catch (err) {
      toast(`${action}: ${err.message}`);
    } finally {
      e.control.disabled = false;
      this.paint(e);
    }
  }

  sensor(b, key, value, ts) {
    let s = b.sensorRows.get(key);
    if (!s) {
      const val = h("span", { class: "value" });
      const chart = h("span", { class: "chart" });
      const dt = h("dt", { text: key });
      const dd = h("dd", { "data-sensor": key }, val, chart);
      s = { values: [], val, chart };
      b.sensorRows.set(key, s);
      b.sensors.append(dt, dd);
    }
    const unit = UNITS[key.toLowerCase()] || "";
    s.val.textContent = typeof value === "number" ? `${round(value)}${unit ? " " + unit : ""}` : brief(value, 40);
    s.val.title = clock(ts);
    if (typeof value === "number") {
      s.values.push(value);
      if (s.values.length > HISTORY) s.values.shift();
      fill(s.chart, sparkline(s.values));
    }
  }

  onEvent(ev) {
    if (!ev) return;
    if (!this.loaded) { this.pending.push(ev); return; }
    const a = ev.args || {};
    const type = String(a.type || "").split(".").pop();
    if (type === "BackendStatusEvent") {
      this.setStatus(this.backend(a.backend), a.status, a.error);
      if (String(a.status).startsWith("running")) this.refresh();
      return;
    }
    this.soon();
    const b = this.backends.get(ev.origin);
    if (!b) return;
    b.last.textContent = `last: ${type} ${brief(withoutType(a), 80)} at ${clock(ev._timestamp || Date.now() / 1000)}`;
    if (type === "GPIOEvent" && a.name !== undefined) {
      const e = b.entities.get(a.name);
      if (e) { e.ent.value = a.value; this.paint(e); }
    }
    if (type.startsWith("SensorData")) {
      const data = a.data && typeof a.data === "object" ? a.data : {};
      for (const [k, v] of Object.entries(data)) {
        const e = b.entities.get(k);
        if (e && e.ent.kind === "adc") adcValue(e, v);
        else this.sensor(b, k, v, ev._timestamp);
      }
    }
    const change = ON_EVENT[type];
    if (change) change(b, a, ev._timestamp || Date.now() / 1000, this);
  }
}

// The entity kinds that are more than a switch or an indicator: make(e, page) adds to
// e.row, paint(e) shows e.ent.
const VIEWS = {
  adc: {
    make(e) {
      e.values = [];
      e.val = h("span", { class: "value" });
      e.volts = h("span", { class: "muted volts" });
      e.chart = h("span");
      e.row.append(h("span", { class: "muted", text: ` CH${e.ent.channel}` }), e.val, e.volts, e.chart);
    },
    paint(e) {
      const { value, volts } = e.ent;
      e.val.textContent = typeof value === "number" ? round(value) : e.ent.polled === false ? "not polled" : "–";
      e.volts.textContent = typeof volts === "number" && volts !== value ? `${round(volts)} V` : "";
    },
  },
  midi_input: { make: stateMake, paint: statePaint },
  flic_button: {
    make(e) { stateMake(e); e.press = h("span", { class: "muted press" }); e.row.insertBefore(e.press, e.control); },
    paint(e) {
      statePaint(e);
      const p = e.ent.last_press;
      e.press.textContent = p ? `${p.kind.replace("_", " ")}${p.was_queued ? " (queued)" : ""} at ${clock(p.time)}` : "no press yet";
    },
  },
  card_reader: {
    make: stateMake,
    paint(e) {
      const { card, ignored } = e.ent;
      e.control.dataset.on = card ? "1" : "0";
      e.control.textContent = card ? `card ${card.atr}${card.uid ? `, uid ${card.uid}` : ""}`
        : ignored ? `card ${ignored} (not in the atr list)` : "no card";
      e.control.setAttribute("aria-label", `${e.ent.name}: ${e.control.textContent}`);
    },
  },
  camera: {
    make(e, page) {
      const img = h("img", { class: "camera-img", alt: `${e.ent.name} live` });
      const box = h("div", { class: "camera", hidden: true }, img);
      const note = h("span", { class: "muted" });
      const live = h("button", { type: "button", class: "ghost", "aria-pressed": "false", text: "Watch live" });
      const snap = h("a", { href: e.ent.photo, target: "_blank", rel: "noopener", text: "Snapshot" });
      e.stop = () => {
        img.removeAttribute("src");
        box.hidden = true;
        live.setAttribute("aria-pressed", "false");
        live.textContent = "Watch live";
      };
      img.addEventListener("error", () => {
        if (!img.getAttribute("src")) return; // stopped
        e.stop();
        note.textContent = "the live view is unavailable (the camera is off or has all its viewers)";
      });
      live.addEventListener("click", () => {
        if (img.getAttribute("src")) { e.stop(); return; }
        note.textContent = "";
        img.src = e.ent.video;
        box.hidden = false;
        live.setAttribute("aria-pressed", "true");
        live.textContent = "Stop";
      });
      e.row.append(note, h("span", { class: "actions" }, live, snap), box);
      page.cameras.push(e);
    },
    paint(e) { e.row.title = `${e.ent.resolution.join("×")}${e.ent.capturing ? ", capturing" : ""}`; },
  },
};

function stateMake(e) { e.control = h("span", { class: "indicator", role: "img" }); e.row.append(e.control); }

function statePaint(e) {
  const state = e.ent.state || e.ent.status || "unknown";
  e.control.dataset.on = state === "connected" ? "1" : "0";
  e.control.textContent = state;
  e.control.setAttribute("aria-label", `${e.ent.name} ${state}`);
}

// The sparkline plots the channel's events (the stream replays the recent ones on
// connect); a threshold event repeats its change event's value and plots nothing new.
function adcValue(e, v) {
  if (typeof v !== "number") return;
  e.ent.value = v;
  if (e.values[e.values.length - 1] !== v) e.values.push(v);
  if (e.values.length > HISTORY) e.values.shift();
  if (e.values.length >= 2) fill(e.chart, sparkline(e.values));
  e.view.paint(e);
}

const PRESSES = { FlicButtonClickEvent: "click", FlicButtonDoubleClickEvent: "double_click", FlicButtonHoldEvent: "hold" };

// What an event changes on its backend's entities (besides the card's last-event line).
const ON_EVENT = {
  MidiMessageEvent(b, a) {
    if (!b.midi) b.midi = b.last.parentNode.insertBefore(h("p", { class: "midi-last" }), b.last);
    const fields = ["note", "velocity", "control", "value", "pitch", "program"].filter((k) => a[k] !== undefined);
    b.midi.textContent = `${a.device}: ${a.kind}${a.channel !== undefined ? ` ch${a.channel + 1}` : ""}`
      + fields.map((k) => ` ${k} ${a[k]}`).join("");
  },
  FlicButtonConnectionEvent(b, a, ts, page) { setEnt(b, a.btn_addr, { status: a.status }, page); },
  SmartCardDetectedEvent(b, a, ts, page) {
    setEnt(b, a.reader, { card: { atr: mask(a.atr), uid: a.uid ? mask(a.uid) : null }, ignored: null }, page);
  },
  SmartCardRemovedEvent(b, a, ts, page) { setEnt(b, a.reader, { card: null }, page); },
};
for (const [type, kind] of Object.entries(PRESSES)) {
  ON_EVENT[type] = (b, a, ts, page) => setEnt(b, a.btn_addr, { last_press: { kind, time: ts, was_queued: !!a.was_queued } }, page);
}

function setEnt(b, name, change, page) {
  const e = b.entities.get(name);
  if (e) { Object.assign(e.ent, change); page.paint(e); }
}

/** A card number ("04 A1 B2 C3") masked as the backend masks it: "…B2 C3". */
function mask(hex) { return `…${(String(hex).replace(/[^0-9a-f]/gi, "").toUpperCase().slice(-4).match(/../g) || []).join(" ")}`; }

function truthy(v) { return v === true || v === 1 || v === "1" || v === "on" || (typeof v === "number" && v > 0); }
function round(v) { return Math.abs(v) >= 100 ? v.toFixed(0) : Number(v.toFixed(2)).toString(); }
function withoutType(a) {
  const { type, ...rest } = a;
  if (String(type).includes("SmartCard")) for (const k of ["atr", "uid"]) if (rest[k]) rest[k] = mask(rest[k]);
  return rest;
}
