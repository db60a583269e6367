"""The embedded default's process supervisor: `python -m store.supervisor Procfile` (what `make run` starts).

It runs every line of a Procfile, restarts a process that exits, and leaves no process behind when it stops.
Standard library only (no Django): it must outlive anything the store's code can break.

Procfile syntax, one process type a line (blank lines and `#` comments are ignored):

    name: [VAR=value ...] command args

- The line runs as `sh -c '[VAR=value ...] exec command args'`: the shell expands `$VAR`, `${VAR:-default}` and
  the leading assignments, then `exec` replaces it with the command, so no shell stays in between (a signal to
  the pid reaches the program itself). `$VENV_BIN` is the folder of the Python running the supervisor unless
  set.
- `web` is the web tier: the supervisor binds `WEB_HOST:WEB_PORT` (default 127.0.0.1:8000) once, listens, and
  starts `WEB_PROCESSES` copies (default 2) named `web.1`, `web.2`..., each given the listening socket as file
  descriptor `$WEB_FD` (uvicorn: `--fd $WEB_FD`). The copies accept from one socket, so while one restarts
  the others serve.
- Every other line starts one process, `<name>.1`.
- Each process gets `SUPERVISOR_PROCESS=<name>.<n>` in its environment (and so do its children).

Behaviour:

- A process that exits, whatever its status, is logged (name, pid, exit code or signal) and started again after
  a backoff: 1 s, doubling with each quick exit up to 10 s; a process that ran a minute starts again at 1 s.
- Children's output is read line by line and printed as `HH:MM:SS name | line`.
- Process tree: children stay in the supervisor's process group, so a signal to the group (Ctrl-C in a
  terminal, a service manager's SIGTERM then SIGKILL) reaches them all; each child gets a parent-death signal
  (SIGTERM) so it ends if the supervisor is killed alone; the supervisor is a child subreaper, so the children of
  a child that died (Celery's pool processes, a trainer) come back to it, and it ends them (SIGTERM, then
  SIGKILL after a grace period) before it starts that process type again: no stale process keeps a port or
  consumes a queue.
- SIGINT, SIGTERM or SIGHUP: no more restarts; SIGTERM to every child; after `SUPERVISOR_STOP_SECONDS` (15)
  SIGKILL to whatever is left of the tree (a Celery worker finishing a task, say); exit 0. A second signal kills
  at once.
"""

from __future__ import annotations

import ctypes
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36

BACKOFF_FIRST = 1.0
BACKOFF_MAX = 10.0
STABLE_AFTER = 60.0  # a process that ran this long starts again at BACKOFF_FIRST
ORPHAN_GRACE = 5.0  # an orphan gets SIGTERM, then SIGKILL this many seconds later
SCAN_INTERVAL = 1.0  # how often the process table is read for orphans

_libc = ctypes.CDLL(None, use_errno=True)
# Leading `VAR=value` words of a command line (value unquoted, or in single or double quotes).
_ASSIGNMENTS = re.compile(r"""((?:[A-Za-z_][A-Za-z0-9_]*=(?:'[^']*'|"(?:[^"\\]|\\.)*"|[^\s'"])*\s+)*)(.*)""", re.DOTALL)


@dataclass
class Slot:
    """One supervised process: a Procfile line, or one copy of the `web` line."""

    name: str
    command: str
    pass_fds: tuple[int, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    pid: int | None = None
    started_at: float = 0.0
    quick_exits: int = 0
    start_at: float = 0.0  # when to start it again (monotonic)


def procfile_read(path: Path) -> list[tuple[str, str]]:
    entries = []
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, command = line.partition(":")
        name, command = name.strip(), command.strip()
        if not sep or not re.fullmatch(r"[A-Za-z0-9_-]+", name) or not command:
            raise SystemExit(f"{path}:{number}: expected `name: command`, got {raw!r}")
        if name in (n for n, _ in entries):
            raise SystemExit(f"{path}:{number}: process type {name!r} appears twice")
        entries.append((name, command))
    if not entries:
        raise SystemExit(f"{path}: no processes")
    return entries


def exec_line(command: str) -> str:
    """The shell line that runs `command` with `exec`, after its leading variable assignments (`A=1 exec cmd`
    keeps the assignments in the command's environment; `exec A=1 cmd` would try to run a program `A=1`)."""
    assignments, rest = _ASSIGNMENTS.fullmatch(command).groups()
    if rest.startswith("exec "):
        return command
    return f"{assignments}exec {rest}"


def proc_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state) of every process, read from /proc (state `Z`: a zombie, dead but not reaped)."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        # The command name (field 2) may hold spaces and parentheses: the fields after it follow the last ')'.
        fields = stat[stat.rfind(b")") + 2 :].split()
        table[int(entry.name)] = (int(fields[1]), fields[0].decode())
    return table


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for child, (parent, _) in proc_table().items():
        children.setdefault(parent, []).append(child)
    found, todo = [], list(children.get(pid, []))
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found


def process_owner(pid: int) -> tuple[str, str]:
    """(the supervised process it descends from, its command line), from its environment: `?` when unreadable."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        owner = next((e.split(b"=", 1)[1].decode() for e in environ if e.startswith(b"SUPERVISOR_PROCESS=")), "?")
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?", "?"
    return owner, cmdline[:120]


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


class Supervisor:
    def __init__(self, entries: list[tuple[str, str]], *, env: dict[str, str]):
        self.env = env
        self.slots: list[Slot] = []
        self.web_socket: socket.socket | None = None
        for name, command in entries:
            if name == "web":
                self.web_socket = self._web_bind()
                fd = self.web_socket.fileno()
                copies = max(int(env.get("WEB_PROCESSES") or 2), 1)
                for n in range(1, copies + 1):
                    self.slots.append(Slot(f"web.{n}", command, pass_fds=(fd,), env={"WEB_FD": str(fd)}))
            else:
                self.slots.append(Slot(f"{name}.1", command))
        self.width = max(len("supervisor"), *(len(s.name) for s in self.slots))
        self.selector = selectors.DefaultSelector()
        self.buffers: dict[int, bytearray] = {}
        self.orphans: dict[int, tuple[float, str]] = {}  # pid -> (when it gets SIGKILL, the process it came from)
        self.stopping = False
        self.kill_now = False
        self.pending: list[int] = []
        self.next_scan = 0.0

    # --- output ---

    def say(self, name: str, text: str | bytes) -> None:
        if isinstance(text, str):
            text = text.encode()
        prefix = f"{time.strftime('%H:%M:%S')} {name.ljust(self.width)} | ".encode()
        try:
            sys.stdout.buffer.write(prefix + text.rstrip(b"\n") + b"\n")
            sys.stdout.buffer.flush()
        except (BrokenPipeError, ValueError):
            pass  # nobody reads our output any more: keep supervising

    def _pipe_read(self, fd: int, name: str) -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        buffer = self.buffers[fd]
        if not data:  # every process holding the pipe is gone
            if buffer:
                self.say(name, bytes(buffer))
            self.selector.unregister(fd)
            os.close(fd)
            del self.buffers[fd]
            return
        buffer += data
        *lines, rest = buffer.split(b"\n")
        for line in lines:
            self.say(name, line)
        if len(rest) > 65536:  # a very long line without an end: print what came
            self.say(name, bytes(rest))
            rest = b""
        self.buffers[fd] = bytearray(rest)

    # --- processes ---

    def _web_bind(self) -> socket.socket:
        host = self.env.get("WEB_HOST") or "127.0.0.1"
        port = int(self.env.get("WEB_PORT") or 8000)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise SystemExit(f"supervisor: cannot listen on {host}:{port} for web: {exc.strerror}") from None
        sock.listen(2048)
        sock.set_inheritable(True)
        return sock

    def _start(self, slot: Slot) -> None:
        me = os.getpid()

        def in_child() -> None:  # between fork and exec: die with the supervisor
            _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
            if os.getppid() != me:  # the supervisor died before prctl took effect
                os._exit(1)

        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        env = {**self.env, **slot.env, "SUPERVISOR_PROCESS": slot.name}
        try:
            proc = subprocess.Popen(
                ["/bin/sh", "-c", exec_line(slot.command)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=write_fd,
                stderr=write_fd,
                pass_fds=slot.pass_fds,
                preexec_fn=in_child,  # noqa: PLW1509 (the supervisor runs no threads)
            )
        except OSError as exc:
            os.close(read_fd)
            os.close(write_fd)
            self.say("supervisor", f"{slot.name} could not start: {exc}")
            self._schedule(slot, ran=0.0)
            return
        os.close(write_fd)
        proc.returncode = 0  # we reap it ourselves (waitpid(-1)); Popen must not wait for it
        slot.pid, slot.started_at = proc.pid, time.monotonic()
        self.buffers[read_fd] = bytearray()
        self.selector.register(read_fd, selectors.EVENT_READ, slot.name)
        self.say("supervisor", f"{slot.name} started (pid {slot.pid}): {slot.command}")

    def _schedule(self, slot: Slot, *, ran: float) -> None:
        slot.quick_exits = 0 if ran >= STABLE_AFTER else slot.quick_exits + 1
        delay = min(BACKOFF_FIRST * 2 ** max(slot.quick_exits - 1, 0), BACKOFF_MAX)
        slot.start_at = time.monotonic() + delay
        if not self.stopping:
            self.say("supervisor", f"{slot.name} starts again in {delay:g} s")

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            how = (f"killed by {signal.Signals(os.WTERMSIG(status)).name}" if os.WIFSIGNALED(status)
                   else f"exit code {os.WEXITSTATUS(status)}")
            slot = next((s for s in self.slots if s.pid == pid), None)
            if slot is None:  # an orphan (see _orphans_end); its own children, if any, are ours now
                ended = "ended" if self.orphans.pop(pid, None) is not None else "exited"
                self.say("supervisor", f"orphan {pid} {ended} ({how})")
                self.next_scan = 0.0
                continue
            ran = time.monotonic() - slot.started_at
            slot.pid = None
            self.say("supervisor", f"{slot.name} (pid {pid}) exited: {how}, after {ran:.1f} s")
            self._schedule(slot, ran=ran)
            self.next_scan = 0.0  # its children, if any, are ours now: look at once

    def _orphans_end(self) -> None:
        """Processes re-parented to us (children of a child that died) are ended: SIGTERM, SIGKILL later."""
        now = time.monotonic()
        if now >= self.next_scan:
            self.next_scan = now + SCAN_INTERVAL
            ours = {s.pid for s in self.slots}
            table = proc_table()
            me = os.getpid()
            for pid, (parent, state) in table.items():
                # A zombie is dead already: the next waitpid reaps it.
                if parent == me and state != "Z" and pid not in ours and pid not in self.orphans:
                    owner, cmdline = process_owner(pid)
                    self.say("supervisor", f"ending orphan {pid} of {owner}: {cmdline}")
                    _signal(pid, signal.SIGTERM)
                    self.orphans[pid] = (now + ORPHAN_GRACE, owner)
        for pid, (deadline, owner) in list(self.orphans.items()):
            if now >= deadline:
                # Its own children die with it or come back to us as orphans at the next scan.
                _signal(pid, signal.SIGKILL)
                self.orphans[pid] = (float("inf"), owner)

    def _kill_tree(self) -> None:
        """SIGKILL every descendant and reap them all (each comes back to us as its parent dies)."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            rest = descendants(os.getpid())
            if not rest:
                break
            for pid in rest:
                _signal(pid, signal.SIGKILL)
            time.sleep(0.05)
            self._reap()
        self._reap()

    # --- signals and the loop ---

    def _on_signal(self, signum, frame) -> None:
        self.pending.append(signum)

    def _signals_handle(self) -> None:
        while self.pending:
            signum = self.pending.pop(0)
            if signum == signal.SIGCHLD:
                self._reap()
                continue
            name = signal.Signals(signum).name
            if self.stopping:
                self.say("supervisor", f"{name} again: killing everything now")
                self.kill_now = True
                continue
            self.stopping = True
            self.stop_deadline = time.monotonic() + float(self.env.get("SUPERVISOR_STOP_SECONDS") or 15)
            self.say("supervisor", f"{name}: stopping every process")
            for slot in self.slots:
                if slot.pid:
                    _signal(slot.pid, signal.SIGTERM)
            for pid in self.orphans:
                _signal(pid, signal.SIGTERM)

    def run(self) -> int:
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
        for sig in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        self.selector.register(wake_r, selectors.EVENT_READ, None)
        if _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            self.say("supervisor", f"PR_SET_CHILD_SUBREAPER failed: {os.strerror(ctypes.get_errno())}")
        if self.web_socket:
            host, port = self.web_socket.getsockname()[:2]
            self.say("supervisor", f"web listens on http://{host}:{port} ({len([s for s in self.slots if s.pass_fds])} processes)")
        for slot in self.slots:
            self._start(slot)
        while True:
            self._signals_handle()
            self._reap()
            if self.kill_now:
                break
            if self.stopping:
                alive = any(s.pid for s in self.slots) or self.orphans or descendants(os.getpid())
                if not alive or time.monotonic() >= self.stop_deadline:
                    break
            self._orphans_end()
            now = time.monotonic()
            if not self.stopping:
                for slot in self.slots:
                    # A process type starts again only once the orphans it left are gone.
                    if slot.pid is None and now >= slot.start_at and not self._orphans_of(slot):
                        self._start(slot)
            timeout = 0.2 if (self.stopping or self.orphans) else SCAN_INTERVAL
            for key, _ in self.selector.select(timeout):
                if key.data is None:
                    try:
                        while wake_r.recv(4096):
                            pass
                    except BlockingIOError:
                        pass
                else:
                    self._pipe_read(key.fd, key.data)
        left = descendants(os.getpid())
        if left:
            self.say("supervisor", f"killing {len(left)} process(es) still running: {', '.join(map(str, left))}")
        self._kill_tree()
        for fd in list(self.buffers):  # what the last processes wrote
            self._pipe_read(fd, self.selector.get_key(fd).data)
        self.say("supervisor", "stopped")
        return 0

    def _orphans_of(self, slot: Slot) -> bool:
        """Orphans it left are not reaped yet (one of unknown origin holds back every process)."""
        return any(owner in (slot.name, "?") for _, owner in self.orphans.values())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m store.supervisor PROCFILE", file=sys.stderr)
        return 2
    env = dict(os.environ)
    env.setdefault("VENV_BIN", str(Path(sys.executable).parent))
    env.setdefault("PYTHONUNBUFFERED", "1")  # lines arrive as they are written
    return Supervisor(procfile_read(Path(argv[0])), env=env).run()


if __name__ == "__main__":
    sys.exit(main())
