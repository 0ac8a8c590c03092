"""RESP2, the Redis serialization protocol: a parser for requests and an
encoder for replies, with no I/O.

Requests are arrays of bulk strings (`*2\\r\\n$3\\r\\nGET\\r\\n$1\\r\\nk\\r\\n`) or,
as redis-cli and telnet send them, inline commands (`GET k\\r\\n`).  The
parser takes bytes as they arrive, in pieces of any size, and returns the
commands that are whole; what is left waits for more.  Input it cannot
accept raises RespError: the stream cannot be resynchronised after it, so
the connection answers with the error and closes (as Redis does)."""

MAX_BULK = 64 << 20        # bytes in one argument (Redis allows 512 MiB)
MAX_ARGS = 1 << 20         # arguments in one command
MAX_INLINE = 64 << 10      # bytes in an inline command line


class RespError(Exception):
    """Input that breaks the protocol; the message is what Redis says.
    `commands` holds the whole commands that came before it."""
    commands = ()


class RespParser:
    def __init__(self, max_bulk=MAX_BULK, max_args=MAX_ARGS):
        self.buf = bytearray()
        self.pos = 0
        self.max_bulk = max_bulk
        self.max_args = max_args

    @property
    def buffered(self):
        return len(self.buf) - self.pos

    def feed(self, data):
        """The commands (lists of bytes) completed by data, in order."""
        self.buf += data
        out = []
        while self.pos < len(self.buf):
            try:
                command = self._one()
            except RespError as exc:
                exc.commands = out
                raise
            if command is None:
                break
            if command:  # an empty inline line is skipped, as Redis does
                out.append(command)
        if self.pos:
            del self.buf[:self.pos]
            self.pos = 0
        return out

    def _line(self, start, limit):
        """(the line from start without CRLF, the index after it), or None
        when the line is not whole yet."""
        end = self.buf.find(b"\r\n", start, start + limit + 2)
        if end < 0:
            if len(self.buf) - start > limit + 1:
                raise RespError("Protocol error: too big inline request"
                                if self.buf[start:start + 1] != b"*" else
                                "Protocol error: invalid multibulk length")
            return None
        return bytes(self.buf[start:end]), end + 2

    def _one(self):
        buf, pos = self.buf, self.pos
        if buf[pos:pos + 1] != b"*":
            got = self._line(pos, MAX_INLINE)
            if got is None:
                return None
            line, self.pos = got
            return _inline(line)
        got = self._line(pos, 32)
        if got is None:
            return None
        count = _number(got[0][1:], "invalid multibulk length")
        if count > self.max_args:
            raise RespError("Protocol error: invalid multibulk length")
        at = got[1]
        args = []
        for _ in range(max(count, 0)):
            got = self._line(at, 32)
            if got is None:
                return None
            head, at = got
            if head[:1] != b"$":
                raise RespError(f"Protocol error: expected '$', got '{head[:1].decode('latin-1')}'")
            size = _number(head[1:], "invalid bulk length")
            if size < 0 or size > self.max_bulk:
                raise RespError("Protocol error: invalid bulk length")
            if len(buf) < at + size + 2:
                return None
            if buf[at + size:at + size + 2] != b"\r\n":
                raise RespError("Protocol error: bulk string not followed by CRLF")
            args.append(bytes(buf[at:at + size]))
            at += size + 2
        self.pos = at
        return args if count > 0 else []


def _number(text, what):
    try:
        if not text or text.strip() != text:
            raise ValueError
        return int(text)
    except ValueError:
        raise RespError(f"Protocol error: {what}") from None


def _inline(line):
    """An inline command: words split on spaces, with "..." and '...'
    quoting as redis-cli writes them."""
    args, word, quote, i, text = [], bytearray(), None, 0, line
    in_word = False
    while i < len(text):
        ch = text[i:i + 1]
        if quote:
            if ch == b"\\" and quote == b'"' and i + 1 < len(text):
                nxt = text[i + 1:i + 2]
                word += {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"0": b"\0"}.get(nxt, nxt)
                i += 2
                continue
            if ch == quote:
                quote = None
            else:
                word += ch
        elif ch in (b'"', b"'"):
            quote, in_word = ch, True
        elif ch in (b" ", b"\t"):
            if in_word:
                args.append(bytes(word))
                word, in_word = bytearray(), False
        else:
            word += ch
            in_word = True
        i += 1
    if quote:
        raise RespError("Protocol error: unbalanced quotes in request")
    if in_word:
        args.append(bytes(word))
    return args


# ---- replies -----------------------------------------------------------------------------------

def simple(text):
    return b"+" + text.encode() + b"\r\n"


def error(text):
    return b"-" + text.replace("\r", " ").replace("\n", " ").encode() + b"\r\n"


def integer(n):
    return b":%d\r\n" % n


def bulk(data):
    if data is None:
        return b"$-1\r\n"
    if isinstance(data, str):
        data = data.encode()
    return b"$%d\r\n" % len(data) + data + b"\r\n"


def array(items):
    """items: already encoded replies; None is the null array."""
    if items is None:
        return b"*-1\r\n"
    return b"*%d\r\n" % len(items) + b"".join(items)


OK = simple("OK")
