"""An in-memory SessionNode over real gRPC, for router tests that need no browser.

The node contract it keeps is described in `loadtest.simnode`, where it lives: the load test
runs the same fake as its simulated nodes.
"""

from __future__ import annotations

from loadtest.simnode import LIVE, FakeNode

__all__ = ["LIVE", "FakeNode"]
