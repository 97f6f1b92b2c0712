"""``make demo``, FiftyOne part: build the persistent dataset ``prefiqs-demo``, print its summary, serve the App.

    .venv/bin/python tools/plugin_demo.py [--name prefiqs-demo] [--chips-dir DIR] [--port 5151]
    NO_APP=1 .venv/bin/python tools/plugin_demo.py      # build and summarise only

The App is served in remote mode on 127.0.0.1 (works on headless machines; open the printed URL,
or forward the port with ``ssh -L``). Ctrl-C stops it: the App server runs in its own process
group (FiftyOne's service wrapper calls ``setpgrp``), so it does not see the Ctrl-C; it is closed
through FiftyOne and any process of it still alive afterwards is terminated by PID.

Only the standard library is imported at module level: FiftyOne reads its configuration (the
plugins directory) when it is first imported, so :func:`configure_env` must run before that.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import socket
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = "@prefiqs/prefiqs"
DEFAULT_PORT = 5151


def configure_env():
    """Point FiftyOne at this checkout's plugin (the demo runs the plugin it ships with)."""
    os.environ["FIFTYONE_PLUGINS_DIR"] = str(ROOT)
    os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
    # the Makefile installs MongoDB 6.0.5, FiftyOne's oldest supported: skip its warning about that
    os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
    os.environ.setdefault("PREFIQS_DATA", str(ROOT / "data"))


def demo_module(name: str = "demo_dataset"):
    """``operators/<name>.py`` as FiftyOne loaded the plugin, so it shares the operators' caches."""
    import fiftyone.operators as foo

    op = foo.get_operator(f"{PLUGIN}/compute_prefiqs")  # loads the plugin package
    package = type(op).__module__.rsplit(".", 1)[0]  # <plugin package>.operators
    return importlib.import_module(f"{package}.{name}")


# ------------------------------------------------------------------------------------------------
# the App
# ------------------------------------------------------------------------------------------------


def port_is_free(port: int, address: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        # as servers bind: a port left in TIME_WAIT by a previous App is free for a new one
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address, port))
            return True
        except OSError:
            return False


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


class AppServer:
    """A running App: its URL and the processes FiftyOne started for it."""

    def __init__(self, url: str, procs):
        self.url = url
        self.procs = procs  # psutil.Process objects (they remember create_time: no PID-reuse mistakes)
        self.pgids = set()
        for p in procs:
            try:
                self.pgids.add(os.getpgid(p.pid))
            except ProcessLookupError:
                pass

    def alive(self) -> bool:
        import psutil

        try:
            return bool(self.procs) and all(p.is_running() and p.status() != psutil.STATUS_ZOMBIE
                                            for p in self.procs)
        except psutil.Error:
            return False

    def close(self, timeout: float = 20.0) -> list[int]:
        """Close the session, wait for its processes to exit, terminate any left; returns the PIDs
        that had to be killed (empty when FiftyOne shut everything down itself)."""
        import psutil
        import fiftyone as fo

        # the server may have started more children since launch; collect them while it lives
        procs = list(self.procs)
        for p in self.procs:
            try:
                procs += p.children(recursive=True)
            except psutil.Error:
                pass
        fo.close_app()  # closes the service's stdin: it terminates the server and exits
        _, alive = psutil.wait_procs(procs, timeout=timeout)
        killed = []
        for p in alive:
            try:
                p.terminate()
                killed.append(p.pid)
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(alive, timeout=5)
        for p in alive:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        return killed


def start_app(dataset, port: int | None = None, address: str = "127.0.0.1", timeout: float = 120.0) -> AppServer:
    """Launch the App in remote mode on ``address:port`` and wait until ``/`` answers HTTP 200."""
    import psutil
    import fiftyone as fo

    port = port or free_port(address)
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}  # the database service, if running
    fo.launch_app(dataset, remote=True, address=address, port=port, auto=False)
    procs = [p for p in me.children(recursive=True) if p.pid not in before]
    url = f"http://{address}:{port}/"
    app = AppServer(url, procs)
    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return app
        except OSError:
            pass
        if time.time() > deadline or not app.alive():
            app.close()
            raise RuntimeError(f"the FiftyOne App did not answer on {url}")
        time.sleep(0.5)


def serve(dataset, port: int | None = None, address: str = "127.0.0.1", on_ready=None) -> int:
    """Serve the App until Ctrl-C (or SIGTERM); always shut it down. Returns an exit status."""

    def stop(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    # a process started in the background by a shell inherits SIGINT ignored; Ctrl-C must still stop it
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    app = None
    try:
        app = start_app(dataset, port, address)
        print(f"\nFiftyOne App: {app.url}datasets/{dataset.name}   (Ctrl-C to stop)", flush=True)
        if on_ready:
            on_ready(app)
        while app.alive():
            time.sleep(0.5)
        print("the App server exited", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping the App...", flush=True)
        return 0
    finally:
        # a second Ctrl-C must not cut the shutdown short and leave the server behind
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            if app is not None:
                killed = app.close()
                if killed:
                    print(f"terminated leftover App processes {killed}", file=sys.stderr)
                print("App stopped", flush=True)
            else:  # interrupted while launching: close whatever FiftyOne had started
                import fiftyone as fo

                fo.close_app()
        finally:
            signal.signal(signal.SIGINT, previous_int)
            signal.signal(signal.SIGTERM, previous)


# ------------------------------------------------------------------------------------------------
# main
# ------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--name", default="prefiqs-demo", help="dataset name (rebuilt from scratch)")
    ap.add_argument("--chips-dir", help="where chip PNGs are written (default $PREFIQS_DATA/demo_chips)")
    ap.add_argument("--device", help="cpu, cuda... (default: auto)")
    ap.add_argument("--orl-people", type=int, help="ORL people to add (default all 40; 0: none)")
    ap.add_argument("--port", type=int, default=int(os.environ.get("PREFIQS_APP_PORT", DEFAULT_PORT)))
    ap.add_argument("--address", default="127.0.0.1")
    ap.add_argument("--no-app", action="store_true", help="do not launch the App (also: NO_APP=1)")
    ap.add_argument("--json", help="also write the summary to this JSON file")
    args = ap.parse_args(argv)
    configure_env()

    t0 = time.time()
    demo = demo_module()
    ds = demo.build_demo_dataset(args.name, chips_dir=args.chips_dir, device=args.device, orl_people=args.orl_people,
                                 log=lambda s: print(f"[{time.time() - t0:5.1f} s] {s}", flush=True))
    summary = demo.demo_summary(ds)
    print(f"built in {time.time() - t0:.1f} s\n")
    print(demo.format_summary(summary), flush=True)
    if args.orl_people != 0:
        orl = demo_module("demo_orl")
        summary["orl"] = orl.orl_summary(ds)
        print("\n" + orl.format_orl_summary(summary["orl"]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    print(f"\nopen it later with: FIFTYONE_PLUGINS_DIR={ROOT} fiftyone app launch {ds.name} --wait -1")
    if args.no_app or os.environ.get("NO_APP", "") not in ("", "0"):
        return 0
    port = args.port
    if not port_is_free(port, args.address):
        # FiftyOne would silently attach to whatever App already listens there (maybe another database)
        port = free_port(args.address)
        print(f"port {args.port} is taken; using {port}")
    return serve(ds, port, args.address)


if __name__ == "__main__":
    sys.exit(main())
