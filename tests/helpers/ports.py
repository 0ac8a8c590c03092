"""Free TCP ports on loopback, for the servers that tests and benchmarks start."""
import socket

LOOPBACK = "127.0.0.1"


def free_ports(count, host=LOOPBACK):
    """`count` distinct ports that nothing listened on a moment ago.  They are
    all bound at once, so the kernel hands out distinct ones, then released
    for the caller's servers to take."""
    if not isinstance(count, int) or count < 1:
        raise ValueError(f"free_ports: count must be a positive int, not {count!r}")
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(sock)
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def free_port(host=LOOPBACK):
    return free_ports(1, host)[0]
