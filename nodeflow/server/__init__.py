"""``nodeflow serve``: a job server with a persistent queue, live events, and ComfyUI's API.

- `store`: jobs, history and events in SQLite (WAL).
- `hub`: events written to the log, then handed to every connected listener.
- `worker`: the `Worker` protocol, the local executor-per-device worker, the dispatcher.
- `app`: the FastAPI application and the native API; `comfy`: the ComfyUI-compatible API.
- `guard` and `safety`: tokens, origins, size limits, and files only inside the server's folders.
- `main`: the command line.
"""
