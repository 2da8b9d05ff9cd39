#!/usr/bin/env python3
"""How long Python's shutdown() waits for serve_forever() to notice it.

serve_forever() sleeps in poll() for up to poll_interval seconds and only
then looks at the flag shutdown() sets; nothing wakes it sooner. So the wait
is anywhere between 0 and poll_interval. The C library's shutdown() writes
a byte to a pipe that the same poll() watches, and the loop wakes at once.

    python3 07-socketserver-clone/examples/shutdown_latency.py [POLL_INTERVAL]
"""
import socketserver
import sys
import threading
import time

poll_interval = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0
server = socketserver.TCPServer(("127.0.0.1", 0), socketserver.BaseRequestHandler)
loop = threading.Thread(target=server.serve_forever, args=(poll_interval,))
loop.start()
time.sleep(0.1)  # let the loop enter its first poll()

start = time.monotonic()
server.shutdown()  # returns once serve_forever() has left its loop
waited = time.monotonic() - start
loop.join()
server.server_close()
print(f"Python: shutdown() waited {waited * 1000:.0f} ms (poll_interval {poll_interval:g} s)")
