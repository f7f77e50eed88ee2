// Events: the live log, newest first, filterable. While the reader is scrolled away
// from the top it pauses (new events wait, counted, behind a Resume button) and
// resumes by itself on scrolling back. Each event opens to its hook trace
// (GET /events/<id>/trace): the hooks that fired, the actions they ran with their
// results, and for every other hook the first condition that failed.

import { api } from "../api.js";
import { h, fill, brief, clock, pretty } from "../ui.js";

const KEEP = 500; // rows kept in the log

export class EventsPage {
  constructor(section) {
    this.log = section.querySelector("#ev-log");
    this.filterInput = section.querySelector("#ev-filter");
    this.typeSelect = section.querySelector("#ev-type");
    this.resumeButton = section.querySelector("#ev-resume");
    this.state = section.querySelector("#ev-state");
    this.waiting = [];
    this.types = new Set();
    this.filterInput.addEventListener("input", () => this.applyFilter());
    this.typeSelect.addEventListener("change", () => this.applyFilter());
    this.resumeButton.addEventListener("click", () => { this.log.scrollTop = 0; this.flush(); });
    this.log.addEventListener("scroll", () => { if (!this.paused()) this.flush(); });
  }

  paused() { return this.log.scrollTop > 4; }

  onEvent(ev, gap) {
    if (gap) {
      this.add(h("li", { class: "gap", role: "note", text: `events ${gap.from}–${gap.to} were lost (the replay buffer had moved on)` }));
      return;
    }
    // the wire carries Platypush's dotted class path; the short name is the type
    const type = String((ev.args && ev.args.type) || "?").split(".").pop();
    if (!this.types.has(type)) {
      this.types.add(type);
      const opts = [...this.types].sort().map((t) => h("option", { value: t, text: t }));
      const keep = this.typeSelect.value;
      fill(this.typeSelect, h("option", { value: "", text: "all" }), opts);
      this.typeSelect.value = keep;
    }
    this.add(this.row(ev, type));
  }

  add(li) {
    if (this.paused()) {
      this.waiting.push(li);
      this.resumeButton.hidden = false;
      this.resumeButton.textContent = `Resume (${this.waiting.length} new)`;
      this.state.textContent = "paused while scrolled";
      return;
    }
    this.insert(li);
  }

  insert(li) {
    this.match(li);
    this.log.prepend(li);
    while (this.log.childElementCount > KEEP) this.log.lastElementChild.remove();
  }

  flush() {
    for (const li of this.waiting.splice(0)) this.insert(li);
    this.resumeButton.hidden = true;
    this.state.textContent = "";
  }

  row(ev, type) {
    const { type: _t, ...args } = ev.args || {};
    const summary = h("summary", {},
      h("time", { text: clock(ev._timestamp || Date.now() / 1000) }),
      h("span", { class: "etype", text: type }),
      h("span", { class: "esrc muted", text: ev.origin || "" }),
      h("span", { class: "eargs", text: brief(args, 160) }));
    const body = h("div", { class: "trace", "aria-live": "polite" });
    const details = h("details", {}, summary, body);
    details.addEventListener("toggle", () => { if (details.open && !body.dataset.loaded) this.trace(ev.id, body); });
    const li = h("li", { class: "event", "data-id": ev.id || "", "data-type": type, "data-seq": ev.seq ?? "" }, details);
    li.searchText = `${type} ${ev.origin || ""} ${JSON.stringify(args)}`.toLowerCase();
    return li;
  }

  match(li) {
    if (!li.classList.contains("event")) return;
    const text = this.filterInput.value.trim().toLowerCase();
    const type = this.typeSelect.value;
    li.hidden = (type && li.dataset.type !== type) || (text && !li.searchText.includes(text));
  }

  applyFilter() { for (const li of this.log.children) this.match(li); }

  async trace(id, body, tries = 0) {
    if (!id) { fill(body, h("p", { class: "muted", text: "this event has no id" })); return; }
    fill(body, h("p", { class: "muted", text: "loading the trace…" }));
    let t;
    try {
      t = await api(`/events/${encodeURIComponent(id)}/trace`);
    } catch (e) {
      fill(body, h("p", { class: "error", text: e.status === 404 ? "no trace: the event is no longer kept" : e.message }));
      return;
    }
    if (!t.complete && tries < 20) {
      // a hook it fired is still running: show what there is, ask again
      this.render(body, t);
      setTimeout(() => this.trace(id, body, tries + 1), 250);
      return;
    }
    body.dataset.loaded = "1";
    this.render(body, t);
  }

  render(body, t) {
    const fired = t.fired.length
      ? h("ul", { class: "fired" }, t.fired.map((name) => h("li", { "data-hook": name },
        h("strong", { text: name }),
        ...(t.hook_errors && t.hook_errors[name] ? [h("span", { class: "error", text: ` errors: ${t.hook_errors[name].join("; ")}` })] : []))))
      : h("p", { class: "muted", text: "no hook fired" });
    const actions = t.actions.length
      ? h("ol", { class: "actions" }, t.actions.map((a) => h("li", {},
        h("code", { text: a.action }), " ", h("span", { class: "muted", text: `(${a.hook}) ${brief(a.args, 100)}` }),
        a.skipped ? h("p", { class: "muted", text: a.skipped })
          : a.errors.length ? h("p", { class: "error", text: a.errors.join("; ") })
            : h("pre", { class: "output", text: pretty(a.output) }))))
      : null;
    const others = Object.entries(t.not_fired);
    const notFired = others.length
      ? h("ul", { class: "not-fired" }, others.map(([name, why]) => h("li", { "data-hook": name },
        h("span", { text: name }), ": ", h("code", { text: why }))))
      : h("p", { class: "muted", text: "no other hook" });
    fill(body,
      h("h3", { text: "Fired" }), fired,
      actions ? h("h3", { text: "Actions" }) : null, actions,
      h("h3", { text: "Not fired" }), notFired,
      t.complete ? null : h("p", { class: "muted", text: "a hook is still running…" }));
  }
}
