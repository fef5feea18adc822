"""Reading a GeoJSON FeatureCollection's features in chunks, in bounded memory.

``FeatureStream(path)`` reads the file in blocks and finds its JSON structure with numpy, the
way simdjson's first stage does: the quotes that are not escaped (a quote after an odd run of
backslashes is), then the structural characters outside strings (those after an even number of
quotes) and their nesting depth (a cumulative sum). The top-level object's members are read as
they come; the ``features`` array is cut after every ``chunk``-th feature, and each chunk of
features is decoded by msgspec into the records of :mod:`footprints.geojson` (raw coordinates
and properties, as the whole-file reader gives them). Memory holds a block and a few chunks,
whatever the file's size (bench/labels.py's peak-RSS line).

Inside the features array, once one feature is read, only the braces are scanned (coordinates
are mostly brackets and commas): a feature ends where its braces balance, and the text between
two features must be one comma (and whitespace). Anything else there (the array's end, an
element that is not an object) sends the scan back to every structural character, from the
last feature's end. msgspec decodes every byte of the array, so a cut in the wrong place
cannot go unnoticed: it leaves a chunk that is not JSON.

The ``crs`` and ``type`` members may come before or after ``features``: when they are not
before it, the members after it are read from the file's tail (a backward scan of its last
MiB, where the depth counts from the closing brace) before the first chunk, and checked
again when the forward scan reaches them.

What the stream does not read as a FeatureCollection (a single Feature, no ``features``
array, malformed JSON) goes to the whole-file reader ``footprints.geojson.parse_geojson``,
which words the errors (with line and column) and reads the odd documents: the stream gives
exactly what it gives. Only files over ``WHOLE_LIMIT`` get, for a malformation found after the
head, the stream's own message (with the byte offset).
"""
from __future__ import annotations

import codecs
import json
import os
import re

import msgspec
import numpy as np

from footprints.errors import InputError
from footprints.geojson import FeatureRecord, _feature_record, check_file, parse_geojson, read_bytes

CHUNK = 10_000  # features per chunk
BLOCK = 1 << 22  # bytes per read
TAIL = 1 << 20  # bytes of the tail scanned for members after the features
WHOLE_LIMIT = 64 << 20  # files up to this size are read whole to word a malformation

_QUOTE, _BACKSLASH = 34, 92
_OPEN_OBJ, _OPEN_ARR, _CLOSE_OBJ, _CLOSE_ARR, _COMMA, _COLON = 1, 2, 3, 4, 5, 6
_LUT = np.zeros(256, dtype=np.int8)
for _c, _code in ((b"{", _OPEN_OBJ), (b"[", _OPEN_ARR), (b"}", _CLOSE_OBJ), (b"]", _CLOSE_ARR), (b",", _COMMA),
                  (b":", _COLON)):
    _LUT[_c[0]] = _code
_DELTA = np.array([0, 1, 1, -1, -1, 0, 0], dtype=np.int64)  # nesting change per code
_CHUNK_DECODER = msgspec.json.Decoder(list[FeatureRecord])
_WS = b" \t\r\n"
_NON_WS = re.compile(rb"[^ \t\r\n]")
_ONE_COMMA = re.compile(rb"[ \t\r\n]*,[ \t\r\n]*")
_GAP = 16  # gaps between features up to this long are checked by numpy, longer ones by _ONE_COMMA


class _Malformed(Exception):
    """The stream found something it cannot read (at ``pos``, a byte offset in the file)."""

    def __init__(self, why: str, pos: int):
        super().__init__(why)
        self.pos = pos


# ---------------------------------------------------------------- the structure of a block


def _real_quotes(a: np.ndarray, block: bytes, run_before: int = 0) -> np.ndarray:
    """Positions of the quotes of ``a`` not escaped by an odd run of backslashes before them
    (``run_before``: backslashes that end the previous block)."""
    q = np.flatnonzero(a == _QUOTE)
    if not len(q):
        return q
    escaped = np.zeros(len(q), dtype=bool)
    inner = q > 0
    escaped[inner] = a[q[inner] - 1] == _BACKSLASH
    escaped[0] |= bool(q[0] == 0 and run_before)
    cand = np.flatnonzero(escaped)
    if not len(cand):
        return q
    keep = np.ones(len(q), dtype=bool)
    for k in cand.tolist():  # rare: a quote after a backslash; count the run
        p = int(q[k])
        j = p - 1
        while j >= 0 and block[j] == _BACKSLASH:
            j -= 1
        keep[k] = (p - 1 - j + (run_before if j < 0 else 0)) % 2 == 0
    return q[keep]


def _outside(a: np.ndarray, block: bytes, s: np.ndarray, in_string: bool, run_before: int):
    """The positions ``s`` that are outside strings; the string state and backslash run at the
    block's end."""
    q = _real_quotes(a, block, run_before if in_string else 0)
    if len(q):
        s = s[((np.searchsorted(q, s) + in_string) & 1) == 0]
    elif in_string:
        s = s[:0]
    run = len(block) - len(block.rstrip(b"\\"))
    if run == len(block):
        run += run_before
    return s, bool((len(q) + in_string) & 1), run


def _structure(block: bytes, in_string: bool, run_before: int):
    """The structural characters of ``block`` outside strings: ``(positions, codes, string
    state after, backslash run at its end)``."""
    a = np.frombuffer(block, dtype=np.uint8)
    s = np.flatnonzero((a == 91) | (a == 93) | (a == 123) | (a == 125) | (a == 44) | (a == 58))
    s, in_string, run = _outside(a, block, s, in_string, run_before)
    return s, _LUT[a[s]], in_string, run


def _one_comma(a: np.ndarray, block: bytes, g0: np.ndarray, g1: np.ndarray) -> np.ndarray:
    """Per gap ``a[g0:g1]``: is it one comma and whitespace?"""
    n = g1 - g0
    ok = np.zeros(len(n), dtype=bool)
    short = n <= _GAP
    if short.any():
        k = np.arange(int(n[short].max()))
        valid = k < n[short, None]
        b = a[np.minimum(g0[short, None] + k, len(a) - 1)]
        comma = (b == 44) & valid
        ws = ((b == 32) | (b == 10) | (b == 13) | (b == 9)) & valid
        ok[short] = (comma.sum(axis=1) == 1) & ((comma | ws).sum(axis=1) == n[short])
    for i in np.flatnonzero(~short).tolist():
        ok[i] = _ONE_COMMA.fullmatch(block, int(g0[i]), int(g1[i])) is not None
    return ok


def _tail_members(f, size: int, lo: int) -> dict:
    """The complete top-level members in the file's last ``TAIL`` bytes (not before ``lo``),
    ``{key: value as JSON text}``, read backwards: the nesting depth counts from the end, where
    the document's closing brace is. Best effort: the forward scan checks what it used."""
    start = max(lo, size - TAIL)
    w = os.pread(f.fileno(), size - start, start)
    a = np.frombuffer(w, dtype=np.uint8)
    q = _real_quotes(a, w)
    s = np.flatnonzero(_LUT[a])
    s = s[((len(q) - np.searchsorted(q, s)) & 1) == 0]  # an even number of quotes after
    code = _LUT[a[s]]
    depth = np.cumsum(-_DELTA[code][::-1])[::-1]  # closers at or after, less openers
    if not len(s) or code[-1] != _CLOSE_OBJ or depth[-1] != 1 or w[s[-1] + 1:].strip(_WS):
        return {}
    top = depth == 1
    commas = s[top & (code == _COMMA)].tolist()
    colons = s[top & (code == _COLON)]
    out = {}
    for a0, b0 in zip(commas, commas[1:] + [int(s[-1])]):
        c = colons[(colons > a0) & (colons < b0)]
        if len(c) != 1:
            continue
        try:
            key = json.loads(w[a0 + 1:int(c[0])])
        except (ValueError, UnicodeDecodeError):
            continue
        if isinstance(key, str):
            out[key] = w[int(c[0]) + 1:b0].strip(_WS)
    return out


# ---------------------------------------------------------------- the stream


class FeatureStream:
    """The features of a GeoJSON file, chunk by chunk: ``crs_member`` (the decoded legacy
    ``crs`` member, or None) is known on construction, ``chunks()`` yields ``(index of the
    first feature, [FeatureRecord, ...])`` and ``read`` counts the features yielded."""

    def __init__(self, path, what: str = "GeoJSON file", chunk: int = CHUNK, block: int = BLOCK):
        self.path, self.what, self.chunk, self.block = str(path), what, chunk, block
        check_file(self.path, what)
        self.size = os.path.getsize(self.path)
        self.read = 0
        self.members: dict = {}  # top-level members before the features: {key: JSON text}
        self._used: dict = {}  # the crs and type members used for the features (JSON text or None)
        self._whole = None  # the features, when the whole-file reader read them
        self._f = open(self.path, "rb")
        self._events = _Scanner(self._f, self.members, chunk, block).events()
        try:
            try:
                opened = next(self._events)  # runs up to the features array (None: there is none)
            except _Malformed as e:
                self._malformed(str(e), e.pos)
                opened = None
            if opened is None:
                self._use_whole()
            else:
                self._prepare(opened)
        except BaseException:
            self.close()
            raise

    def _prepare(self, opened: int) -> None:
        known = dict(self.members)
        if "crs" not in known or "type" not in known:
            known = {**_tail_members(self._f, self.size, opened), **known}
        kind = self._value(known["type"]) if "type" in known else None
        if kind == "Feature":  # a single Feature (its features member ignored), as the whole-file reader
            self._use_whole()
            return
        if kind != "FeatureCollection":
            raise InputError(self.path, f"GeoJSON type {kind!r} is not a FeatureCollection")
        self._used = {"crs": known.get("crs"), "type": known.get("type")}
        self.crs_member = None if known.get("crs") is None else self._value(known["crs"])

    def _value(self, text: bytes):
        try:
            return json.loads(text)
        except (ValueError, UnicodeDecodeError) as e:
            raise InputError(self.path, f"malformed GeoJSON: {e}") from None

    def _use_whole(self) -> None:
        self.close()
        self._whole, self.crs_member = parse_geojson(read_bytes(self.path, self.what), self.path)

    def _malformed(self, why: str, pos: int) -> None:
        """The whole-file reader words a malformation (line and column) in a file up to
        WHOLE_LIMIT; returns when it reads the file after all. Else raises the stream's error."""
        if self.size <= WHOLE_LIMIT:
            parse_geojson(read_bytes(self.path, self.what), self.path)
            return
        raise InputError(self.path, f"malformed GeoJSON: {why} (at byte {pos:,})")

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()

    def chunks(self):
        """``(start, records)`` per chunk of features, in order."""
        try:
            if self._whole is not None:
                for s in range(0, len(self._whole), self.chunk):
                    part = self._whole[s:s + self.chunk]
                    self.read += len(part)
                    yield s, part
                return
            try:
                for kind, a, b in self._events:
                    if kind == "chunk":
                        records = self._decode(a, b)
                        start = self.read
                        self.read += len(records)
                        yield start, records
                    else:
                        self._check_after(a, b)
            except _Malformed as e:
                self._malformed(str(e), e.pos)
                raise InputError(self.path, f"malformed GeoJSON: {e} (at byte {e.pos:,})") from None
        finally:
            self.close()

    def _decode(self, text: bytes, pos: int) -> list:
        try:
            return _CHUNK_DECODER.decode(text)
        except msgspec.DecodeError:  # malformed, or unexpected types: read generically, feature by feature
            pass
        try:
            items = json.loads(text)
        except (ValueError, UnicodeDecodeError) as e:
            raise _Malformed(f"{e}", pos) from None
        return [_feature_record(f, self.read + i, self.path) for i, f in enumerate(items)]

    def _check_after(self, key: str, text: bytes) -> None:
        """A member after the features: ``crs`` and ``type`` must be those used for them."""
        if key not in self._used:
            return
        used = self._used[key]
        if used is None or self._value(used) != self._value(text):
            why = (f"two {key!r} members" if key in self.members else
                   f"it follows a member over {TAIL >> 20} MiB after the features, so it could not be read "
                   "before them: move it before 'features'")
            raise InputError(self.path, f"cannot use the {key!r} member after the features: {why}")


class _Scanner:
    """The forward scan of a GeoJSON file (see the module's doc): ``events()``."""

    def __init__(self, f, members: dict, chunk: int, block: int):
        self.f, self.members, self.chunk, self.block = f, members, chunk, block
        self.buf = bytearray()  # the file from offset ``base`` on
        self.base = 0
        self.in_string, self.run, self.depth, self.braces = False, 0, 0, 0  # at ``scan``
        self.fast, self.od = False, 0  # braces only; braces open in the current feature
        self.state, self.mark, self.key = "start", 0, None  # mark: where the text being read starts
        self.chunk_start, self.count, self.cut = 0, 0, False  # the chunk being read; its features; any cut
        self.last_end = -1  # the last feature's closing brace
        self.elem_start, self.elem_obj = -1, False  # the features array's element being read
        self.seen = False
        self.top = -1  # just after the top-level object's opening brace

    def text(self, a: int, b: int) -> bytes:
        """The file's bytes ``[a, b)`` (in the buffer)."""
        with memoryview(self.buf) as view, view[a - self.base:b - self.base] as part:
            return bytes(part)

    def events(self):
        """A generator: the file offset of the features array's '[' once (None at the end when
        there is none), then ``("chunk", JSON text of a list of features, its file offset)``
        and ``("member", key, JSON text)`` for the members after the features. The members
        before the features go to ``members``. Raises _Malformed."""
        bom = self.f.read(len(codecs.BOM_UTF8)) == codecs.BOM_UTF8
        self.base = self.mark = scan = len(codecs.BOM_UTF8) if bom else 0
        self.f.seek(self.base)
        while True:
            end = self.base + len(self.buf)
            if scan == end:
                block = self.f.read(self.block)
                if not block:
                    break
                self.buf += block
                end += len(block)
                seg = block
            else:
                seg = self.text(scan, end)
            if self.fast:
                switch = yield from self._fast(seg, scan)
                scan = end if switch is None else switch
            else:
                yield from self._full(seg, scan)
                scan = end
            keep = min(scan, self.chunk_start if self.state == "features" else self.mark)
            if keep > self.base:
                del self.buf[:keep - self.base]
                self.base = keep
        if self.state != "end":
            raise _Malformed("the document ends early", self.base + len(self.buf))
        if self.text(self.mark, self.base + len(self.buf)).strip(_WS):
            raise _Malformed("data after the end of the document", self.mark)
        if not self.seen:
            yield None

    # ------------------------------------------------------------ every structural character

    def _full(self, seg: bytes, off: int):
        pos, code, self.in_string, self.run = _structure(seg, self.in_string, self.run)
        pos += off
        delta = _DELTA[code]
        d_after = self.depth + np.cumsum(delta)
        d_before = d_after - delta
        if len(d_after):
            if int(d_after.min()) < 0:
                raise _Malformed("a closing bracket without its opening one", int(pos[np.argmax(d_after < 0)]))
            self.depth = int(d_after[-1])
            self.braces += int(delta[(code == _OPEN_OBJ) | (code == _CLOSE_OBJ)].sum())
        ends = pos[(code == _CLOSE_OBJ) & (d_after == 2)]  # features' closing braces (and others' at depth 2)
        for t in np.flatnonzero((d_before <= 1) | (d_after <= 1)).tolist():
            p, c, da = int(pos[t]), int(code[t]), int(d_after[t])
            yield from self._top(p, c, da, ends)
        if self.state == "features":
            yield from self._cuts(ends[ends >= self.chunk_start])
            opens = np.flatnonzero((d_before == 2) & (d_after == 3))
            if len(opens) and int(pos[opens[-1]]) >= self.chunk_start:
                self.elem_start, self.elem_obj = int(pos[opens[-1]]), int(code[opens[-1]]) == _OPEN_OBJ
            self._go_fast(off + len(seg))

    def _top(self, p: int, c: int, da: int, ends):
        """One structural character of the top-level object (depth 0 or 1 before or after it)."""
        state = self.state
        if state == "start":
            if c != _OPEN_OBJ or self.text(self.mark, p).strip(_WS):
                raise _Malformed("the top level is not an object", p)
            self.state, self.mark, self.top = "key", p + 1, p + 1
        elif state == "key":
            if c == _COLON:
                try:
                    key = json.loads(self.text(self.mark, p))
                except (ValueError, UnicodeDecodeError):
                    key = None
                if not isinstance(key, str):
                    raise _Malformed("a member name is not a string", self.mark)
                self.key, self.state, self.mark = key, "value", p + 1
            elif c == _CLOSE_OBJ and da == 0 and self.mark == self.top and not self.text(self.mark, p).strip(_WS):
                self.state, self.mark = "end", p + 1  # {}
            else:
                raise _Malformed("expected a member name", p)
        elif state == "value":
            if c == _OPEN_ARR and self.key == "features" and da == 2 and not self.text(self.mark, p).strip(_WS):
                if self.seen:
                    raise _Malformed("two 'features' members", p)
                self.seen, self.state, self.chunk_start = True, "features", p + 1
                yield p
            elif (c == _COMMA and da == 1) or (c == _CLOSE_OBJ and da == 0):
                value = self.text(self.mark, p).strip(_WS)
                try:
                    json.loads(value)
                except (ValueError, UnicodeDecodeError) as e:
                    raise _Malformed(f"the {self.key!r} member: {e}", self.mark) from None
                if self.seen:
                    yield "member", self.key, value
                else:
                    self.members[self.key] = value
                self.state, self.mark = ("key" if c == _COMMA else "end"), p + 1
            elif c == _COLON or da == 0:
                raise _Malformed("unexpected ':' or closing bracket", p)
        elif state == "features":
            if c != _CLOSE_ARR or da != 1:
                raise _Malformed("unexpected structure in the features array", p)
            yield from self._cuts(ends[(ends >= self.chunk_start) & (ends < p)])
            piece = self._piece(self.chunk_start, p)
            if piece is not None:
                yield "chunk", piece, self.chunk_start
            self.state, self.mark = "after", p + 1
        elif state == "after":  # the features array is closed: ',' or '}' follows
            if c not in (_COMMA, _CLOSE_OBJ) or self.text(self.mark, p).strip(_WS):
                raise _Malformed("expected ',' or '}' after the features array", p)
            self.state, self.mark = ("key" if c == _COMMA else "end"), p + 1
        else:
            raise _Malformed("data after the end of the document", p)

    def _go_fast(self, end: int) -> None:
        """After a block read in full, in the features array: read the next with braces only
        when the element being read is a feature (an object) after a comma, or none is."""
        self.fast = False
        if self.last_end < 0:
            return
        lo, hi = self.last_end + 1 - self.base, end - self.base
        if self.depth == 2:  # between elements
            m = _NON_WS.search(self.buf, lo, hi)
            self.fast = m is None or (self.buf[m.start()] == 44 and _NON_WS.search(self.buf, m.start() + 1, hi) is None)
        elif self.elem_obj and self.elem_start > self.last_end:
            self.fast = _ONE_COMMA.fullmatch(self.buf, lo, self.elem_start - self.base) is not None
        self.od = self.braces - 1

    # ------------------------------------------------------------ braces only

    def _fast(self, seg: bytes, off: int):
        """Read a block of the features array by its braces; returns where to read again in
        full (None: the block is read), the end of the last feature before something else."""
        a = np.frombuffer(seg, dtype=np.uint8)
        s = np.flatnonzero((a == 123) | (a == 125))
        s, in_string, run = _outside(a, seg, s, self.in_string, self.run)
        d = np.where(a[s] == 123, 1, -1)
        od_after = self.od + np.cumsum(d)
        od_before = od_after - d
        ends = s[(d < 0) & (od_after == 0)] + off
        starts = s[(d > 0) & (od_before == 0)] + off
        stray = s[(d < 0) & (od_before <= 0)] + off  # a closing brace between features
        prev = np.concatenate([[self.last_end], ends])[np.searchsorted(ends, starts)]
        ok = np.ones(len(starts), dtype=bool)
        inside = prev + 1 >= off
        ok[inside] = _one_comma(a, seg, prev[inside] + 1 - off, starts[inside] - off)
        for i in np.flatnonzero(~inside).tolist():  # a gap from the previous block
            ok[i] = _ONE_COMMA.fullmatch(self.buf, int(prev[i]) + 1 - self.base, int(starts[i]) - self.base) is not None
        bad = [int(prev[np.argmin(ok)])] if not ok.all() else []
        if len(stray):
            bad.append(int(np.concatenate([[self.last_end], ends])[np.searchsorted(ends, stray[0])]))
        if bad:  # the array's end, or an element that is not an object: read again in full from here
            stop = min(bad)
            yield from self._cuts(ends[ends <= stop])
            self.fast, self.depth, self.braces, self.in_string, self.run = False, 2, 1, False, 0
            return stop + 1
        yield from self._cuts(ends)
        self.in_string, self.run = in_string, run
        if len(od_after):
            self.od = int(od_after[-1])
            self.braces = self.od + 1
        if len(starts):
            self.elem_start, self.elem_obj = int(starts[-1]), True
        return None

    # ------------------------------------------------------------ chunks

    def _cuts(self, ends):
        """Chunks of ``chunk`` features, cut after the features' closing braces ``ends``."""
        if len(ends):
            self.last_end = int(ends[-1])
        while self.count + len(ends) >= self.chunk:
            p = int(ends[self.chunk - self.count - 1]) + 1
            ends = ends[self.chunk - self.count:]
            yield "chunk", self._piece(self.chunk_start, p), self.chunk_start
            self.chunk_start, self.count, self.cut = p, 0, True
        self.count += len(ends)

    def _piece(self, a: int, b: int) -> bytes | None:
        """The JSON list of the features in ``[a, b)`` (after a cut, it starts with the comma
        that separates them from the previous chunk's); None when there are none."""
        lo, hi = a - self.base, b - self.base
        m = _NON_WS.search(self.buf, lo, hi)
        if self.cut and m is not None:
            if self.buf[m.start()] != 44:
                raise _Malformed("expected ',' between features", self.base + m.start())
            lo = m.start() + 1
            m = _NON_WS.search(self.buf, lo, hi)
            if m is None:
                raise _Malformed("a trailing comma in the features array", self.base + lo - 1)
        if m is None:
            return None
        with memoryview(self.buf) as view, view[lo:hi] as part:
            return b"".join((b"[", part, b"]"))

