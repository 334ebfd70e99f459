// The login form `/` shows while the daemon wants a token: `POST /login` sets the session cookie
// (HttpOnly: this script never sees it), then the dashboard loads.
"use strict";

document.getElementById("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  const error = document.getElementById("login-error");
  const answer = await fetch("/login", {
    method: "POST",
    headers: {"Content-Type": "application/json"},
    body: JSON.stringify({token: document.getElementById("token").value}),
  });
  if (answer.ok) {
    location.replace("/");
    return;
  }
  const body = await answer.json().catch(() => ({}));
  error.textContent = body.detail || "HTTP " + answer.status;
  error.hidden = false;
});
