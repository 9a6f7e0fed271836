"""Files served over http from 127.0.0.1 for the duration of a test: the URLs and hub names that the checkpoint
loaders fetch (nothing reaches the internet)."""

import contextlib
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator, List


class Served:
    """A folder served at `url`; `requests` lists the paths asked for, in order."""

    def __init__(self, folder: Path, url: str, requests: List[str]) -> None:
        self.folder, self.url, self.requests = folder, url, requests

    def __call__(self, name: str) -> str:
        return f'{self.url}/{name}'


@contextlib.contextmanager
def serving(folder: Path) -> Iterator[Served]:
    """Serves `folder` on a free port of 127.0.0.1 until the block ends."""
    requests: List[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args) -> None:  # no request lines in the test output
            pass

    server = ThreadingHTTPServer(('127.0.0.1', 0), partial(Handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Served(folder, f'http://127.0.0.1:{server.server_address[1]}', requests)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
