"""DL/T 645-2007 frames: build them, find them in a byte stream, say why one is rejected.

Wire format (FACTS.md §8): [FE FE FE FE] 68 A0..A5 68 C L DATA CS 16. The address is 12 BCD
digits sent low byte first; every data byte travels +0x33; CS is the sum mod 256 from the first
68 through the data. `Frame.data` always holds the plain bytes (the 0x33 offset removed).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

START = 0x68
END = 0x16
PREAMBLE_BYTE = 0xFE
OFFSET = 0x33
HEADER_LENGTH = 10  # 68, six address bytes, 68, C, L
MIN_FRAME_LENGTH = HEADER_LENGTH + 2  # ... CS 16

WILDCARD_ADDRESS = "AAAAAAAAAAAA"  # any meter answers: for discovering a lone meter's address
BROADCAST_ADDRESS = "999999999999"  # every meter acts, none answers

# Control byte: D7 set in replies, D6 set in error replies, D5 set when follow-up frames exist;
# D4..D0 is the function.
REPLY_BIT = 0x80
ERROR_BIT = 0x40
FOLLOW_UP_BIT = 0x20
FUNCTION_MASK = 0x1F

READ = 0x11
READ_FOLLOW_UP = 0x12
READ_ADDRESS = 0x13

# The error byte of an error reply (0xD1, 0xD2), one condition per bit.
ERROR_BITS = (
    (0x01, "other error"),
    (0x02, "no requested data"),
    (0x04, "password wrong or not authorised"),
    (0x08, "baud rate cannot be changed"),
    (0x10, "too many year time zones"),
    (0x20, "too many daily time slots"),
    (0x40, "too many tariffs"),
    (0x80, "reserved bit 7"),
)

_ADDRESS = re.compile(r"[0-9A]{12}")
_DI = re.compile(r"[0-9A-F]{8}")


class FrameError(ValueError):
    """Bytes that are not an acceptable frame; `reason` says precisely why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# -- fields ----------------------------------------------------------------------------------


def normalise_address(address: str) -> str:
    """The 12-digit address as printed on the meter ("AA" pairs for the wildcard), upper case."""
    text = address.strip().upper()
    if not _ADDRESS.fullmatch(text):
        raise ValueError(f"DL/T 645 address {address!r}: expected 12 decimal digits")
    return text


def encode_address(address: str) -> bytes:
    return bytes.fromhex(normalise_address(address))[::-1]


def decode_address(raw: bytes) -> str:
    return raw[::-1].hex().upper()


def normalise_di(di: str) -> str:
    text = di.strip().upper()
    if not _DI.fullmatch(text):
        raise ValueError(f"DL/T 645 data identifier {di!r}: expected 8 hex digits (DI3..DI0)")
    return text


def encode_di(di: str) -> bytes:
    """The identifier as sent: DI0 first."""
    return bytes.fromhex(normalise_di(di))[::-1]


def decode_di(raw: bytes) -> str:
    return raw[::-1].hex().upper()


def describe_error(error_byte: int) -> str:
    """The conditions an error reply's error byte reports, in words."""
    words = [text for bit, text in ERROR_BITS if error_byte & bit]
    return "; ".join(words) if words else "unspecified error (error byte 00)"


def checksum(data: bytes | bytearray) -> int:
    return sum(data) & 0xFF


# -- frames ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    address: str  # 12 digits, as printed on the meter
    control: int
    data: bytes = b""  # plain bytes, without the +0x33

    @property
    def function(self) -> int:
        return self.control & FUNCTION_MASK

    @property
    def is_reply(self) -> bool:
        return bool(self.control & REPLY_BIT)

    @property
    def is_error(self) -> bool:
        return bool(self.control & ERROR_BIT)

    @property
    def has_follow_up(self) -> bool:
        return bool(self.control & FOLLOW_UP_BIT)

    def encode(self, preamble: int = 0) -> bytes:
        """The wire bytes, after `preamble` wake-up bytes 0xFE."""
        if len(self.data) > 255:
            raise ValueError(f"DL/T 645 data field of {len(self.data)} bytes: at most 255")
        body = (
            bytes([START])
            + encode_address(self.address)
            + bytes([START, self.control, len(self.data)])
            + bytes((b + OFFSET) & 0xFF for b in self.data)
        )
        return bytes([PREAMBLE_BYTE]) * preamble + body + bytes([checksum(body), END])


def read_request(address: str, di: str) -> Frame:
    return Frame(normalise_address(address), READ, encode_di(di))


def follow_up_request(address: str, di: str, sequence: int) -> Frame:
    return Frame(normalise_address(address), READ_FOLLOW_UP, encode_di(di) + bytes([sequence]))


def read_address_request() -> Frame:
    return Frame(WILDCARD_ADDRESS, READ_ADDRESS)


# -- finding frames in a byte stream ---------------------------------------------------------


class Incomplete:
    """A frame may start here but its bytes have not all arrived."""

    def __init__(self, missing: str) -> None:
        self.missing = missing


@dataclass(frozen=True)
class Found:
    frame: Frame
    end: int  # index just past the frame's end byte


def parse_at(buf: bytes | bytearray, start: int) -> Found | Incomplete | FrameError:
    """Read the frame whose first 68 is at `start`; never raises for what the bytes contain.

    A header that does not look like one (no second 68 seven bytes on) is a FrameError too, so
    a caller scanning garbage simply moves on."""
    available = len(buf) - start
    if available < 1 or buf[start] != START:
        return FrameError("no 68 start byte")
    if available < 8:
        return Incomplete(f"only {available} header bytes")
    if buf[start + 7] != START:
        return FrameError(f"no second 68 after the address (found {buf[start + 7]:02X})")
    if available < HEADER_LENGTH:
        return Incomplete(f"only {available} header bytes")
    length = buf[start + 9]
    cs_at = start + HEADER_LENGTH + length
    if len(buf) < cs_at + 2:
        return Incomplete(f"{available} of {HEADER_LENGTH + length + 2} bytes (L = {length})")
    computed = checksum(buf[start:cs_at])
    if buf[cs_at + 1] != END:
        closed_elsewhere = _closing_length(buf, start)
        if closed_elsewhere is not None:
            return FrameError(
                f"length mismatch: L = {length} but the frame carries {closed_elsewhere} data bytes"
            )
        return FrameError(f"bad end byte {buf[cs_at + 1]:02X} (expected 16)")
    if buf[cs_at] != computed:
        return FrameError(f"bad checksum {buf[cs_at]:02X} (computed {computed:02X})")
    frame = Frame(
        address=decode_address(bytes(buf[start + 1 : start + 7])),
        control=buf[start + 8],
        data=bytes((b - OFFSET) & 0xFF for b in buf[start + HEADER_LENGTH : cs_at]),
    )
    return Found(frame, cs_at + 2)


def _closing_length(buf: bytes | bytearray, start: int) -> int | None:
    """The data length that would make the bytes after the header end in a valid CS 16, when L
    says otherwise (the frame is whole, its length byte is not). Only 16 bytes at most 255 data
    bytes on are candidates: a line full of 68 bytes, each one a header to try, stays cheap."""
    header_sum = checksum(buf[start : start + 9])
    first = start + HEADER_LENGTH
    limit = min(len(buf), first + 257)
    end_at = buf.find(END, first + 1, limit)
    while end_at >= 0:
        length = end_at - 1 - first
        if buf[end_at - 1] == (header_sum + length + sum(buf[first : end_at - 1])) & 0xFF:
            return length
        end_at = buf.find(END, end_at + 1, limit)
    return None


class FrameScanner:
    """Collects received bytes and hands out the valid frames in them, skipping preambles and
    garbage, and remembering why each candidate frame was rejected."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.received = 0
        self.rejections: list[str] = []

    def feed(self, data: bytes) -> list[Frame]:
        self.buffer += data
        self.received += len(data)
        frames = []
        while (frame := self._next()) is not None:
            frames.append(frame)
        return frames

    def pending(self) -> str | None:
        """Why the bytes still held do not make a frame yet, if any of them could start one."""
        start = self.buffer.find(START)
        if start < 0:
            return None
        outcome = parse_at(self.buffer, start)
        return f"truncated frame: {outcome.missing}" if isinstance(outcome, Incomplete) else None

    def _next(self) -> Frame | None:
        while (start := self.buffer.find(START)) >= 0:
            outcome = parse_at(self.buffer, start)
            if isinstance(outcome, Found):
                del self.buffer[: outcome.end]
                return outcome.frame
            if isinstance(outcome, Incomplete):
                later = _complete_frame_after(self.buffer, start)
                if later is None:
                    del self.buffer[:start]
                    return None
                self.rejections.append(f"truncated frame before another frame: {outcome.missing}")
                del self.buffer[:later]
                continue
            if not outcome.reason.startswith("no second 68"):
                self.rejections.append(outcome.reason)
            del self.buffer[: start + 1]
        self.buffer.clear()
        return None


def _complete_frame_after(buf: bytearray, start: int) -> int | None:
    position = start
    while (position := buf.find(START, position + 1)) >= 0:
        if isinstance(parse_at(buf, position), Found):
            return position
    return None


def check_reply(reply: Frame, request: Frame) -> None:
    """FrameError unless `reply` answers `request`: from the addressed meter (any meter for the
    wildcard), with the request's function and the reply bit."""
    if not reply.is_reply:
        raise FrameError(f"not a reply (control {reply.control:02X})")
    if reply.function != request.function:
        raise FrameError(
            f"reply to function {reply.function:02X}, expected {request.function:02X} "
            f"(control {reply.control:02X})"
        )
    if request.address != WILDCARD_ADDRESS and reply.address != request.address:
        raise FrameError(f"wrong address: reply from {reply.address}, asked {request.address}")
