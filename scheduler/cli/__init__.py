"""The `modelsched` command line, less the daemon itself: the grammar (`parser`), the commands that
talk to a running daemon through the Python client (`remote`), the tables they print (`tables`), and
the commands on this machine's files (`local`: config, journal). `server.py` is the entry point and
runs `serve`; nothing here imports the web framework."""
