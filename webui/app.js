// The panel: session, router, live stream, and the pages (each in pages/*.js).

import { api, setCsrf, toLogin } from "./api.js";
import { Live } from "./live.js";
import { toast } from "./ui.js";
import { DevicesPage } from "./pages/devices.js";
import { EventsPage } from "./pages/events.js";
import { ActionsPage } from "./pages/actions.js";
import { HooksPage } from "./pages/hooks.js";
import { StatusPage } from "./pages/status.js";

const PAGES = ["devices", "events", "actions", "hooks", "status"];
let live = null;

async function main() {
  let session;
  try {
    session = await api("/panel/session");
  } catch (e) {
    if (e.status !== 401) toast(`cannot load the session: ${e.message}`);
    return;
  }
  setCsrf(session.csrf_token);
  document.getElementById("brand").textContent = `pihub · ${session.device_id}`;
  document.title = `pihub · ${session.device_id}`;
  document.getElementById("logout").addEventListener("click", logout);

  const conn = document.getElementById("conn");
  const pages = {
    devices: new DevicesPage(document.getElementById("devices")),
    events: new EventsPage(document.getElementById("page-events")),
    actions: new ActionsPage(document.getElementById("page-actions")),
    hooks: new HooksPage(document.getElementById("page-hooks")),
    status: new StatusPage(document.getElementById("status")),
  };

  if (session.websocket) {
    live = new Live(session.websocket.port, session.websocket.path);
    live.onState((state, detail) => {
      if (state === "refused") api("/panel/session").catch(() => {}); // a 401 goes to login
      conn.dataset.state = state;
      conn.textContent = state === "live" ? "live" : state;
      conn.title = detail || "";
    });
    live.subscribe((event, gap) => {
      for (const p of Object.values(pages)) if (p.onEvent) p.onEvent(event, gap);
    });
    live.start();
  } else {
    conn.dataset.state = "off";
    conn.textContent = "no live updates";
    conn.title = "the websocket server is disabled (http.disable_websocket)";
  }

  let current = null;
  const show = () => {
    const name = (location.hash.match(/^#\/(\w+)/) || [])[1];
    const page = PAGES.includes(name) ? name : "devices";
    for (const p of PAGES) {
      document.getElementById(`page-${p}`).hidden = p !== page;
      const link = document.querySelector(`nav a[data-page="${p}"]`);
      if (p === page) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    if (current && current !== pages[page] && current.hide) current.hide();
    current = pages[page];
    if (current.show) current.show();
  };
  window.addEventListener("hashchange", () => { show(); document.getElementById("main").focus(); });
  show();
  await pages.devices.load();
  performance.mark("pihub-devices-drawn"); // bench/bench_panel.py: time to first render
  document.body.dataset.ready = "1";
}

async function logout() {
  // first the stream: the server closes it when the session ends, and the panel would
  // then go to the login page on its own, racing this navigation
  if (live) live.stop();
  try {
    await api("/logout", { method: "POST" });
  } finally {
    location.assign("/ui/login.html");
  }
}

main().catch((e) => toast(String(e)));
