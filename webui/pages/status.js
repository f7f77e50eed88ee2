// Status: GET /status, polled every 2 s while the page is shown.

import { api } from "../api.js";
import { h, fill, duration } from "../ui.js";

export class StatusPage {
  constructor(root) {
    this.root = root;
    this.timer = 0;
  }

  show() {
    this.load();
    clearInterval(this.timer);
    this.timer = setInterval(() => this.load(), 2000);
  }

  hide() { clearInterval(this.timer); this.timer = 0; }

  async load() {
    let s;
    try {
      s = await api("/status");
    } catch (e) {
      fill(this.root, h("p", { class: "error", text: e.message }));
      return;
    }
    const stat = (label, value, key) => h("div", { class: "stat", "data-stat": key }, h("dt", { text: label }), h("dd", { text: value }));
    fill(this.root,
      h("dl", { class: "stat-grid" },
        stat("Version", s.version, "version"),
        stat("Device", s.device_id, "device"),
        stat("Uptime", duration(s.uptime_s), "uptime"),
        stat("Ready", s.ready ? "yes" : "no", "ready"),
        stat("Events published", s.bus.published, "published"),
        stat("Events dropped", s.bus.dropped, "dropped"),
        stat("Bus depth", s.bus.depth, "depth"),
        stat("Hooks defined", s.hooks.defined, "hooks-defined"),
        stat("Hooks fired", s.hooks.fired, "hooks-fired"),
        stat("Hooks dropped", s.hooks.dropped, "hooks-dropped"),
        stat("Websocket clients", s.websocket_clients, "ws-clients"),
        stat("Worker jobs done", s.pool.completed, "pool-completed")),
      h("h2", { text: "Backends" }),
      s.backends.length ? h("ul", { class: "backends" }, s.backends.map((b) => h("li", { "data-backend": b.name },
        h("strong", { text: b.name }), " ", h("span", { class: "badge", "data-status": String(b.status).split(":")[0], text: b.status }),
        b.error ? h("span", { class: "why", text: ` ${b.error}` }) : null)))
        : h("p", { class: "muted", text: "No backend is configured." }));
  }
}
