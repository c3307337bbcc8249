"""Debian's chromium, headless, driven over its DevTools pipe: load a page, read its DOM.

One browser serves every page of a test module: a ``--dump-dom`` run starts a browser per
page (3-4 s each on this 2-core box), a dozen pages would take most of a minute. The
DevTools protocol over ``--remote-debugging-pipe`` (commands on fd 3, replies on fd 4, each
a JSON message ended by NUL) needs no driver or client package.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import subprocess
import time
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
# What the brief's --dump-dom runs use: no GPU, no network of chromium's own (updates,
# sync, QUIC), a profile of the caller's.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


class ChromiumError(RuntimeError):
    """The browser did not answer, or answered with an error."""


class Chromium:
    """``with Chromium(profile) as browser: html = browser.dom(url)``."""

    def __init__(self, profile: Path, timeout: float = 30.0) -> None:
        self.profile = profile
        self.timeout = timeout
        self._next_id = 0
        self._buffer = b""
        self._session = ""
        self._events: list[dict[str, Any]] = []

    def __enter__(self) -> Chromium:
        # Our ends, and the browser's ends moved past 9, so that putting them on fds 3 and 4
        # cannot overwrite one with the other; bash's exec does that and becomes chromium.
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        theirs = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_browser_r, from_browser_w)]
        os.close(to_browser_r)
        os.close(from_browser_w)
        read_end, write_end = theirs
        command = f'exec "$0" "$@" 3<&{read_end} 4>&{write_end} {read_end}<&- {write_end}>&-'
        try:
            self.process = subprocess.Popen(  # noqa: S603 (a fixed binary and flags)
                ["/bin/bash", "-c", command, CHROMIUM, *FLAGS, f"--user-data-dir={self.profile}",
                 "--remote-debugging-pipe", "about:blank"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                pass_fds=tuple(theirs))
        finally:
            for fd in theirs:
                os.close(fd)
        try:
            target = self._call("Target.createTarget", url="about:blank")["targetId"]
            self._session = self._call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            self._call("Page.enable")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        try:
            self._session = ""
            self._send("Browser.close")
            self.process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()  # by the PID we started
            self.process.wait(timeout=10)
        finally:
            os.close(self._to_browser)
            os.close(self._from_browser)

    def dom(self, url: str) -> str:
        """The page's DOM (outerHTML) once it has fired its load event."""
        self._events.clear()
        navigated = self._call("Page.navigate", url=url)
        if navigated.get("errorText"):
            raise ChromiumError(f"{url}: {navigated['errorText']}")
        self._wait_event("Page.loadEventFired")
        value = self._call("Runtime.evaluate", expression="document.documentElement.outerHTML",
                           returnByValue=True)["result"].get("value")
        if not isinstance(value, str):
            raise ChromiumError(f"{url}: no DOM")
        return value

    def _send(self, method: str, **params: Any) -> int:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if self._session:
            message["sessionId"] = self._session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        return self._next_id

    def _call(self, method: str, **params: Any) -> dict[str, Any]:
        wanted = self._send(method, **params)
        while True:
            message = self._receive()
            if message.get("id") == wanted:
                if "error" in message:
                    raise ChromiumError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            if "method" in message:
                self._events.append(message)

    def _wait_event(self, method: str) -> None:
        while not any(event["method"] == method for event in self._events):
            message = self._receive()
            if "method" in message:
                self._events.append(message)

    def _receive(self) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                raise ChromiumError(f"no answer from chromium in {self.timeout} s")
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                raise ChromiumError(f"chromium closed its pipe (exit {self.process.poll()})")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message: dict[str, Any] = json.loads(raw)
        return message
