"""HTTP fronts (`http_workers >= 1`): processes that share the daemon's port and do the HTTP work,
handing the main process one msgpack message per request over pipes. `protocol` (the wire),
`front_app` and `process` (what runs in a front), `link`, `serving`, `supervision` and `metrics`
(the main process's side)."""
