"""What runs in child processes, and the wire to them: the model worker (`process`, `runtime`,
`batching`, `protocol`) and the render process (`workers.render`). Nothing here imports
`scheduler`: the main process imports this package, never the other way round."""
