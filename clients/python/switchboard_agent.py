"""Switchboard's agent protocol, version 1, for Python agents (standard library only).

Run an agent under the runtime, one process per session::

    switchboard serve -- python3 agent.py

The runtime starts the process with a Unix socket on the file descriptor that
``SWITCHBOARD_AGENT_FD`` names (3); each message is one JSON object on one line
(docs/process-agents.md). The runtime enforces every limit (idle, maximum duration, join
deadline, memory) and the lease: an agent only says what happens in its call and leaves when
it is told to.

Plain (threads)::

    channel = Channel.connect()          # after your imports: "ready"
    session = channel.session()          # blocks until a session is handed over
    channel.joined()
    channel.participant_joined("user-1")
    channel.count("llm_input_tokens", 12)
    channel.latency("llm_latency_ms", 250.0)
    close = channel.wait_close()         # Close(reason="requested", grace_seconds=5.0)

Async (asyncio)::

    channel = await AsyncChannel.connect()
    session = await channel.session()
    channel.joined()
    close = await channel.closed()

When the runtime goes away (its socket closes), ``session()`` returns ``None`` and the close
has the reason ``"channel_closed"``: the agent should exit.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

PROTOCOL = 1
"""The protocol version this module speaks."""

FD_VARIABLE = "SWITCHBOARD_AGENT_FD"
MAX_MESSAGE_BYTES = 1 << 20
CHANNEL_CLOSED = "channel_closed"


class ProtocolError(RuntimeError):
    """The runtime is not there, or it speaks another protocol version."""


@dataclass(frozen=True)
class Session:
    """The session this process is for."""

    session_id: str
    call_id: str
    call_type: str
    metadata: Dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Close:
    """Leave now: why, and the seconds before SIGTERM."""

    reason: str
    grace_seconds: float


def _socket() -> socket.socket:
    fd = os.environ.get(FD_VARIABLE)
    if fd is None:
        raise ProtocolError(
            f"{FD_VARIABLE} is not set: run this agent under the runtime "
            "(switchboard serve -- python3 agent.py)"
        )
    version = os.environ.get("SWITCHBOARD_AGENT_PROTOCOL", str(PROTOCOL))
    if version != str(PROTOCOL):
        raise ProtocolError(f"the runtime speaks protocol {version}; this module speaks {PROTOCOL}")
    sock = socket.socket(fileno=int(fd))
    # The channel is this process's alone: processes it starts do not inherit it (the fd
    # arrives inheritable; a client in another language sets FD_CLOEXEC likewise).
    os.set_inheritable(sock.fileno(), False)
    return sock


def _line(message: Mapping[str, Any]) -> bytes:
    return (json.dumps(message, separators=(",", ":")) + "\n").encode()


def _metrics(counters: Optional[Mapping[str, float]], latencies: Optional[Mapping[str, List[float]]]) -> bytes:
    return _line({"type": "metrics", "counters": dict(counters or {}), "latencies": dict(latencies or {})})


def _parse(raw: bytes) -> Optional[Dict[str, Any]]:
    """One line as a message object, or None (ignored) when it is not one."""
    try:
        message = json.loads(raw)
    except ValueError:
        return None
    return message if isinstance(message, dict) else None


def _session(message: Mapping[str, Any]) -> Session:
    return Session(
        session_id=message["session_id"],
        call_id=message["call_id"],
        call_type=message.get("call_type", "default"),
        metadata=message.get("metadata") or {},
    )


def _close(message: Mapping[str, Any]) -> Close:
    return Close(reason=message.get("reason", "requested"), grace_seconds=float(message.get("grace_seconds", 0)))


class _Reports:
    """What an agent reports; `_send` writes one line."""

    def _send(self, data: bytes) -> None:
        raise NotImplementedError

    def joined(self) -> None:
        """The agent is in its call: the session is running and its clocks start."""
        self._send(_line({"type": "joined"}))

    def participant_joined(self, participant_id: str) -> None:
        """Someone else joined the call."""
        self._send(_line({"type": "participant_joined", "participant_id": participant_id}))

    def participant_left(self, participant_id: str) -> None:
        """Someone left; once the agent is alone, the idle clock runs."""
        self._send(_line({"type": "participant_left", "participant_id": participant_id}))

    def metrics(
        self,
        counters: Optional[Mapping[str, float]] = None,
        latencies: Optional[Mapping[str, List[float]]] = None,
    ) -> None:
        """Counter increments and latency samples (ms) by the API's base names."""
        self._send(_metrics(counters, latencies))

    def count(self, name: str, n: float = 1) -> None:
        """Adds `n` to a counter (`llm_input_tokens`, `tts_characters`, ...)."""
        self.metrics(counters={name: n})

    def latency(self, name: str, ms: float) -> None:
        """Records one latency sample in milliseconds (`llm_latency_ms`, ...)."""
        self.metrics(latencies={name: [ms]})

    def finished(self) -> None:
        """The agent is done with its call: the session ends `agent_finished`."""
        self._send(_line({"type": "finished"}))


class Channel(_Reports):
    """The protocol over plain sockets and a reader thread."""

    def __init__(self, sock: socket.socket):
        self._sock = sock
        self._lock = threading.Lock()
        self._state = threading.Condition()
        self._session: Optional[Session] = None
        self._close: Optional[Close] = None

    @classmethod
    def connect(cls) -> "Channel":
        """Says `ready` (call it once the imports are done) and starts reading."""
        channel = cls(_socket())
        channel._send(_line({"type": "ready", "protocol": PROTOCOL}))
        threading.Thread(target=channel._read, name="switchboard-agent", daemon=True).start()
        return channel

    def _send(self, data: bytes) -> None:
        with self._lock:
            try:
                self._sock.sendall(data)
            except OSError:
                pass  # the runtime is gone; the close says so

    def _read(self) -> None:
        reader = self._sock.makefile("rb")
        try:
            for raw in reader:
                if len(raw) > MAX_MESSAGE_BYTES:
                    continue
                message = _parse(raw)
                if message is None:
                    continue
                kind = message.get("type")
                try:
                    with self._state:
                        if kind == "session" and self._session is None:
                            self._session = _session(message)
                        elif kind == "close" and self._close is None:
                            self._close = _close(message)
                        self._state.notify_all()
                except (KeyError, TypeError, ValueError):
                    continue  # a malformed message is skipped, as the runtime does
        except Exception:  # noqa: BLE001 - whatever broke the channel, the agent is told to leave
            pass
        with self._state:
            if self._close is None:
                self._close = Close(CHANNEL_CLOSED, 0.0)
            self._state.notify_all()

    def session(self, timeout: Optional[float] = None) -> Optional[Session]:
        """The session, once handed over; `None` if the runtime went away first (or on
        timeout)."""
        with self._state:
            self._state.wait_for(lambda: self._session is not None or self._close is not None, timeout)
            return self._session

    def wait_close(self, timeout: Optional[float] = None) -> Optional[Close]:
        """Blocks until the runtime says to leave (or `timeout`: then `None`)."""
        with self._state:
            self._state.wait_for(lambda: self._close is not None, timeout)
            return self._close

    @property
    def close_requested(self) -> Optional[Close]:
        """The close, if one came."""
        with self._state:
            return self._close


class AsyncChannel(_Reports):
    """The protocol over asyncio streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self._reader = reader
        self._writer = writer
        loop = asyncio.get_running_loop()
        self._session: asyncio.Future = loop.create_future()
        self._close: asyncio.Future = loop.create_future()
        self._task = loop.create_task(self._read())

    @classmethod
    async def connect(cls) -> "AsyncChannel":
        """Says `ready` (await it once the imports are done) and starts reading."""
        reader, writer = await asyncio.open_unix_connection(sock=_socket(), limit=MAX_MESSAGE_BYTES + 1)
        channel = cls(reader, writer)
        channel._send(_line({"type": "ready", "protocol": PROTOCOL}))
        return channel

    def _send(self, data: bytes) -> None:
        if not self._writer.is_closing():
            self._writer.write(data)

    async def _read(self) -> None:
        try:
            while True:
                try:
                    raw = await self._reader.readline()
                except ValueError:
                    continue  # a line over the limit is skipped (asyncio dropped it)
                if not raw:
                    break
                message = _parse(raw)
                if message is None:
                    continue
                kind = message.get("type")
                try:
                    if kind == "session" and not self._session.done():
                        self._session.set_result(_session(message))
                    elif kind == "close" and not self._close.done():
                        self._close.set_result(_close(message))
                except (KeyError, TypeError, ValueError):
                    continue  # a malformed message is skipped, as the runtime does
        except Exception:  # noqa: BLE001 - whatever broke the channel, the agent is told to leave
            pass
        if not self._session.done():
            self._session.set_result(None)
        if not self._close.done():
            self._close.set_result(Close(CHANNEL_CLOSED, 0.0))

    async def session(self) -> Optional[Session]:
        """The session, once handed over; `None` if the runtime went away first."""
        return await asyncio.shield(self._session)

    async def closed(self) -> Close:
        """Waits until the runtime says to leave."""
        return await asyncio.shield(self._close)

    @property
    def close_requested(self) -> Optional[Close]:
        """The close, if one came."""
        return self._close.result() if self._close.done() else None

    async def drain(self) -> None:
        """Waits until what was reported is written."""
        try:
            await self._writer.drain()
        except OSError:
            pass
