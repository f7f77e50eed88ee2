// The websocket event stream, kept alive: reconnects with exponential backoff (0.5 s
// doubling to 30 s, with jitter) and asks for what it missed with ?since=<last seq>.
// The session cookie authenticates the handshake (it travels to the websocket port
// too: cookies are per host, not per port).

const MAX_IDS = 4000;

export class Live {
  /**
   * @param {number} port the websocket server's port
   * @param {string} path the stream's path (/ws/events)
   * @param {string|null} token an API token, sent in the first message (a browser cannot
   *   set headers on a websocket); without one the session cookie authenticates
   */
  constructor(port, path, token = null) {
    this.port = port;
    this.path = path;
    this.token = token;
    this.seq = 0;            // the last seq received; 0 asks for the whole replay ring
    this.ids = new Set();    // recent event ids: a replay after a server restart repeats some
    this.listeners = new Set();
    this.stateListeners = new Set();
    this.attempt = 0;
    this.ws = null;
    this.timer = 0;
    this.stopped = false;
  }

  /** Call fn(envelope) for every new event; fn(null, gap) for a gap the server reports. */
  subscribe(fn) { this.listeners.add(fn); return () => this.listeners.delete(fn); }

  /** Call fn(state) on connecting / live / reconnecting. */
  onState(fn) { this.stateListeners.add(fn); }

  setState(state, detail = "") {
    for (const fn of this.stateListeners) fn(state, detail);
  }

  url() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    return `${scheme}://${location.hostname}:${this.port}${this.path}?since=${this.seq}`;
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close(1000);
  }

  connect() {
    clearTimeout(this.timer);
    this.setState(this.attempt ? "reconnecting" : "connecting");
    let ws;
    try {
      ws = new WebSocket(this.url());
    } catch (e) {
      this.retry(String(e));
      return;
    }
    this.ws = ws;
    ws.addEventListener("open", () => {
      if (this.token) {
        ws.send(JSON.stringify({ type: "auth", token: this.token, since: this.seq }));
        return; // live once the server says so
      }
      this.attempt = 0;
      this.setState("live");
    });
    ws.addEventListener("message", (m) => this.receive(m.data));
    ws.addEventListener("close", (c) => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (c.code === 1008) {
        // refused (the session ended, or was never valid): slow down, and tell the app,
        // which checks the session and sends the user to log in
        this.setState("refused", c.reason);
        this.retry(c.reason, 5);
        return;
      }
      this.retry(c.reason || `closed (${c.code})`);
    });
  }

  retry(why, minAttempt = 0) {
    if (this.stopped) return;
    this.attempt = Math.max(this.attempt + 1, minAttempt);
    const base = Math.min(30000, 500 * 2 ** (this.attempt - 1));
    const delay = base / 2 + Math.random() * base / 2;
    this.setState("reconnecting", why);
    this.timer = setTimeout(() => this.connect(), delay);
  }

  receive(text) {
    let msg;
    try { msg = JSON.parse(text); } catch { return; }
    if (msg.type === "auth") {
      if (msg.status === "ok") { this.attempt = 0; this.setState("live"); }
      return;
    }
    if (msg.type === "gap") {
      for (const fn of this.listeners) fn(null, msg);
      return;
    }
    if (msg.type !== "event") return;
    if (typeof msg.seq === "number") this.seq = msg.seq;
    if (msg.id) {
      if (this.ids.has(msg.id)) return;
      this.ids.add(msg.id);
      if (this.ids.size > MAX_IDS) this.ids.delete(this.ids.values().next().value);
    }
    for (const fn of this.listeners) {
      try { fn(msg, null); } catch (e) { console.warn("event listener failed", e); }
    }
  }
}
