# A stand-in for systemd's notify socket: binds a unix datagram socket and prints each message as
# one JSON line {"pid": sender, "fields": {...}} (SO_PASSCRED gives the sender's pid, as systemd sees it).
import json, os, socket, struct, sys

path = sys.argv[1]
try:
    os.unlink(path)
except FileNotFoundError:
    pass
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
s.bind(path)
print(json.dumps({"listening": path}), flush=True)
while True:
    data, anc, _, _ = s.recvmsg(65536, socket.CMSG_SPACE(12))
    pid = None
    for level, kind, payload in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            pid = struct.unpack("iII", payload[:12])[0]
    fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
    print(json.dumps({"pid": pid, "fields": fields}), flush=True)
