// Actions: a form generated from GET /actions (typed fields per argument) that runs the
// chosen action through POST /execute and shows its output or its errors.

import { api, execute } from "../api.js";
import { h, fill, pretty } from "../ui.js";

export class ActionsPage {
  constructor(section) {
    this.form = section.querySelector("#act-form");
    this.select = section.querySelector("#act-name");
    this.doc = section.querySelector("#act-doc");
    this.fields = section.querySelector("#act-fields");
    this.result = section.querySelector("#act-result");
    this.actions = new Map();
    this.loaded = false;
    this.select.addEventListener("change", () => this.build());
    this.form.addEventListener("submit", (ev) => { ev.preventDefault(); this.run(); });
  }

  async show() {
    if (this.loaded) return;
    let list;
    try {
      list = await api("/actions");
    } catch (e) {
      fill(this.result, h("p", { class: "error", text: `cannot load the actions: ${e.message}` }));
      return;
    }
    this.loaded = true;
    const groups = new Map();
    for (const a of list) {
      this.actions.set(a.action, a);
      const plugin = a.action.slice(0, a.action.lastIndexOf("."));
      if (!groups.has(plugin)) groups.set(plugin, h("optgroup", { label: plugin }));
      groups.get(plugin).append(h("option", { value: a.action, text: a.action }));
    }
    fill(this.select, ...groups.values());
    const wanted = new URLSearchParams(location.hash.split("?")[1] || "").get("action");
    if (wanted && this.actions.has(wanted)) this.select.value = wanted;
    this.build();
  }

  build() {
    const a = this.actions.get(this.select.value);
    fill(this.fields);
    fill(this.result);
    if (!a) return;
    this.doc.textContent = (a.doc || "").split("\n\n")[0];
    for (const [name, spec] of Object.entries(a.args || {})) this.fields.append(field(name, spec));
  }

  collect() {
    const args = {};
    for (const input of this.fields.querySelectorAll("[data-arg]")) {
      const name = input.dataset.arg;
      const kind = input.dataset.kind;
      if (kind === "bool") {
        if (input.indeterminate) continue;
        args[name] = input.checked;
        continue;
      }
      const raw = input.value;
      if (raw.trim() === "") {
        if (input.required) throw new Error(`${name} is required`);
        continue;
      }
      if (kind === "int" || kind === "float") {
        const n = Number(raw);
        if (!Number.isFinite(n) || (kind === "int" && !Number.isInteger(n))) throw new Error(`${name} must be ${kind === "int" ? "an integer" : "a number"}, not ${JSON.stringify(raw)}`);
        args[name] = n;
      } else if (kind === "str") {
        args[name] = raw;
      } else if (kind === "kwargs") {
        let obj;
        try { obj = JSON.parse(raw); } catch { throw new Error(`${name} must be a JSON object like {"name": "value"}`); }
        if (!obj || typeof obj !== "object" || Array.isArray(obj)) throw new Error(`${name} must be a JSON object like {"name": "value"}`);
        Object.assign(args, obj);
      } else {
        // any other type: JSON when it parses (numbers, true, lists...), else the text
        try { args[name] = JSON.parse(raw); } catch { args[name] = raw; }
      }
    }
    return args;
  }

  async run() {
    const action = this.select.value;
    if (!action) return;
    let args;
    try {
      args = this.collect();
    } catch (e) {
      fill(this.result, h("p", { class: "error", role: "alert", text: e.message }));
      return;
    }
    const button = this.form.querySelector("button[type=submit]");
    button.disabled = true;
    fill(this.result, h("p", { class: "muted", text: `running ${action}…` }));
    try {
      const { output, errors } = await execute(action, args);
      if (errors.length) {
        fill(this.result, h("div", { class: "errors", role: "alert" },
          h("h2", { text: "Errors" }), h("ul", {}, errors.map((e) => h("li", { class: "error", text: String(e) })))));
      } else {
        fill(this.result, h("div", { class: "ok" }, h("h2", { text: "Output" }), h("pre", { class: "output", text: pretty(output) })));
      }
    } catch (e) {
      fill(this.result, h("p", { class: "error", role: "alert", text: `${e.code || "error"}: ${e.message}` }));
    } finally {
      button.disabled = false;
    }
  }
}

/** The input of one argument; its kind says how the value is read back. */
function field(name, spec) {
  const type = String(spec.type || "any").replace(/\s*\|\s*None$/, "").trim();
  const id = `arg-${name}`;
  const required = !!spec.required;
  let input, kind;
  if (spec.variadic === "keyword") {
    kind = "kwargs";
    input = h("textarea", { id, rows: 3, placeholder: '{"name": "value"}', spellcheck: "false" });
  } else if (Array.isArray(spec.choices)) {
    kind = "json";
    input = h("select", { id }, required ? null : h("option", { value: "", text: "(default)" }),
      spec.choices.map((c) => h("option", { value: JSON.stringify(c), text: String(c) })));
  } else if (type === "bool") {
    kind = "bool";
    input = h("input", { id, type: "checkbox" });
    if (!required && spec.default === null) input.indeterminate = true;
    else input.checked = spec.default === true;
  } else if (type === "int" || type === "float") {
    kind = type;
    input = h("input", { id, type: "text", inputmode: type === "int" ? "numeric" : "decimal", required });
    if (spec.default !== null && spec.default !== undefined) input.placeholder = String(spec.default);
  } else if (type === "str") {
    kind = "str";
    input = h("input", { id, type: "text", required });
    if (spec.default !== null && spec.default !== undefined) input.placeholder = String(spec.default);
  } else {
    kind = "json";
    input = h("input", { id, type: "text", required, placeholder: "JSON value or text", spellcheck: "false" });
  }
  input.dataset.arg = name;
  input.dataset.kind = kind;
  const label = h("label", { for: id }, h("span", { class: "aname", text: name }),
    h("span", { class: "atype muted", text: ` ${spec.type || "any"}${required ? ", required" : ""}` }));
  return h("div", { class: "field" }, label, input, spec.doc ? h("small", { class: "muted", text: spec.doc }) : null);
}
