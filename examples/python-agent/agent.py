#!/usr/bin/env python3
"""The example agent in Python: one process per session under the `switchboard` runtime.

    switchboard serve -- python3 examples/python-agent/agent.py

It joins its call, greets, reports the participant it talks to and the metrics of what it
does, and leaves when the runtime closes it (requested, idle, max_duration or shutdown). It
implements none of the limits: the runtime does.

The participant stays `participant_seconds` (session metadata) or `DEMO_PARTICIPANT_SECONDS`
(30 s by default), as with the demo agent; then the agent is alone and the idle timeout
closes the session. `EXAMPLE_IMPORT_SECONDS` makes its imports slow (to measure --prewarm).
"""

import asyncio
import os
import sys
import time
from pathlib import Path

try:
    import switchboard_agent
except ImportError:  # in this repository: the client lives in clients/python
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "clients" / "python"))
    import switchboard_agent

# Stands for the heavy imports of a real agent (models, SDKs): --prewarm pays them ahead.
time.sleep(float(os.environ.get("EXAMPLE_IMPORT_SECONDS", "0")))

GREETING = "Hello! How can I help you today?"
PARTICIPANT = "console-user"


def stay_seconds(metadata):
    value = metadata.get("participant_seconds", os.environ.get("DEMO_PARTICIPANT_SECONDS", "30"))
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        return 30.0


def log(message):
    # stdout is for logs: the runtime forwards each line with the session id.
    print(message, flush=True)


async def converse(channel, session):
    """The agent's call: greet, talk with the participant until they leave."""
    started = time.perf_counter()
    reply = GREETING  # a real agent asks its model here
    channel.latency("llm_latency_ms", (time.perf_counter() - started) * 1000)
    channel.metrics(counters={"llm_input_tokens": 12, "llm_output_tokens": len(reply.split()), "tts_characters": len(reply)})
    log(f"agent says: {reply}")
    channel.participant_joined(PARTICIPANT)
    log(f"{PARTICIPANT} joined")
    await asyncio.sleep(stay_seconds(session.metadata))
    channel.participant_left(PARTICIPANT)
    log(f"{PARTICIPANT} left; the agent is alone")


async def main():
    channel = await switchboard_agent.AsyncChannel.connect()
    session = await channel.session()
    if session is None:
        return  # the runtime went away before handing over a session
    log(f"joining call {session.call_type}:{session.call_id} for session {session.session_id}")
    channel.joined()
    talk = asyncio.create_task(converse(channel, session))
    close = await channel.closed()
    talk.cancel()
    log(f"leaving the call: {close.reason}")
    await channel.drain()


if __name__ == "__main__":
    asyncio.run(main())
