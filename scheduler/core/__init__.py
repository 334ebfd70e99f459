"""The event-loop core of the main process: jobs and their table, admission, deadlines, the dispatch
pass, what workers report, the one place a job ends, placement over the VRAM ledger, models,
devices, the worker records and the typed status. It imports no web framework and nothing from
`scheduler.http`, `scheduler.render` or `scheduler.journal`: those rooms reach it through
`core.ports`."""
