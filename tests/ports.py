"""One free-port helper for every suite that starts a server (Ray Serve, Label Studio, a
llama.cpp server, uvicorn): four copies had drifted apart, and only one knew about Ray's race."""

from __future__ import annotations

import random
import socket


def free_port() -> int:
    """A free port below the kernel's ephemeral range (32768+) and above Ray's worker ports
    (10002-19999): Ray's own processes bind ephemeral ports while Serve starts, and one of
    them once took the port a test had picked from that range (the proxy then failed to bind)."""
    for port in random.sample(range(20000, 32000), 200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-32000")
