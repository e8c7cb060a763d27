#!/usr/bin/env python3
"""The smallest Python agent, with the plain (threaded) client: joins, reports one
participant, leaves on close. `EXAMPLE_IMPORT_SECONDS` makes its imports slow.

    switchboard serve --prewarm 2 -- python3 examples/python-agent/plain_agent.py
"""

import os
import sys
import time
from pathlib import Path

try:
    import switchboard_agent
except ImportError:  # in this repository: the client lives in clients/python
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "clients" / "python"))
    import switchboard_agent

time.sleep(float(os.environ.get("EXAMPLE_IMPORT_SECONDS", "0")))  # heavy imports

channel = switchboard_agent.Channel.connect()
print(f"ready in pid {os.getpid()}", flush=True)
session = channel.session()
if session is None:
    sys.exit(0)  # the runtime went away first
print(f"in call {session.call_id}", flush=True)
channel.joined()
channel.participant_joined("plain-user")
channel.count("llm_input_tokens", 1)
close = channel.wait_close()
print(f"leaving: {close.reason}", flush=True)
