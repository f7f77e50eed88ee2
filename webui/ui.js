// Small DOM helpers shared by the pages. No inline styles or handlers anywhere: the
// Content-Security-Policy forbids them, so everything is built with the DOM API.

/** Create an element: h("button", {class: "x", onclick: fn, "aria-label": "y"}, child, ...). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k in el && typeof v !== "string") el[k] = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replace an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

const SVG = "http://www.w3.org/2000/svg";

/** A sparkline of numbers as an <svg> (width x height in CSS pixels). */
export function sparkline(values, width = 120, height = 28) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.setAttribute("class", "spark");
  svg.setAttribute("aria-hidden", "true");
  const nums = values.filter((v) => Number.isFinite(v));
  if (nums.length >= 2) {
    const lo = Math.min(...nums), hi = Math.max(...nums), span = hi - lo || 1;
    const step = width / (nums.length - 1);
    const pts = nums.map((v, i) => `${(i * step).toFixed(1)},${(height - 2 - ((v - lo) / span) * (height - 4)).toFixed(1)}`);
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("points", pts.join(" "));
    svg.append(line);
  }
  return svg;
}

/** A wall-clock time (seconds since the epoch) as HH:MM:SS.mmm. */
export function clock(ts) {
  const d = new Date(ts * 1000);
  const p = (n, w = 2) => String(n).padStart(w, "0");
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

/** A compact, one-line rendering of a JSON value. */
export function brief(value, max = 120) {
  let s;
  try { s = typeof value === "string" ? value : JSON.stringify(value); } catch { s = String(value); }
  if (s === undefined) s = String(value);
  return s.length > max ? s.slice(0, max - 1) + "…" : s;
}

/** Pretty JSON for <pre>. */
export function pretty(value) {
  try { return JSON.stringify(value, null, 2); } catch { return String(value); }
}

/** A duration in seconds as "3 d 4 h", "5 min 2 s". */
export function duration(s) {
  s = Math.floor(s);
  const d = Math.floor(s / 86400), hh = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  if (d) return `${d} d ${hh} h`;
  if (hh) return `${hh} h ${m} min`;
  if (m) return `${m} min ${s % 60} s`;
  return `${s} s`;
}

let toastTimer = 0;
/** Show a short message (errors) in the alert region. */
export function toast(message) {
  const el = document.getElementById("toast");
  if (!el) return;
  el.textContent = message;
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.hidden = true; }, 6000);
}
