// Hooks: the configured hooks (name, conditions, priority, times fired, last fired) and
// procedures, read-only. Refreshed when shown and as hooks fire.

import { api } from "../api.js";
import { h, fill, brief, clock } from "../ui.js";

export class HooksPage {
  constructor(section) {
    this.hooks = section.querySelector("#hooks");
    this.procs = section.querySelector("#procedures");
    this.visible = false;
    this.timer = 0;
  }

  show() { this.visible = true; this.load(); }

  hide() { this.visible = false; }

  onEvent() {
    // hooks fire on events: refresh the counts at most twice a second while shown
    if (!this.visible || this.timer) return;
    this.timer = setTimeout(() => { this.timer = 0; this.load(); }, 500);
  }

  async load() {
    let v;
    try {
      v = await api("/panel/hooks");
    } catch (e) {
      fill(this.hooks, h("p", { class: "error", text: e.message }));
      return;
    }
    fill(this.hooks, v.hooks.length ? h("div", { class: "table-wrap" }, h("table", {},
      h("thead", {}, h("tr", {}, ["Hook", "Conditions", "Priority", "Fired", "Last fired"].map((t) => h("th", { scope: "col", text: t })))),
      h("tbody", {}, v.hooks.map((k) => h("tr", { "data-hook": k.name },
        h("th", { scope: "row", text: k.name }),
        h("td", {}, h("code", { text: brief(k.if, 200) })),
        h("td", { class: "num", text: k.priority }),
        h("td", { class: "num fired", text: k.fired }),
        h("td", { text: k.last_fired ? clock(k.last_fired) : "never" }))))))
      : h("p", { class: "muted", text: "No hook is configured." }));
    fill(this.procs, v.procedures.length ? h("ul", {}, v.procedures.map((p) =>
      h("li", {}, h("code", { text: `${p.name}(${p.params.join(", ")})` }), p.async ? " async" : "")))
      : h("p", { class: "muted", text: "No procedure is configured." }));
  }
}
