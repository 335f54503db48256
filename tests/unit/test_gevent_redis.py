"""The web's gevent worker looks for unread Redis data with the system's poll and waits with
gevent's (trustcard.gevent_redis). In a child process: gevent's monkey-patching would change
the whole test process."""

from __future__ import annotations

import subprocess
import sys
import textwrap

CHILD = textwrap.dedent("""
    from gevent import monkey
    monkey.patch_all()
    import socket, time
    import gevent
    from redis._parsers import hiredis
    from trustcard.gevent_redis import install_quick_looks

    assert install_quick_looks() is True
    assert install_quick_looks() is False  # once
    quiet, peer = socket.socketpair()
    ticks = []
    ticker = gevent.spawn(lambda: [ticks.append(gevent.sleep(0.01)) for _ in range(10)])
    looks = [hiredis._socket_can_read(quiet, 0) for _ in range(1000)]
    assert looks == [False] * 1000 and not ticks, "a look yielded to other greenlets"
    began = time.monotonic()
    assert hiredis._socket_can_read(quiet, 0.2) is False  # a wait: other greenlets run meanwhile
    assert time.monotonic() - began >= 0.15 and len(ticks) >= 5, ticks
    peer.sendall(b"+OK\\r\\n")
    assert hiredis._socket_can_read(quiet, 0) is True
    assert hiredis._socket_is_closed(quiet) is False
    peer.close()
    quiet.recv(16)
    assert hiredis._socket_is_closed(quiet) is True
    print("ok")
""")


def test_a_look_for_unread_data_is_the_systems_poll_and_a_wait_stays_cooperative() -> None:
    child = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60)
    assert child.returncode == 0 and child.stdout.strip() == "ok", child.stderr
