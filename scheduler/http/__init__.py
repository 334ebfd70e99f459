"""The HTTP front, the only room that imports fastapi, starlette or uvicorn: the app (`app`), its
routers per resource (`routers`), the raw-ASGI hot path, authentication, the one map from errors
to answers (`answers`), the one body reader (`body`), the bodies (`schemas`), metrics, the status
page, and the draining server (`server`), which calls the scheduler's `begin_shutdown`/`drain`."""
