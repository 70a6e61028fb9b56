"""The spill ring: records reach memory the kernel owns within a few calls, so a kill -9 loses (almost) nothing.

The training thread gathers records in a short tail (`SPILL_EVERY` records) and then writes them, encoded, into a
file-backed shared mapping in the run's private folder (``.ml_dash/ring/<pid>-<id>.ring``). Pages of a shared file
mapping belong to the kernel's page cache: they outlive the process. The writer thread turns what the ring holds
into the journal (the `.dash` JSONL files); a process that was killed before its writer got there leaves the ring
behind, and the next open of the run, or the next read of it (`load`, `ml-dash sync`), turns it into the journal
(`recover`); the viewer, which never writes, shows what such a ring holds (`unrecovered`).

File layout: two halves of `HALF` bytes. Each half starts with a 64-byte header (little-endian u64 fields):
``magic, lap, consumed, inflight``. ``lap`` orders the halves (0: unused); ``consumed`` is the offset up to which
records are in the journal; ``[consumed, inflight)`` is being written to the journal (after a crash those records
may be there in part: recovery skips the ones it finds). Records follow as lines, one line per spill of one
stream: ``<code> <name as JSON>\t<the payloads as one JSON array>\n`` (see `encode_group`); ``code`` has the bit
`STD` when the standard encoder wrote the array (non-finite floats, nulls, integers beyond 64 bits), which then
also parses it. Lines of the first version (a JSON array of ``[code, name, payload]`` items; a leading space: the
standard encoder's) are still read. Unwritten space is zero bytes.

The writer turns metric lines into journal lines without parsing them (`journal_items`): the array of rows is cut
into the rows' JSON texts at ``},{``. The training thread checks, when it writes the line, that the array holds
exactly one ``},{`` less than it has rows (else a key or a value holds one, and the line gets the bit `PARSE`),
so the cut is exact.
"""

from __future__ import annotations

import fcntl
import json
import mmap
import os
import struct
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .jsonio import dumpb, encode
from .layout import PRIVATE

try:
    import orjson as _orjson

    _dumps = _orjson.dumps
    _loads = _orjson.loads
    _OPT = _orjson.OPT_PASSTHROUGH_DATACLASS | _orjson.OPT_PASSTHROUGH_DATETIME | _orjson.OPT_APPEND_NEWLINE
    _OPT_BODY = _orjson.OPT_PASSTHROUGH_DATACLASS | _orjson.OPT_PASSTHROUGH_DATETIME
except ImportError:  # pragma: no cover
    _orjson = None  # type: ignore[assignment]

_POPULATE_WRITE = 23  # MADV_POPULATE_WRITE (Linux 5.14)
MAGIC = b"MLDRING1"
HDR = 64
HALF = 8 << 20
SPILL_EVERY = 8  # records gathered on the training thread before one spill into the ring
_H = struct.Struct("<8sQQQ")

# item codes: what a ring item is, and the shape of its payload
METRIC = 0  # [0, stream name, data]            (stream None: code METRIC_NONE, name "")
TRACK = 1  # [1, topic, entry]
LOG = 2  # [2, level, [ts, message]]           (with metadata: code LOG_META, [ts, message, metadata])
METRIC_NONE = 3
LOG_META = 4
STD = 8  # flag on a line's code: the standard encoder wrote (and parses) its array
PARSE = 16  # flag on a metric line's code: a key or value holds "},{", so the writer parses the line
_KIND = 7


def folder_of(private: Path) -> Path:
    return private / "ring"


def encode_items(items: list[Any]) -> bytes | None:
    """A first-version ring line for a list of ``[code, name, payload]`` items (read back by `decode_lines`)."""
    if _orjson is not None:
        try:
            b = _dumps(items, None, _OPT)
        except TypeError:
            b = None
        if b is not None and b"null" not in b:
            return b
    try:
        return b" " + encode(items).encode() + b"\n"
    except (TypeError, ValueError):
        return None


_names: dict[str, bytes] = {}
_names_back: dict[bytes, str] = {}


def _name_json(name: str) -> bytes:
    b = _names.get(name)
    if b is None:
        b = encode(name).encode()
        if len(_names) < 10_000:
            _names[name] = b
            _names_back[b] = name
    return b


def line_head(code: int, name: str) -> bytes:
    """The start of a ring line of one stream, up to its array (``<code> <name as JSON>\t``)."""
    return b"%d %b\t" % (code, _name_json(name))


_U = ord("u")
_NL = b"\n"


def encode_group(code: int, name: str, payloads: list[Any], head: bytes | None = None) -> bytes | None:
    """One ring line for ``payloads`` of one stream (metric rows and track entries: dicts; log lines: tuples
    ``(ts, level, message[, metadata])``), or None when a payload cannot be encoded (a device value). ``head``:
    `line_head` of ``code`` and ``name``, when the caller keeps it (the training thread's spill, per stream)."""
    body = None
    if _orjson is not None:
        try:
            body = _dumps(payloads, None, _OPT_BODY)
        except TypeError:
            body = None
        else:
            # NaN, Infinity or None (orjson writes each as null): written the way `dumpb` writes them. An int
            # needle is one memchr; "u" is the letter of "null" that no number holds, so most lines need no
            # search for the word (the bytes needle also costs a caught TypeError inside `in`)
            if _U in body and body.find(b"null") >= 0:
                body = None
            elif (code == METRIC or code == METRIC_NONE) and body.count(b"},{") != len(payloads) - 1:
                code |= PARSE  # a key or a value holds "},{": the writer parses this line
                head = None
    if body is None:
        try:
            body = encode(payloads).encode()
        except (TypeError, ValueError):
            return None
        code |= STD
        head = None
    return b"".join((head or line_head(code, name), body, _NL))


def _groups(chunk: bytes) -> list[tuple[int, str, bytes]]:
    """(code, name, array) of each complete line of ``chunk``; a torn or corrupt line is skipped."""
    out = []
    for line in chunk.split(b"\n"):
        head, tab, body = line.partition(b"\t")
        if not tab:
            continue
        try:
            c, nm = head.split(b" ", 1)
            name = _names_back.get(nm)
            if name is None:
                name = json.loads(nm)
            out.append((int(c), name, body))
        except ValueError:
            continue
    return out


def _payloads(code: int, body: bytes) -> list[Any]:
    try:
        rows = json.loads(body) if code & STD or _orjson is None else _loads(body)
    except ValueError:
        return []
    return rows if isinstance(rows, list) else []


_DICT = {dict}
_LIST = {list}


def _new_format(chunk: bytes) -> bool:
    return chunk[:1].isdigit()


def journal_items(chunk: bytes) -> tuple[list[tuple[str | None, list[bytes]]], list[tuple[str, list[dict[str, Any]]]],
                                         list[Any]]:
    """What the writer appends for the complete lines of ``chunk``: (metrics, tracks, logs). Metrics come as runs
    ``(stream, pieces)``, one per stream, a piece being the bytes between the braces of a row's JSON object
    (`dumpb` of the row less its braces), cut out of the lines without parsing them; track entries come as runs
    ``(topic, entries)``, one per line, and log lines as ``[ts, level, message(, metadata)]`` (as
    `ExperimentDir.append_logs` takes them), both parsed with one call per line."""
    if not _new_format(chunk):
        m, t, g = split_items(decode_lines(chunk))
        runs: dict[str | None, list[bytes]] = {}
        for k, d in m:
            runs.setdefault(k, []).append(dumpb(d)[1:-1])
        return list(runs.items()), [(topic, [e]) for topic, e in t], list(g)
    head = chunk[:chunk.find(b"\t") + 1]
    if head[:2] in (b"0 ", b"3 ") and chunk.endswith(b"}]\n") and chunk[len(head):len(head) + 2] == b"[{":
        inner = chunk[len(head) + 2:-3].replace(b"}]\n" + head + b"[{", b"},{")
        if 10 not in inner:  # no "\n" (an int needle: one memchr)  # every line was a plain line of this one metric (JSON text holds no raw newline)
            code, name = _groups(head + b"[]")[0][:2]
            return [(None if code == METRIC_NONE else name, inner.split(b"},{"))], [], []
    by_metric: dict[str | None, list[tuple[int, bytes]]] = {}
    tracks: list[tuple[str, list[dict[str, Any]]]] = []
    logs: list[Any] = []
    for code, name, body in _groups(chunk):
        kind = code & _KIND
        if kind == METRIC or kind == METRIC_NONE:
            key = name if kind == METRIC else None
            parts = by_metric.get(key)
            if parts is None:
                by_metric[key] = parts = []
            parts.append((code, body))
        elif kind == TRACK:
            entries = _payloads(code, body)
            if entries and set(map(type, entries)) != _DICT:  # a corrupt line: keep its entries that are entries
                entries = [e for e in entries if isinstance(e, dict)]
            if entries:
                tracks.append((name, entries))
        elif kind == LOG:
            lines = _payloads(code, body)
            if lines and set(map(type, lines)) == _LIST and min(map(len, lines)) >= 3:
                logs.extend(lines)
            else:  # a corrupt line: keep its log lines that are log lines
                logs.extend(p for p in lines if isinstance(p, (list, tuple)) and len(p) >= 3)
    metrics: list[tuple[str | None, list[bytes]]] = []
    for key, parts in by_metric.items():
        pieces: list[bytes] = []
        plain: list[bytes] = []
        for c, b in parts:
            if c == METRIC or c == METRIC_NONE:
                if b.startswith(b"[{") and b.endswith(b"}]"):
                    plain.append(b[2:-2])
                continue
            if plain:
                pieces.extend(b"},{".join(plain).split(b"},{"))
                plain = []
            pieces.extend(dumpb(d)[1:-1] for d in _payloads(c, b) if isinstance(d, dict))
        if plain:
            pieces.extend(b"},{".join(plain).split(b"},{"))
        metrics.append((key, pieces))
    return metrics, tracks, logs


def decode_lines(chunk: bytes) -> list[Any]:
    """Items ``[code, name, payload]`` of the complete lines in ``chunk`` (a torn or corrupt line is skipped)."""
    if _new_format(chunk):
        items: list[Any] = []
        for code, name, body in _groups(chunk):
            kind = code & _KIND
            for p in _payloads(code, body):
                if kind == LOG:
                    if isinstance(p, list) and len(p) >= 3:
                        items.append([LOG, p[1], [p[0], p[2]]] if len(p) == 3 or p[3] is None
                                     else [LOG_META, p[1], [p[0], p[2], p[3]]])
                else:
                    items.append([kind, name, p])
        return items
    if _orjson is not None and not chunk.startswith(b" ") and b"\n " not in chunk:
        try:
            out: list[Any] = []
            for batch in _loads(b"[" + chunk.rstrip(b"\n").replace(b"\n", b",") + b"]"):
                out.extend(batch)
            return out
        except ValueError:
            pass
    out = []
    for line in chunk.split(b"\n"):
        if not line.strip():
            continue
        try:
            batch = json.loads(line) if line.startswith(b" ") or _orjson is None else _loads(line)
        except ValueError:
            continue
        if isinstance(batch, list):
            out.extend(x for x in batch if isinstance(x, list) and len(x) == 3)
    return out


class Ring:
    """The ring of one open Buffer. Every method runs under ``lock`` (the caller holds it)."""

    def __init__(self, folder: Path, half: int = HALF) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{os.getpid()}-{uuid.uuid4().hex[:12]}.ring"
        self.path = folder / name
        self.half = half
        fd = self._create(self.path, 2 * half)
        try:
            self.maps = [mmap.mmap(fd, half, offset=0), mmap.mmap(fd, half, offset=half)]
        except BaseException:
            os.close(fd)
            self.path.unlink(missing_ok=True)
            raise
        self.fd = fd
        self.lock = threading.Lock()
        self.laps = [1, 0]
        self.consumed = [HDR, HDR]  # durable: in the journal up to here
        self.taken = [HDR, HDR]  # handed to the writer up to here
        _H.pack_into(self.maps[0], 0, MAGIC, 1, HDR, HDR)
        _H.pack_into(self.maps[1], 0, MAGIC, 0, HDR, HDR)
        self.cur = 0
        self.maps[0].seek(HDR)
        self.pid = os.getpid()

    @staticmethod
    def _create(path: Path, size: int) -> int:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held while the process lives: recovery skips it
            os.posix_fallocate(fd, 0, size)  # the space exists now: a write into the mapping cannot fault later
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        return fd

    def populate(self, step: int = 1 << 22) -> None:
        """Map every page now (the writer thread does this when it starts): a first write to a page would
        otherwise fault on the training thread, which can take milliseconds. Each chunk of ``step`` bytes is one
        system call that lets the training thread run, and each return from one takes the GIL back from it: few
        large chunks, no pauses, cost the training loop the fewest stalls."""
        for m in self.maps:
            for off in range(0, self.half, step):
                n = min(step, self.half - off)
                try:
                    m.madvise(_POPULATE_WRITE, off, n)
                except (AttributeError, OSError, ValueError):  # older kernels: touch each page
                    for p in range(off, off + n, mmap.PAGESIZE):
                        m[p] = m[p]

    # ---- producer ---------------------------------------------------------------------------------------------
    def put(self, line: bytes) -> bool:
        """Append one line; False when neither half has room (the writer is behind)."""
        m = self.maps[self.cur]
        try:
            m.write(line)
            return True
        except ValueError:
            pass
        o = 1 - self.cur
        if self.laps[o] or len(line) > self.half - HDR:
            return False
        lap = self.laps[self.cur] + 1
        mo = self.maps[o]
        _H.pack_into(mo, 0, MAGIC, lap, HDR, HDR)
        self.laps[o] = lap
        self.consumed[o] = self.taken[o] = HDR
        mo.seek(HDR)
        mo.write(line)
        self.cur = o
        return True

    def backlog(self) -> int:
        """Bytes written but not yet handed to the writer."""
        n = 0
        for h in (0, 1):
            if self.laps[h]:
                n += self.maps[h].tell() - self.taken[h]
        return n

    # ---- writer -----------------------------------------------------------------------------------------------
    def take(self, limit: int) -> tuple[bytes, list[tuple[int, int]]]:
        """Up to about ``limit`` bytes of complete lines not yet handed out, oldest half first, and the ranges
        they came from (marked in flight in the headers)."""
        parts: list[bytes] = []
        ranges: list[tuple[int, int]] = []
        size = 0
        for h in sorted((h for h in (0, 1) if self.laps[h]), key=lambda h: self.laps[h]):
            m = self.maps[h]
            start, end = self.taken[h], m.tell()
            if end <= start:
                continue
            cut = end - start > limit - size
            if cut:  # the rest of this half (and the next half) in a later slice, in order
                nl = m.rfind(b"\n", start, start + max(1, limit - size))
                if nl < 0:
                    nl = m.find(b"\n", start, end)
                    if nl < 0:  # cannot happen: lines are written whole
                        break
                end = nl + 1
            parts.append(m[start:end])
            ranges.append((h, end))
            struct.pack_into("<Q", m, 24, end)  # inflight
            self.taken[h] = end
            size += end - start
            if cut:
                break
        return b"".join(parts), ranges

    def commit(self, ranges: list[tuple[int, int]]) -> int | None:
        """The records of ``ranges`` are in the journal. Returns a half that is now finished (the producer moved
        on and everything in it is consumed): the caller zeroes it outside the lock and calls `free`."""
        done = None
        for h, end in ranges:
            self.consumed[h] = end
            struct.pack_into("<Q", self.maps[h], 16, end)
            if h != self.cur and end == self.maps[h].tell():
                done = h
        return done

    def zero(self, h: int) -> None:
        """Zero the used part of a finished half (a pwrite, which lets other threads run meanwhile)."""
        end = self.maps[h].tell()
        zeros = bytes(1 << 18)
        off = HDR
        while off < end:
            n = min(len(zeros), end - off)
            os.pwrite(self.fd, zeros[:n] if n < len(zeros) else zeros, h * self.half + off)
            off += n

    def free(self, h: int) -> None:
        _H.pack_into(self.maps[h], 0, MAGIC, 0, HDR, HDR)
        self.laps[h] = 0
        self.consumed[h] = self.taken[h] = HDR
        self.maps[h].seek(HDR)

    def peek(self) -> list[Any]:
        """Items written but not yet handed to the writer (for counting)."""
        out: list[Any] = []
        for h in sorted((h for h in (0, 1) if self.laps[h]), key=lambda h: self.laps[h]):
            m = self.maps[h]
            if m.tell() > self.taken[h]:
                out.extend(decode_lines(m[self.taken[h]:m.tell()]))
        return out

    def unconsumed(self) -> bool:
        return any(self.laps[h] and self.maps[h].tell() > self.consumed[h] for h in (0, 1))

    def close(self, remove: bool) -> None:
        """Unmap and close; ``remove`` deletes the file (everything in it is in the journal)."""
        if remove:
            self.path.unlink(missing_ok=True)
        for m in self.maps:
            try:
                m.close()
            except (BufferError, ValueError):
                pass
        try:
            os.close(self.fd)
        except OSError:
            pass

    def forget(self) -> None:
        """A forked child: drop the parent's ring without touching it (the parent's flock stays held)."""
        self.close(remove=False)


# ---- items <-> the shapes the buffer queues ------------------------------------------------------------------
def split_items(items: list[Any]) -> tuple[list[tuple[str | None, dict[str, Any]]], list[tuple[str, dict[str, Any]]],
                                             list[tuple[float, str, str, Any]]]:
    """Ring items as the buffer's queues hold them: (metrics, tracks, logs), each in order."""
    metrics: list[tuple[str | None, dict[str, Any]]] = []
    tracks: list[tuple[str, dict[str, Any]]] = []
    logs: list[tuple[float, str, str, Any]] = []
    for it in items:
        try:
            code, name, p = it
            if code == METRIC:
                metrics.append((name, p))
            elif code == METRIC_NONE:
                metrics.append((None, p))
            elif code == TRACK:
                tracks.append((name, p))
            elif code == LOG:
                logs.append((p[0], name, p[1], None))
            elif code == LOG_META:
                logs.append((p[0], name, p[1], p[2]))
        except (TypeError, ValueError, IndexError):
            continue
    return metrics, tracks, logs


def item_of(kind: str, rec: Any) -> list[Any]:
    """The ring item of a record as a buffer queue holds it."""
    if kind == "metrics":
        name, data = rec
        return [METRIC, name, data] if name is not None else [METRIC_NONE, "", data]
    if kind == "tracks":
        return [TRACK, rec[0], rec[1]]
    ts, level, message, meta = rec
    return [LOG, level, [ts, message]] if meta is None else [LOG_META, level, [ts, message, meta]]


# ---- recovery -------------------------------------------------------------------------------------------------
def recover(jdir: Any) -> int:
    """Turn the rings left by dead processes into the journal of ``jdir`` (an ExperimentDir). Returns how many
    records were added. A ring whose process still runs is left alone (its writer does this); failures are left
    for the next try."""
    folder = folder_of(jdir.private)
    try:
        names = os.listdir(folder)
    except OSError:
        return 0
    added = 0
    for name in sorted(names):
        if name.endswith(".ring"):
            try:
                added += _recover_one(jdir, folder / name)
            except (OSError, ValueError):  # read-only, disk full, ...: left for the next try
                continue
    return added


def recover_run(root: str | os.PathLike[str], prefix: str) -> int:
    """`recover` for the run ``prefix`` under the `.dash` folder ``root`` (cheap when there is nothing to do)."""
    try:
        names = os.listdir(Path(root).joinpath(*prefix.split("/"), PRIVATE, "ring"))
    except (OSError, ValueError):
        return 0
    if not any(n.endswith(".ring") for n in names):
        return 0
    from .layout import ExperimentDir  # noqa: PLC0415

    return recover(ExperimentDir(root, prefix))


def _recover_one(jdir: Any, path: Path) -> int:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return 0
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return 0  # its process is alive
        if os.fstat(fd).st_nlink == 0:
            return 0  # another reader recovered it first
        size = os.fstat(fd).st_size
        if size // 2 <= HDR:
            path.unlink(missing_ok=True)
            return 0
        with mmap.mmap(fd, size) as m:
            added = 0
            for base, end, maybe, fresh in _records(m, size):
                if maybe:
                    maybe = _not_in_journal(jdir.stream_path, maybe)
                added += _append(jdir, maybe + fresh)
                struct.pack_into("<QQ", m, base + 16, end, end)
        path.unlink(missing_ok=True)
        return added
    finally:
        os.close(fd)


def _records(m: Any, size: int) -> list[tuple[int, int, list[Any], list[Any]]]:
    """What a ring holds past its ``consumed`` marks, per half, oldest lap first: (where the half starts, the end
    of its complete records relative to that start, the items that were in flight to the journal (some may be
    there), the items that are not)."""
    half = size // 2
    halves = []
    for h in (0, 1):
        magic, lap, consumed, inflight = _H.unpack_from(m, h * half)
        if magic == MAGIC and lap and HDR <= consumed < half:
            halves.append((lap, h, consumed, inflight))
    out = []
    for _lap, h, consumed, inflight in sorted(halves):
        base = h * half
        end = m.find(b"\0", base + consumed, base + half)
        end = base + half if end < 0 else end
        last_nl = m.rfind(b"\n", base + consumed, end)
        if last_nl < 0:
            continue
        chunk = m[base + consumed: last_nl + 1]
        split = max(0, min(inflight, last_nl + 1 - base) - consumed) if inflight > consumed else 0
        out.append((base, last_nl + 1 - base, decode_lines(chunk[:split]), decode_lines(chunk[split:])))
    return out


def unrecovered(private: Path, path_of: Callable[[str, str | None], Path | None]) -> tuple[list[Any], int]:
    """The items that `recover` would add to the journal from the rings dead processes left in a run's private
    folder ``private``, in order, and how many rings were skipped as busy; read without writing anything (for a viewer, which shows them and leaves the
    recovery to the next open or `load`). ``path_of(kind, name)``: the journal file of a stream ("metrics" and
    a name, "tracks" and a topic, "logs" and None), or None when it has none yet; records that were in flight
    when the process died are looked up there and dropped when they reached it.

    A ring is read under a shared lock taken without waiting: a live writer's ring (it holds the lock) and one
    that a recovery is turning into the journal right now are skipped."""
    folder = folder_of(private)
    try:
        names = sorted(n for n in os.listdir(folder) if n.endswith(".ring"))
    except OSError:
        return [], 0
    out: list[Any] = []
    busy = 0
    for name in names:
        try:
            fd = os.open(folder / name, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                busy += 1
                continue  # its process is alive, or a recovery has it
            st = os.fstat(fd)
            if st.st_nlink == 0 or st.st_size // 2 <= HDR:
                continue
            with mmap.mmap(fd, st.st_size, access=mmap.ACCESS_READ) as m:
                for _base, _end, maybe, fresh in _records(m, st.st_size):
                    out.extend((_not_in_journal(path_of, maybe) if maybe else []) + fresh)
        except (OSError, ValueError):
            continue
        finally:
            os.close(fd)
    return out, busy


def _append(jdir: Any, items: list[Any]) -> int:
    metrics, tracks, logs = split_items(items)
    by_metric: dict[str | None, list[dict[str, Any]]] = {}
    for name, data in metrics:
        by_metric.setdefault(name, []).append(data)
    for name, rows in by_metric.items():
        jdir.append_metrics(name, rows)
    by_topic: dict[str, list[dict[str, Any]]] = {}
    for topic, entry in tracks:
        by_topic.setdefault(topic, []).append(entry)
    for topic, entries in by_topic.items():
        jdir.append_tracks(topic, entries)
    if logs:
        jdir.append_logs(logs)
    return len(metrics) + len(tracks) + len(logs)


def _not_in_journal(path_of: Callable[[str, str | None], Path | None], items: list[Any]) -> list[Any]:
    """Of the items that were being written when the process died, those the journal does not hold yet. A
    stream's records of one batch are one append, so what reached the file is a prefix of them: per stream, drop
    everything up to the last item found among the stream's last records."""
    from .jsonio import read_jsonl  # noqa: PLC0415

    metrics, tracks, logs = split_items(items)
    keep: list[Any] = []
    groups: dict[tuple[str, Any], list[Any]] = {}
    for name, data in metrics:
        groups.setdefault(("metrics", name), []).append(data)
    for topic, entry in tracks:
        groups.setdefault(("tracks", topic), []).append(entry)
    for rec in logs:
        groups.setdefault(("logs", None), []).append(rec)
    for (kind, name), recs in groups.items():
        path = path_of(kind, name)
        rows, _ = read_jsonl(path) if path is not None else ([], 0)
        tail = rows[-(len(recs) + 64):]
        if kind == "metrics":
            seen = [_canon(r.get("data")) for r in tail]
            mine = [_canon(d) for d in recs]
        elif kind == "tracks":
            seen = [_canon(r) for r in tail]
            mine = [_canon(e) for e in recs]
        else:
            from .jsonio import iso  # noqa: PLC0415

            seen = [_canon([r.get("timestamp"), r.get("level"), r.get("message"), r.get("metadata")]) for r in tail]
            mine = [_canon([iso(ts), lv, msg, meta]) for ts, lv, msg, meta in recs]
        present = set(seen)
        last = -1
        for i, c in enumerate(mine):
            if c in present:
                last = i
        rest = recs[last + 1:]
        keep.extend(item_of(kind, (name, r) if kind != "logs" else r) for r in rest)
    return keep


def _canon(o: Any) -> str:
    return json.dumps(o, sort_keys=True, allow_nan=True, default=str)
