"""The FastAPI routes, one module per resource: jobs, models, render, system. Each module's
`router(...)` builds its `APIRouter` over the scheduler it is given."""
