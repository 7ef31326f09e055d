#!/usr/bin/env python3
"""Pseudo-terminal for a simulated serial device (simulator/pty/pty-device.ts drives it).

Usage: pty_bridge.py [LINK_PATH]

Opens a pty pair and puts the slave in raw mode. The first line on stdout is the slave's path
(LINK_PATH, a symlink to it, when given); after that, stdout carries every byte a host writes to the
slave and whatever arrives on stdin goes to the host. Exits when stdin closes or on SIGTERM/SIGINT,
removing LINK_PATH.

The bridge keeps its own fd on the slave for its whole life: otherwise the master would read EIO
(hang-up) each time the host process dies, and a SIGKILLed host must leave the "cable" intact for the
next host process to open. Bytes for the host while no host has the port open wait in the slave's
input queue; @serialport/bindings-cpp flushes that queue when it opens the port, as stale bytes on a
real UART are lost.
"""

import errno
import os
import pty
import select
import signal
import sys
import termios
import tty

CHUNK = 65536


def main() -> int:
    link = sys.argv[1] if len(sys.argv) > 1 else None
    master, slave = pty.openpty()
    # Raw: no echo, no CR/NL translation, no signals from ^C bytes inside bitmaps.
    tty.setraw(slave, termios.TCSANOW)
    path = os.ttyname(slave)
    if link:
        # A stale symlink from a bridge that was killed is replaced; anything else is not ours.
        if os.path.islink(link):
            os.unlink(link)
        elif os.path.lexists(link):
            sys.stderr.write(f"pty_bridge: {link} exists and is not a symlink\n")
            return 1
        os.symlink(path, link)

    def cleanup() -> None:
        if link:
            try:
                if os.path.islink(link) and os.readlink(link) == path:
                    os.unlink(link)
            except OSError:
                pass

    def on_signal(_signum, _frame):
        cleanup()
        os._exit(0)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    # A full slave input queue (nobody reading) must not block the relay: those bytes are dropped,
    # as a UART with no listener drops them.
    os.set_blocking(master, False)
    write_all(1, (link or path).encode() + b"\n")

    stdin = 0
    try:
        while True:
            readable, _, _ = select.select([master, stdin], [], [])
            if master in readable:
                try:
                    data = os.read(master, CHUNK)
                except OSError as e:
                    # EIO cannot happen while we hold the slave, but never spin on it.
                    if e.errno not in (errno.EAGAIN, errno.EIO):
                        raise
                    data = b""
                if data:
                    write_all(1, data)
            if stdin in readable:
                data = os.read(stdin, CHUNK)
                if not data:
                    break
                to_host(master, data)
    except BrokenPipeError:
        pass
    finally:
        cleanup()
    return 0


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def to_host(master: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(master, view)
        except BlockingIOError:
            return
        view = view[n:]


if __name__ == "__main__":
    sys.exit(main())
