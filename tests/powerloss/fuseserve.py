"""A FUSE filesystem serving ONE file, the block device image, that logs every write and every fsync in order.

Run as its own process: ``python -m tests.powerloss.fuseserve <backing.img> <mountpoint> <log>``. The loop device
placed on ``<mountpoint>/disk.img`` turns the block layer's writes into ``write(offset, data)`` calls here and its
flushes (REQ_PREFLUSH; FUA is emulated as write + flush because loop has no FUA) into ``fsync`` calls here, so the
log holds exactly what reached the "device" and where the device was told to make it durable.

Log records: b"W" + u64 offset + u32 length + data, or b"F" (a flush). Recording starts only after the byte
``b"R"`` is written to ``<log>.ctl``... simpler: it starts when the file ``<log>.start`` exists and stops when it
is removed, so mkfs and the setup of the node are not recorded.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
import sys
import threading

import mfusepy as fuse

NAME = "disk.img"


class OneFile(fuse.Operations):
    use_ns = True

    def __init__(self, backing: str, log: str) -> None:
        self.fd = os.open(backing, os.O_RDWR)
        self.size = os.fstat(self.fd).st_size
        self.log = open(log, "ab", buffering=1 << 20)
        self.flag = log + ".start"
        self.lock = threading.Lock()

    def _recording(self) -> bool:
        return os.path.exists(self.flag)

    def getattr(self, path, fh=None):
        if path == "/":
            return {"st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2}
        if path == "/" + NAME:
            return {"st_mode": stat.S_IFREG | 0o600, "st_nlink": 1, "st_size": self.size}
        raise fuse.FuseOSError(errno.ENOENT)

    def readdir(self, path, fh):
        return [".", "..", NAME]

    def open(self, path, flags):
        if path != "/" + NAME:
            raise fuse.FuseOSError(errno.ENOENT)
        return 0

    def read(self, path, size, offset, fh):
        return os.pread(self.fd, size, offset)

    def write(self, path, data, offset, fh):
        with self.lock:
            os.pwrite(self.fd, data, offset)
            if self._recording():
                self.log.write(b"W" + struct.pack("<QI", offset, len(data)) + bytes(data))
        return len(data)

    def truncate(self, path, length, fh=None):
        if length != self.size:
            raise fuse.FuseOSError(errno.EPERM)
        return 0

    def fsync(self, path, datasync, fh):
        with self.lock:
            if self._recording():
                self.log.write(b"F")
                self.log.flush()
        return 0

    def flush(self, path, fh):
        # close(2) of the FUSE file, not a device flush: loop's flushes come as fsync.
        with self.lock:
            self.log.flush()
        return 0

    def release(self, path, fh):
        return 0

    def destroy(self, path):
        self.log.flush()
        self.log.close()


def main() -> None:
    backing, mountpoint, log = sys.argv[1:4]
    fuse.FUSE(OneFile(backing, log), mountpoint, foreground=True, nothreads=True, allow_other=False)


if __name__ == "__main__":
    main()
