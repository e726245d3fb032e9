"""The office console (central.web.app) and the thread that serves it (uvicorn)."""

from __future__ import annotations

import threading
import time

import uvicorn

from central.server import Central
from central.web.app import build, session_secret


class WebServer(threading.Thread):
    """uvicorn in a thread of central's process, so the console shares central's database and broker
    connection; `stop()` ends it in order."""

    def __init__(self, central: Central, *, host: str | None = None, port: int | None = None):
        super().__init__(name="central-web", daemon=True)
        web = central.cfg.web
        app = build(central, secret=session_secret(web.secret_file), secure_cookies=web.secure_cookies)
        self.host, self.port = host or web.host, port if port is not None else web.port
        self.server = uvicorn.Server(uvicorn.Config(app, host=self.host, port=self.port, log_level="warning", access_log=False,
                                                    proxy_headers=True, forwarded_allow_ips="127.0.0.1"))

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def run(self) -> None:
        self.server.run()

    def start_serving(self, timeout: float = 10.0) -> WebServer:
        self.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.is_alive() or time.monotonic() > deadline:
                raise OSError(f"the office console could not listen on {self.host}:{self.port}")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self.server.should_exit = True
        self.join(timeout)
