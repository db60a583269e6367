"""store/supervisor.py with tiny real processes: restarts with backoff, orphans ended, nothing left behind on
Ctrl-C, a service manager's stop or a killed supervisor, and two web processes on one socket."""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from store.supervisor import exec_line, procfile_read
from tests.live import ROOT, StoreStack, free_port, store_stack, wait_for

PY = sys.executable
SLEEPER = f"{PY} -c 'import time; time.sleep(600)'"
# Ignores SIGTERM (as a Celery worker finishing a task would): only SIGKILL ends it.
STUBBORN = f"""{PY} -c 'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print("stubborn up", flush=True); time.sleep(600)'"""


FORKER = """
import os, signal, sys, time
pid = os.fork()
if pid == 0:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with open(sys.argv[1], "a") as fh:
        fh.write(f"{os.getpid()}\\n")
time.sleep(600)
"""


def forker(pid_file: Path) -> str:
    """A process whose child (its pid appended to pid_file) ignores SIGTERM: only a SIGKILL ends it."""
    script = pid_file.parent / "forker.py"
    script.write_text(FORKER)
    return f"{PY} {script} {pid_file}"


def alive(p: psutil.Process) -> bool:
    """Running and not a zombie (a process re-parented to PID 1 may stay a zombie here until PID 1 reaps it)."""
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class Supervised:
    def __init__(self, proc: subprocess.Popen, log: Path):
        self.proc, self.log = proc, log

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def processes(self) -> dict[str, psutil.Process]:
        """Name (`web.1`) -> the supervisor's direct child of that name, from SUPERVISOR_PROCESS."""
        found = {}
        for child in psutil.Process(self.proc.pid).children():
            try:
                name = child.environ().get("SUPERVISOR_PROCESS")
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            if name and f"{name} started (pid {child.pid})" in self.text():
                found[name] = child
        return found

    def wait(self, predicate, *, timeout: float, what: str):
        def check():
            if self.proc.poll() is not None:
                raise RuntimeError(f"the supervisor exited ({self.proc.returncode}); its log:\n{self.text()}")
            return predicate()

        try:
            return wait_for(check, timeout=timeout, what=what)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; the supervisor's log:\n{self.text()}") from None

    def wait_started(self, *names: str, timeout: float = 30) -> dict[str, psutil.Process]:
        def running():
            found = self.processes()
            return found if set(names) <= set(found) else None

        return self.wait(running, timeout=timeout, what=f"{names} to run")

    def restarted(self, name: str, old: psutil.Process, *, timeout: float) -> psutil.Process:
        def new():
            p = self.processes().get(name)
            return p if p and p.pid != old.pid else None

        return self.wait(new, timeout=timeout, what=f"{name} to start again")

    def tree(self) -> list[psutil.Process]:
        return [psutil.Process(self.proc.pid), *psutil.Process(self.proc.pid).children(recursive=True)]


@contextmanager
def supervised(tmp_path: Path, procfile: str, **env: str):
    path = tmp_path / "Procfile"
    path.write_text(textwrap.dedent(procfile))
    log = tmp_path / "supervisor.log"
    with open(log, "wb") as out:
        # A session of its own: the supervisor leads a process group, as under a service manager or a terminal.
        proc = subprocess.Popen([PY, "-m", "store.supervisor", str(path)], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", **env}, start_new_session=True)
    try:
        yield Supervised(proc, log)
    finally:
        try:  # whatever a failed test left in the group (it outlives its leader)
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def test_procfile_lines_run_with_exec_after_their_assignments(tmp_path):
    assert exec_line("A=1 B='x y' C=${C:-2} cmd --flag") == "A=1 B='x y' C=${C:-2} exec cmd --flag"
    assert exec_line('X="a b" cmd') == 'X="a b" exec cmd'
    assert exec_line("exec cmd") == "exec cmd"
    (tmp_path / "P").write_text("# comment\n\nweb: a --fd $WEB_FD\nworker: b -Q x\n")
    assert procfile_read(tmp_path / "P") == [("web", "a --fd $WEB_FD"), ("worker", "b -Q x")]
    (tmp_path / "P").write_text("web a\n")
    with pytest.raises(SystemExit, match="expected `name: command`"):
        procfile_read(tmp_path / "P")


def test_a_killed_process_starts_again_and_a_crashing_one_backs_off(tmp_path):
    with supervised(tmp_path, f"""
        sleeper: GREETING=${{GREETING:-hello}} {SLEEPER}
        crasher: {PY} -c 'import sys; print("crashing", flush=True); sys.exit(3)'
    """) as sup:
        first = sup.wait_started("sleeper.1")["sleeper.1"]
        # `exec`: the pid is the program itself, no shell in between; the assignment reached its environment.
        assert first.cmdline()[:2] == [PY, "-c"] and first.environ()["GREETING"] == "hello"
        first.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        again = sup.restarted("sleeper.1", first, timeout=10)
        assert time.monotonic() - killed_at < 3  # the first restart comes after 1 s
        assert again.pid != first.pid
        assert re.search(rf"sleeper\.1 \(pid {first.pid}\) exited: killed by SIGKILL", sup.text())

        sup.wait(lambda: sup.text().count("crasher.1 started") >= 4, timeout=20, what="crasher.1's fourth start")
        text = sup.text()
        assert "crasher.1  | crashing" in text and "exited: exit code 3" in text
        delays = re.findall(r"crasher\.1 starts again in (\d+) s", text)
        assert delays[:3] == ["1", "2", "4"]
        stamps = [time.mktime(time.strptime(t, "%H:%M:%S")) for t in re.findall(r"(\d\d:\d\d:\d\d) supervisor +\| crasher\.1 started", text)]
        assert stamps[3] - stamps[0] >= 6  # 1 + 2 + 4 s (to the second)


def test_the_children_of_a_killed_process_are_ended_before_it_starts_again(tmp_path):
    pids = tmp_path / "grandchildren"
    with supervised(tmp_path, f"forker: {forker(pids)}\n") as sup:
        parent = sup.wait_started("forker.1")["forker.1"]
        sup.wait(lambda: pids.exists() and pids.read_text().count("\n") == 1, timeout=10, what="the grandchild")
        grandchild = psutil.Process(int(pids.read_text().split()[0]))
        parent.send_signal(signal.SIGKILL)
        # It comes back to the supervisor (a subreaper), which ends it: it ignores SIGTERM, so SIGKILL after 5 s.
        psutil.wait_procs([grandchild], timeout=15)
        assert not alive(grandchild)
        sup.wait(lambda: pids.exists() and pids.read_text().count("\n") == 2, timeout=15, what="forker.1 to start again")
        text = sup.text()
        assert f"ending orphan {grandchild.pid} of forker.1: " in text
        ended = text.index(f"orphan {grandchild.pid} ended (killed by SIGKILL)")
        assert text.index("forker.1 started", ended) > ended  # started again only once its orphan was gone
        assert text.count("forker.1 started") == 2


def test_sigint_stops_everything_and_leaves_no_process(tmp_path):
    pids = tmp_path / "grandchildren"
    with supervised(tmp_path, f"""
        sleeper: {SLEEPER}
        stubborn: {STUBBORN}
        forker: {forker(pids)}
    """, SUPERVISOR_STOP_SECONDS="2") as sup:
        sup.wait_started("sleeper.1", "stubborn.1", "forker.1")
        sup.wait(lambda: pids.exists() and "stubborn up" in sup.text(), timeout=10, what="every process up")
        tree = sup.tree()
        assert len(tree) == 5  # the supervisor, three children, one grandchild
        started = time.monotonic()
        sup.proc.send_signal(signal.SIGINT)
        assert sup.proc.wait(timeout=20) == 0
        assert time.monotonic() - started < 10  # SIGTERM, then SIGKILL after SUPERVISOR_STOP_SECONDS
        assert [p.pid for p in tree if alive(p)] == []
        text = sup.text()
        assert "SIGINT: stopping every process" in text and "stubborn.1" in text.split("SIGINT")[1]
        assert "starts again" not in text.split("SIGINT")[1]


def test_a_service_managers_stop_leaves_no_process(tmp_path):
    """SIGTERM to the process group, SIGKILL to it later (systemd's KillMode=control-group in spirit)."""
    pids = tmp_path / "grandchildren"
    with supervised(tmp_path, f"""
        stubborn: {STUBBORN}
        forker: {forker(pids)}
    """, SUPERVISOR_STOP_SECONDS="30") as sup:
        sup.wait_started("stubborn.1", "forker.1")
        sup.wait(lambda: pids.exists() and "stubborn up" in sup.text(), timeout=10, what="every process up")
        tree = sup.tree()
        assert {os.getpgid(p.pid) for p in tree} == {sup.proc.pid}  # one group: its signals reach them all
        os.killpg(sup.proc.pid, signal.SIGTERM)
        time.sleep(1)
        assert sup.proc.poll() is None  # the supervisor waits for the stubborn one
        os.killpg(sup.proc.pid, signal.SIGKILL)
        sup.proc.wait(timeout=10)
        psutil.wait_procs(tree[1:], timeout=10)
        assert [p.pid for p in tree if alive(p)] == []


def test_children_die_with_a_supervisor_killed_alone(tmp_path):
    with supervised(tmp_path, f"""
        one: {SLEEPER}
        two: {SLEEPER}
    """) as sup:
        children = list(sup.wait_started("one.1", "two.1").values())
        sup.proc.send_signal(signal.SIGKILL)
        sup.proc.wait(timeout=10)
        psutil.wait_procs(children, timeout=10)  # the parent-death signal (SIGTERM)
        assert [p.pid for p in children if alive(p)] == []


APP = """
import os

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": str(os.getpid()).encode()})
"""


def test_two_web_processes_share_one_socket_and_one_serves_while_the_other_restarts(tmp_path):
    (tmp_path / "pidapp.py").write_text(APP)
    port = free_port()
    web = (f"web: $VENV_BIN/python -m uvicorn pidapp:app --app-dir {tmp_path} --fd $WEB_FD --lifespan off "
           "--no-access-log --http httptools --loop uvloop\n")
    with supervised(tmp_path, web, WEB_PORT=str(port)) as sup:
        procs = sup.wait_started("web.1", "web.2")
        sup.wait(lambda: sup.text().count("Uvicorn running on socket") == 2, timeout=30, what="both web processes")
        assert f"web listens on http://127.0.0.1:{port} (2 processes)" in sup.text()

        answers: list[str] = []
        failures: list[str] = []
        stop = threading.Event()

        def client():
            while not stop.is_set():
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                try:
                    conn.request("GET", "/")
                    response = conn.getresponse()
                    answers.append(response.read().decode() if response.status == 200 else f"status {response.status}")
                except OSError as exc:
                    failures.append(repr(exc))
                finally:
                    conn.close()

        thread = threading.Thread(target=client)
        thread.start()
        try:
            sup.wait(lambda: len(answers) >= 20, timeout=10, what="answers")
            victim = procs["web.1"]
            victim.send_signal(signal.SIGKILL)
            killed_at = len(answers)
            back = sup.restarted("web.1", victim, timeout=15)
            sup.wait(lambda: sup.text().count("Uvicorn running on socket") == 3, timeout=30, what="web.1 to serve")
            served_meanwhile = len(answers) - killed_at
            time.sleep(0.5)
        finally:
            stop.set()
            thread.join()
        # Only a request the killed process had accepted can fail: the client sends one at a time.
        assert len(failures) <= 1, failures
        assert served_meanwhile >= 20  # answered all along while web.1 was down and starting again
        assert str(procs["web.2"].pid) in answers[killed_at:]
        assert all(a.isdigit() for a in answers) and back.pid != victim.pid


# --- the real store under the supervisor ----------------------------------------------------------------------


class Stack(Supervised):
    def __init__(self, live: StoreStack):
        super().__init__(live.proc, live.log_path)
        self.url, self.inference_url = live.url, live.inference_url

    def get(self, url: str, timeout: float = 5, headers: dict | None = None) -> int:
        conn = http.client.HTTPConnection(*url.split("//")[1].split("/")[0].split(":"), timeout=timeout)
        try:
            conn.request("GET", "/" + url.split("//")[1].partition("/")[2], headers=headers or {})
            response = conn.getresponse()
            response.read()
            return response.status
        finally:
            conn.close()

    def answers(self, url: str, status: int = 200) -> bool:
        try:
            return self.get(url) == status
        except OSError:
            return False

    def logged_after(self, marker: str, pattern: str) -> bool:
        _, found, after = self.text().partition(marker)
        return bool(found and re.search(pattern, after))


@pytest.mark.slow
def test_the_store_under_the_supervisor_survives_a_kill_9_of_each_process_and_stops_clean(transactional_db, store, tmp_path, settings):
    """kill -9 of the model server, a web process and the gpu worker in the middle of a training job: each is back
    within 30 s, the catalog answers throughout, the restarted worker resumes the job from its checkpoint; then
    Ctrl-C (SIGINT, with the job training) leaves no process of the store."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    from apps.accounts.services import api_key_create
    from apps.tuning import services
    from apps.tuning.models import FineTuningJob, JobMetric, TrainingFile
    from tests.factories import UserFactory
    from tests.tuning.test_jobs import chat_lines

    settings.MEDIA_ROOT = tmp_path / "media"
    settings.FINETUNE_WORK_ROOT = tmp_path / "finetune"
    user = UserFactory()
    auth = {"Authorization": f"Bearer {api_key_create(user=user, name='poll')[1]}"}
    seen: dict[int, psutil.Process] = {}  # every process of the store this test saw, for the final check

    def remember(stack: Stack) -> None:
        for p in stack.tree()[1:]:
            seen.setdefault(p.pid, p)

    def back_within_30s(name: str, old: psutil.Process, ready, what: str) -> None:
        old.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        stack.restarted(name, old, timeout=30)
        stack.wait(ready, timeout=30 - (time.monotonic() - killed), what=what)
        print(f"{name}: {what} {time.monotonic() - killed:.1f} s after its kill -9")
        remember(stack)

    with store_stack(log_path=tmp_path / "stack.log", FINETUNE_CHECKPOINT_STEPS="2", FINETUNE_LEASE_SECONDS="6",
                     FINETUNE_REQUEUE_EVERY="3", TORCH_NUM_THREADS="1", RATE_LIMIT_KEY_REQUESTS="1000000",
                     RATE_LIMIT_USER_REQUESTS="1000000") as live:
        stack = Stack(live)
        procs = stack.wait_started("web.1", "web.2", "inference.1", "worker.1", "worker-gpu.1", "beat.1")
        remember(stack)
        catalog = f"{stack.url}/api/v1/apps/"
        assert stack.get(catalog, headers=auth) == 200

        statuses: list[str] = []
        stop = threading.Event()

        def poll():
            while not stop.is_set():
                try:
                    statuses.append(str(stack.get(catalog, headers=auth)))
                except OSError as exc:
                    statuses.append(repr(exc))
                time.sleep(0.1)

        poller = threading.Thread(target=poll)
        poller.start()
        try:
            back_within_30s("inference.1", procs["inference.1"], lambda: stack.answers(f"{stack.inference_url}/health"),
                            "answering")
            stack.wait(lambda: stack.answers(f"{stack.url}/healthz"), timeout=30, what="/healthz 200 again")
            # A training file, validated by `worker` meanwhile.
            upload = services.training_file_create(owner=user, upload=SimpleUploadedFile("pirate.jsonl", chat_lines(40).encode()))

            # A web process: the other one serves on the shared socket meanwhile (the poller's statuses).
            back_within_30s("web.1", procs["web.1"],
                            lambda: any(c.status == psutil.CONN_LISTEN for c in stack.processes()["web.1"].net_connections()),
                            "listening")

            # The gpu worker, mid-training: Celery's pool process and the trainer under it go too.
            stack.wait(lambda: TrainingFile.objects.filter(pk=upload.pk, status="processed").exists(), timeout=60,
                       what="the file's validation")
            upload.refresh_from_db()
            job = services.finetune_job_create(owner=user, training_file=upload, model="smollm2-135m-instruct",
                                               hyperparameters={"n_epochs": 2, "batch_size": 4})
            stack.wait(lambda: FineTuningJob.objects.filter(pk=job.pk, last_checkpoint_step__gte=2).exists(), timeout=120,
                       what="a checkpoint")
            gpu = procs["worker-gpu.1"]
            under = gpu.children(recursive=True)
            assert any("apps.tuning.child" in " ".join(p.cmdline()) for p in under)
            remember(stack)
            back_within_30s("worker-gpu.1", gpu,
                            lambda: stack.logged_after(f"(pid {gpu.pid}) exited", r"worker-gpu\.1 +\| .* gpu@\S+ ready"),
                            "ready")
            assert [p.pid for p in under if alive(p)] == []  # ended before the new worker started
            killed_at = FineTuningJob.objects.get(pk=job.pk)
            assert killed_at.status == "running" and killed_at.step < killed_at.total_steps

            # Beat re-queues the job once its lease runs out; the restarted worker resumes it from its checkpoint.
            resumed = stack.wait(lambda: job.events.filter(message__startswith="Resumed from the checkpoint").first(),
                                 timeout=60, what="the job to resume")
            assert resumed.data["resumed_from_step"] >= 2 and resumed.data["attempt"] == 2
            after_resume = JobMetric.objects.filter(job=job, train_loss__isnull=False, created_at__gt=resumed.created_at)
            stack.wait(after_resume.exists, timeout=60, what="a step after the resume")
            assert min(after_resume.values_list("step", flat=True)) == resumed.data["resumed_from_step"] + 1
            remember(stack)
        finally:
            stop.set()
            poller.join()

        # The catalog answered all along; at most the one request web.1 had accepted when it was killed failed.
        assert len(statuses) > 200
        assert len([s for s in statuses if s != "200"]) <= 1, [s for s in statuses if s != "200"]

        # Ctrl-C, with the job training.
        assert FineTuningJob.objects.get(pk=job.pk).status == "running"
        remember(stack)
        # One process group, the pool processes and the trainer included: a service manager's SIGKILL to it ends all.
        assert {os.getpgid(p.pid) for p in stack.tree()} == {stack.proc.pid}
        stack.proc.send_signal(signal.SIGINT)
        assert stack.proc.wait(timeout=40) == 0
        psutil.wait_procs(list(seen.values()), timeout=5)
        assert [f"{p.pid}: {p.cmdline()}" for p in seen.values() if alive(p)] == []
        assert "SIGINT: stopping every process" in stack.text() and stack.text().rstrip().endswith("stopped")
