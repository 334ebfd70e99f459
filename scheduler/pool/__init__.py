"""Child processes: the one `ChildProcess` (spawn, environment pinning, pipes, sentinel, reap) that
model workers and the render process both use, the frame writer for its pipe, the one supervision
policy, and the launch of model workers (process or, for the ASYNC type, thread)."""
