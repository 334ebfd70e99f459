"""The main process's side of rendering: the render process's supervisor (`service`), render jobs in
the scheduler (`executor`, `model`), the submission-time URL check (`guard`) and the Python client
(`client`). What runs in the render process is `workers.render`."""
