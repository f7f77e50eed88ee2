// The login page: POST /login (JSON) sets the session cookie; with no user yet, the
// one-time setup code creates the first one (POST /auth?type=setup).

const form = document.getElementById("login");
const error = document.getElementById("error");
let setup = false;

function target() {
  const r = new URLSearchParams(location.search).get("redirect") || "/";
  // a path on this server only (the server checks it again)
  return r.startsWith("/") && !r.startsWith("//") && !r.startsWith("/\\") ? r : "/";
}

function showSetup() {
  setup = true;
  document.getElementById("form-title").textContent = "Create the first user";
  document.getElementById("setup-hint").hidden = false;
  document.getElementById("setup-row").hidden = false;
  document.getElementById("setup_code").required = true;
  document.getElementById("password").autocomplete = "new-password";
  document.getElementById("submit").textContent = "Create and log in";
}

form.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  error.textContent = "";
  const username = form.username.value.trim();
  const password = form.password.value;
  if (!username || !password || (setup && !form.setup_code.value.trim())) {
    error.textContent = setup ? "Enter the setup code, a user name and a password." : "Enter your user name and password.";
    return;
  }
  const body = { username, password, remember: form.remember.checked, redirect: target() };
  if (setup) body.setup_code = form.setup_code.value.trim();
  const button = document.getElementById("submit");
  button.disabled = true;
  try {
    const resp = await fetch(setup ? "/auth?type=setup" : "/login", {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(body),
    });
    let data = {};
    try { data = await resp.json(); } catch { /* an empty body */ }
    if (resp.ok) {
      location.assign(data.redirect || target());
      return;
    }
    if (data.error === "REGISTRATION_REQUIRED") {
      showSetup();
      error.textContent = "No user exists yet: create the first one with the setup code.";
    } else if (resp.status === 401) {
      error.textContent = setup ? `Not created: ${data.message || "wrong setup code"}.` : "Wrong user name or password.";
      form.password.select();
    } else {
      error.textContent = data.message || `Login failed (HTTP ${resp.status}).`;
    }
  } catch (e) {
    error.textContent = `pihub cannot be reached: ${e.message}`;
  } finally {
    button.disabled = false;
  }
});
