#!/usr/bin/env python3
"""RSS of `holdfast serve` under 2,000 slow uploads (docs/operations.md, memory under many slow clients).

Each client sends a complete request head declaring a 9 MB body, then BODY bytes of it, and stalls.
Prints the server's RSS 2 s later, its peak, and how many clients got 503.

    cargo build && python3 benches/slow_clients.py
    BODY=100 CONFIG=holdfast.toml HOLDFAST_BIN=target/release/holdfast python3 benches/slow_clients.py
"""
import os, resource, shutil, socket, subprocess, tempfile, time

PORT = int(os.environ.get("PORT", "18999"))
resource.setrlimit(resource.RLIMIT_NOFILE, (8192, 8192))
work = tempfile.mkdtemp(prefix="holdfast-slow-")
env = dict(os.environ, HOLDFAST_PASSPHRASE="slow clients test", HOLDFAST_STORE_PATH=os.path.join(work, "store"),
           HOLDFAST_LISTEN=f"127.0.0.1:{PORT}")
env.pop("HOLDFAST_ADMIN_TOKEN", None)
args = [os.path.abspath(os.environ.get("HOLDFAST_BIN", "target/debug/holdfast"))]
if os.environ.get("CONFIG"):
    args += ["--config", os.path.abspath(os.environ["CONFIG"])]
server = subprocess.Popen(args + ["serve"], env=env, cwd=work, stderr=open(os.path.join(work, "log"), "w"))
try:
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", PORT)).close()
            break
        except OSError:
            time.sleep(0.1)
    time.sleep(0.5)

    def mib(key):
        for line in open(f"/proc/{server.pid}/status"):
            if line.startswith(key):
                return int(line.split()[1]) // 1024

    base = mib("VmRSS")
    body = int(os.environ.get("BODY", "60000"))
    head = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 9000000\r\n\r\n"
    clients = []
    for _ in range(2000):
        s = socket.create_connection(("127.0.0.1", PORT))
        s.send(head + b"{" + b" " * body)
        clients.append(s)
    time.sleep(2)
    shed = 0
    for s in clients:
        s.setblocking(False)
        try:
            shed += s.recv(64).startswith(b"HTTP/1.1 503")
        except OSError:
            pass
    print(f"body {body} B: RSS {base} MiB at start, {mib('VmRSS')} MiB with 2,000 slow uploads "
          f"(peak {mib('VmHWM')} MiB); {shed} refused with 503")
finally:
    server.terminate()
    server.wait()
    shutil.rmtree(work, ignore_errors=True)
