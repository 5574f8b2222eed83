"""``python tests/kill_during_checkpoint.py N jaxcnn-args...``: run ``jaxcnn`` and SIGKILL the process
in the middle of its N-th checkpoint write -- after the new bytes are in the temporary file, before
they are synced and renamed over the previous checkpoint -- as a power cut or an OOM kill would."""

import os
import signal
import sys

from jaxcnn import cli

KILL_AT = int(sys.argv[1])
_real_fsync, _writes = os.fsync, [0]


def fsync(fd):
    if ".checkpoint.msgpack." in os.readlink(f"/proc/self/fd/{fd}"):
        _writes[0] += 1
        if _writes[0] == KILL_AT:
            os.kill(os.getpid(), signal.SIGKILL)
    return _real_fsync(fd)


os.fsync = fsync
sys.exit(cli.main(sys.argv[2:]))
