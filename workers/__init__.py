"""Worker side: the worker process entry, its run loop, the micro-batcher and the render process."""
