#!/usr/bin/env python3
"""Opens rampart's /dashboard in headless Chromium while `rampart drill`
loads the server, and checks through the DevTools protocol that live values
appear on the page and change from second to second.

    scripts/check-dashboard.py CHROMIUM BASE_URL

Standard library only: the DevTools WebSocket is spoken by hand (text
frames, client-masked, as RFC 6455 asks).
"""
import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request


class Socket:
    def __init__(self, url):
        assert url.startswith("ws://"), url
        host_port, _, path = url[len("ws://"):].partition("/")
        host, _, port = host_port.partition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((
            f"GET /{path} HTTP/1.1\r\nHost: {host_port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise RuntimeError("DevTools closed the handshake")
            head += chunk
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise RuntimeError(f"DevTools refused the WebSocket: {head!r}")
        self.next_id = 0

    def _exact(self, n):
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise RuntimeError("DevTools closed the connection")
            data += chunk
        return data

    def send(self, message):
        payload = json.dumps(message).encode()
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", 0x81, 0x80 | n)
        elif n < 65536:
            header = struct.pack("!BBH", 0x81, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def receive(self):
        message = b""
        while True:
            first, second = self._exact(2)
            n = second & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._exact(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._exact(8))[0]
            payload = self._exact(n)
            message += payload
            if first & 0x80:
                return json.loads(message)

    def call(self, method, **params):
        self.next_id += 1
        self.send({"id": self.next_id, "method": method, "params": params})
        while True:
            answer = self.receive()
            if answer.get("id") == self.next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]


READ_PAGE = """JSON.stringify({
  rps: document.getElementById('k-rps').textContent,
  p99: document.getElementById('k-p99').textContent,
  clock: document.getElementById('clock').textContent,
  conn: document.getElementById('conn').textContent,
  users: [...document.querySelectorAll('#resources tbody tr[data-resource=users] td')].map(td => td.textContent),
  breakers: [...document.querySelectorAll('#breakers tbody .state')].map(b => b.className),
})"""


def open_page(chromium, url, is_page, window="1366,768"):
    """Starts headless Chromium on `url` with a throw-away profile and
    returns (browser, profile, Socket) with the Socket on the first page
    target whose URL `is_page` accepts. The caller stops the browser and
    removes the profile (see `close`)."""
    profile = tempfile.mkdtemp(prefix="rampart-chromium-")
    browser = subprocess.Popen(
        [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--remote-debugging-port=0", f"--user-data-dir={profile}", f"--window-size={window}",
         url],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        endpoint = None
        deadline = time.time() + 60
        while endpoint is None and time.time() < deadline:
            line = browser.stderr.readline()
            if not line and browser.poll() is not None:
                raise RuntimeError("chromium exited before DevTools was up")
            if "DevTools listening on " in line:
                endpoint = line.strip().split("DevTools listening on ", 1)[1]
        if endpoint is None:
            raise RuntimeError("no DevTools endpoint from chromium in 60 s")
        port = endpoint.split("://", 1)[1].split("/", 1)[0]
        for _ in range(100):
            targets = json.load(urllib.request.urlopen(f"http://{port}/json/list", timeout=10))
            pages = [t for t in targets if t.get("type") == "page" and is_page(t.get("url", ""))]
            if pages:
                return browser, profile, Socket(pages[0]["webSocketDebuggerUrl"])
            time.sleep(0.1)
        raise RuntimeError(f"the page {url} did not open")
    except BaseException:
        close(browser, profile)
        raise


def wait_until(ws, expression, seconds=30):
    """Evaluates `expression` in the page until it is true (a page still
    loading throws or answers false), for at most `seconds`."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        result = ws.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if result["result"].get("value") is True:
            return
        time.sleep(0.1)
    raise RuntimeError(f"the page never had {expression}")


def close(browser, profile):
    browser.terminate()
    try:
        browser.wait(timeout=10)
    except subprocess.TimeoutExpired:
        browser.kill()
    shutil.rmtree(profile, ignore_errors=True)


def main():
    chromium, base = sys.argv[1], sys.argv[2].rstrip("/")
    browser, profile, ws = open_page(chromium, f"{base}/dashboard", lambda url: "/dashboard" in url)
    try:
        # Loaded (under load that can take more than the first second).
        wait_until(ws, "document.readyState === 'complete' && !!document.getElementById('k-rps')")
        readings = []
        for _ in range(8):
            time.sleep(1.0)
            result = ws.call("Runtime.evaluate", expression=READ_PAGE, returnByValue=True)
            readings.append(json.loads(result["result"]["value"]))
        for r in readings:
            print("page:", json.dumps(r))
        last = readings[-1]
        failures = []
        if last["conn"] != "live":
            failures.append(f"the page is not following the event stream: {last['conn']!r}")
        if not last["users"] or last["users"][1] in ("–", "0.0"):
            failures.append(f"no live requests/s for users: {last['users']}")
        if last["rps"] in ("–", "0.0"):
            failures.append(f"no live requests/s: {last['rps']!r}")
        if len({r["clock"] for r in readings}) < 4:
            failures.append("the page's clock did not move with the stream")
        if len({json.dumps(r["users"]) for r in readings}) < 3:
            failures.append("the users row did not change from second to second")
        if failures:
            for f in failures:
                print("FAIL:", f, file=sys.stderr)
            return 1
        print("dashboard: live values appear and change in headless Chromium")
        return 0
    finally:
        close(browser, profile)


if __name__ == "__main__":
    sys.exit(main())
