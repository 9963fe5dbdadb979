"""The Temporal area's fixtures: one in-memory dev server per test process (each
xdist worker that runs a Temporal test starts its own), stopped at the session's end."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from temporal_support import DevServer


@pytest.fixture(scope="session")
def temporal_server() -> Iterator[DevServer]:
    server = DevServer.start()
    try:
        yield server
    finally:
        server.stop()
