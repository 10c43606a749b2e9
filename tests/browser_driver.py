"""Loads one page in headless Chromium and reports what the browser saw.

Run inside the lab's client namespace by tests/test_browser.py:
``python browser_driver.py URL SCREENSHOT.png``.  It speaks the Chrome
DevTools Protocol over a pipe (``--remote-debugging-pipe``: the browser
reads commands on fd 3 and writes replies and events on fd 4, each a JSON
text ended by a NUL byte), so nothing listens on a port.  It prints one
JSON object: every response the page's load received (URL, status,
Content-Encoding, the connection it came over), failed loads, what the
page's own script found, and where the screenshot went.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

BROWSERS = ("chromium-headless-shell", "chromium", "chromium-browser")


class DevTools:
    """A CDP session over the browser's pipe pair."""

    def __init__(self, write_fd: int, read_fd: int) -> None:
        self._w = write_fd
        self._r = read_fd
        self._buf = b""
        self._next_id = 0
        self.events: list[dict] = []

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            if time.monotonic() > deadline:
                raise TimeoutError("no reply from the browser")
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                raise EOFError("the browser closed its pipe")
            self._buf += chunk
        raw, _, self._buf = self._buf.partition(b"\0")
        return json.loads(raw)

    def call(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 30) -> dict:
        self._next_id += 1
        msg: dict = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        for ev in self.events:
            if ev.get("method") == method:
                return ev
        while True:
            ev = self._read_message(deadline)
            self.events.append(ev)
            if ev.get("method") == method:
                return ev


def launch(profile: str, log) -> tuple[subprocess.Popen, DevTools]:
    exe = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if exe is None:
        raise SystemExit(f"no Chromium found (tried {', '.join(BROWSERS)})")
    to_browser_r, to_browser_w = os.pipe()
    from_browser_r, from_browser_w = os.pipe()

    def child_fds() -> None:  # the browser wants the pipe on fds 3 and 4
        os.dup2(to_browser_r, 3)
        os.dup2(from_browser_w, 4)

    # close_fds=False: Popen would close fds 3 and 4 after child_fds ran;
    # every other fd of ours is close-on-exec already

    argv = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-crash-reporter", "--disable-dev-shm-usage",
            "--disable-background-networking", "--disable-component-update",
            "--remote-debugging-pipe", f"--user-data-dir={profile}",
            "--window-size=1024,768", "about:blank"]
    proc = subprocess.Popen(argv, preexec_fn=child_fds, close_fds=False,
                            stdout=subprocess.DEVNULL, stderr=log)
    os.close(to_browser_r)
    os.close(from_browser_w)
    return proc, DevTools(to_browser_w, from_browser_r)


def main() -> None:
    url, shot = sys.argv[1], sys.argv[2]
    profile = tempfile.mkdtemp(prefix="sl-chromium-")
    log = tempfile.TemporaryFile()
    proc, cdp = launch(profile, log)
    try:
        target = cdp.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = cdp.call("Target.attachToTarget",
                           {"targetId": target, "flatten": True})["sessionId"]
        cdp.call("Network.enable", session=session)
        cdp.call("Network.setCacheDisabled", {"cacheDisabled": True}, session=session)
        cdp.call("Page.enable", session=session)
        cdp.call("Page.navigate", {"url": url}, session=session)
        cdp.wait_event("Page.loadEventFired", timeout=60)
        checked = cdp.call("Runtime.evaluate", {
            "expression": "JSON.stringify(window.pageCheck ? window.pageCheck() : null)",
            "returnByValue": True}, session=session)["result"].get("value")
        png = cdp.call("Page.captureScreenshot", {"format": "png"}, session=session)["data"]
        with open(shot, "wb") as f:
            f.write(base64.b64decode(png))
        responses, failed = [], []
        for ev in cdp.events:
            p = ev.get("params", {})
            if ev.get("method") == "Network.responseReceived":
                r = p["response"]
                headers = {k.lower(): v for k, v in r.get("headers", {}).items()}
                responses.append({"url": r["url"], "status": r["status"],
                                  "encoding": headers.get("content-encoding", ""),
                                  "connection": r.get("connectionId"),
                                  "protocol": r.get("protocol", "")})
            elif ev.get("method") == "Network.loadingFailed":
                failed.append({"id": p.get("requestId"), "error": p.get("errorText")})
        print(json.dumps({"responses": responses, "failed": failed,
                          "page": json.loads(checked) if checked else None,
                          "screenshot": shot}))
        try:
            cdp.call("Browser.close", timeout=5)
        except (OSError, EOFError, TimeoutError, RuntimeError):
            pass
    except Exception:
        log.seek(0)
        sys.stderr.write(log.read()[-4000:].decode(errors="replace"))
        raise
    finally:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    main()
