"""The Python ssl server of linger's tests.

It requires a client certificate issued by the CA (CERT_REQUIRED), reads
an HTTP/1.1 request and its body and answers 200 "ok", one thread a
connection. A rejected certificate ends with ssl's alert and a plain close.

usage: python3 server.py HOST PORT CERT KEY CA MINVERSION MAXVERSION REQUIRECERT
(versions as TLSv1_2 or TLSv1_3).
"""
import socket
import ssl
import sys
import threading

host, port, cert, key, ca, lo, hi, need = sys.argv[1:9]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
ctx.load_verify_locations(ca)
ctx.verify_mode = ssl.CERT_REQUIRED if need == "true" else ssl.CERT_NONE
ctx.minimum_version = ssl.TLSVersion[lo]
ctx.maximum_version = ssl.TLSVersion[hi]


def serve(raw):
    try:
        raw.settimeout(10)
        with ctx.wrap_socket(raw, server_side=True) as s:
            head = b""
            while b"\r\n\r\n" not in head:
                b = s.recv(16384)
                if not b:
                    return
                head += b
            head, _, body = head.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            length -= len(body)
            while length > 0:
                b = s.recv(min(length, 65536))
                if not b:
                    return
                length -= len(b)
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n"
                      b"Connection: close\r\n\r\nok\n")
    except (OSError, ValueError):
        pass  # the connection ends here; ssl has sent its alert, if any
    finally:
        raw.close()


ln = socket.create_server((host, int(port)), backlog=256)
print("listening on %s:%s" % (host, port), flush=True)
while True:
    conn, _ = ln.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
