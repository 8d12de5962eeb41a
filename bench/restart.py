#!/usr/bin/env python3
"""What restarting the agent itself costs, under load, in one run (issue 11's figures).

For each way of restarting, the example app (2 workers, DELAY_MS per request) runs behind the http
front while loadcheck.py drives --conns clients with a new connection per request and with
keep-alive, and the agent is restarted --times times:

  sigterm      graceful stop (SIGTERM), then a new agent binds the ports itself
  kill9        kill -9, then a new agent binds the ports itself
  sigterm-held graceful stop with the API's and the front's sockets held by this script and passed
               to each agent as systemd's socket units do (LISTEN_FDS): nothing is ever refused
  kill9-held   kill -9 with the sockets held: only what the killed agent carried is lost
  upgrade      `deployer-agent upgrade`: the sockets are handed to a new agent, which starts its
               workers; then the old one drains and exits (the gap column is the upgrade's time).
               The binary on disk is replaced (a new file renamed over it) before each upgrade,
               as a package upgrade does.

Prints, per case: requests ok and failed (by kind: refused connections are `oserror_111`), and
the time from the stop until the app answered again (a GET sent right after the stop).

Usage: bench/restart.py [--agent target/release/deployer-agent] [--times 5] [--delay-ms 500]
"""
import argparse, json, os, signal, socket, subprocess, sys, tempfile, threading, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def get(port, timeout=30.0):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=timeout) as r:
        return r.status


class Agent:
    def __init__(self, args, work, held):
        self.args, self.work, self.held = args, work, held
        # The agent runs from a copy of its own, which upgrades replace.
        self.binary = os.path.join(work, "deployer-agent")
        replace_binary(args.agent, self.binary)
        self.api, self.port = free_port(), free_port()
        self.sockets = []
        if held:
            for port in (self.api, self.port):
                s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("127.0.0.1", port)); s.listen(1024); self.sockets.append(s)
        cfg = os.path.join(work, "agent.yaml")
        with open(cfg, "w") as f:
            f.write(f"""listen: 127.0.0.1:{self.api}
state_dir: {work}/state
apps:
  web:
    cwd: {ROOT}/examples/hello-node
    start: node app.js
    instances: 2
    port: {self.port}
    bind: 127.0.0.1
    env: {{ DELAY_MS: "{args.delay_ms}" }}
    reload: {{ drain_timeout: 30s, kill_timeout: 5s }}
""")
        self.cfg, self.proc, self.log = cfg, None, open(os.path.join(work, "agent.log"), "ab")

    def start(self):
        argv = [self.binary, "--config", self.cfg]
        if self.held:
            fds = [s.fileno() for s in self.sockets]
            # sh puts its own pid in LISTEN_PID and execs the agent, which keeps it; the held
            # sockets become fd 3 and 4.
            script = 'LISTEN_PID=$$ LISTEN_FDS=2 LISTEN_FDNAMES=api:web exec "$0" "$@"'
            def place():
                high = [os.dup(fd) for fd in fds]
                for i, fd in enumerate(high):
                    os.dup2(fd, 3 + i, inheritable=True)
            self.proc = subprocess.Popen(["/bin/sh", "-c", script] + argv, preexec_fn=place,
                                         close_fds=False, stdout=self.log, stderr=self.log)
        else:
            self.proc = subprocess.Popen(argv, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if get(self.port, 1) == 200:
                    return
            except Exception:
                time.sleep(0.05)
        sys.exit(f"the agent did not serve within 30s; see {self.work}/agent.log")

    def stop(self, sig):
        self.proc.send_signal(sig); self.proc.wait()


def restart_once(args, agent, sig):
    """Stop the agent with `sig` and start a new one; answers the time until the app answered
    again (a GET sent right after the stop: with held sockets it waits in the queue, without it
    is refused until the new agent binds, so it is retried)."""
    agent.stop(sig)
    t0 = time.monotonic()
    gaps, done = [], threading.Event()
    def probe():
        while not done.is_set():
            try:
                if get(agent.port, 30) == 200:
                    gaps.append(time.monotonic() - t0); done.set(); return
            except Exception:
                time.sleep(0.005)
    t = threading.Thread(target=probe); t.start()
    agent.start()
    t.join(30); done.set()
    return gaps[0] if gaps else None


def replace_binary(source, target):
    """Put a new file at `target` with `source`'s bytes, renamed over the old one (whose inode the
    running agent keeps), as a package manager does."""
    tmp = target + ".new"
    with open(source, "rb") as src, open(tmp, "wb") as dst:
        dst.write(src.read())
    os.chmod(tmp, 0o755)
    os.rename(tmp, target)


def upgrade_once(args, agent):
    """Replace the binary on disk, then `deployer-agent upgrade`; answers how long the upgrade
    took. The new agent is not our child: its pid is kept to stop it at the end."""
    replace_binary(args.agent, agent.binary)
    t0 = time.monotonic()
    out = subprocess.run([agent.binary, "--config", agent.cfg, "upgrade"], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"upgrade failed:\n{out.stderr}")
    agent.upgraded_pid = int(out.stderr.split("new agent (pid ")[1].split(")")[0])
    return time.monotonic() - t0


def case(args, name, sig, held, keepalive):
    with tempfile.TemporaryDirectory(prefix="deployer-restart-") as work:
        agent = Agent(args, work, held)
        agent.upgraded_pid = None
        agent.start()
        pause = 1 if name == "upgrade" else 3
        seconds = args.times * (pause + 3) + 4
        cmd = [sys.executable, args.loadcheck, "--port", str(agent.port), "--conns", str(args.conns),
               "--seconds", str(seconds)] + (["--keepalive"] if keepalive else [])
        load = subprocess.Popen(cmd, stdout=subprocess.PIPE)
        time.sleep(2)
        gaps = []
        for _ in range(args.times):
            gaps.append(upgrade_once(args, agent) if name == "upgrade" else restart_once(args, agent, sig))
            time.sleep(pause)
        out, _ = load.communicate()
        if agent.upgraded_pid:
            os.kill(agent.upgraded_pid, signal.SIGTERM)
            while os.path.exists(f"/proc/{agent.upgraded_pid}"):
                time.sleep(0.05)
            agent.proc.wait()
        else:
            agent.stop(signal.SIGTERM)
        r = json.loads(out)
        gaps = [g for g in gaps if g is not None]
        gap = f"{max(gaps):.2f}s" if gaps else "?"
        client = "keep-alive" if keepalive else "conn/request"
        print(f"| {name:12} | {client:12} | {r['ok']:6} | {r['failed']:5} | {json.dumps(r['fail']) or '{}'} | {gap} |",
              flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agent", default=os.path.join(ROOT, "target/release/deployer-agent"))
    ap.add_argument("--loadcheck", default=os.path.join(ROOT, "../shared/bench/loadcheck.py"))
    ap.add_argument("--times", type=int, default=5)
    ap.add_argument("--conns", type=int, default=50)
    ap.add_argument("--delay-ms", type=int, default=500)
    ap.add_argument("--cases", default="sigterm,kill9,sigterm-held,kill9-held,upgrade")
    args = ap.parse_args()
    if not os.path.exists(args.loadcheck):
        args.loadcheck = os.path.join(ROOT, "bench/loadcheck.py")
    print(f"{args.times} agent restarts under {args.conns} clients, app answering in {args.delay_ms} ms\n")
    print("| restart      | clients      | ok     | failed | by kind | longest gap |")
    print("|---|---|---|---|---|---|")
    cases = {"sigterm": (signal.SIGTERM, False), "kill9": (signal.SIGKILL, False),
             "sigterm-held": (signal.SIGTERM, True), "upgrade": (None, False), "kill9-held": (signal.SIGKILL, True)}
    for name in args.cases.split(","):
        sig, held = cases[name]
        for keepalive in (False, True):
            case(args, name, sig, held, keepalive)


if __name__ == "__main__":
    main()
