"""The scheduler daemon: tick loop (service), HTTP API, status page, client."""
