"""``resetguard demo``: local servers that fail like production ones, three clients side by side.

Run ``resetguard demo`` (or ``resetguard demo --json``). Everything runs on 127.0.0.1 and
is cleaned up before the command returns.
"""

from __future__ import annotations

from ._scenarios import SCENARIOS, ClientResult, Scenario, run_scenario
from ._server import FlakyServer, ServerStats

__all__ = ["SCENARIOS", "ClientResult", "FlakyServer", "Scenario", "ServerStats", "run_scenario"]
