#!/usr/bin/env python3
"""What deploys leave in the agent's memory (issue 13): the agent's RSS after the 1st and after
the Nth deploy of a small app from a local git repo (a new commit each time, 2 workers, the example
app), and idle at start.

Usage: bench/deploy_memory.py [--agent target/release/deployer-agent] [--deploys 100]
"""
import argparse, json, os, shutil, socket, subprocess, sys, tempfile, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKEN = "bench-deploy-memory-token"


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def api(port, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                 headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read() or b"null")


def git(repo, *args):
    subprocess.run(["git", "-C", repo, *args], check=True, capture_output=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agent", default=os.path.join(ROOT, "target/release/deployer-agent"))
    ap.add_argument("--deploys", type=int, default=100)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="deployer-memory-") as work:
        repo = os.path.join(work, "repo")
        shutil.copytree(os.path.join(ROOT, "examples/hello-node"), repo)
        with open(os.path.join(repo, "VERSION"), "w") as f:
            f.write("0\n")
        git(repo, "init", "-q", "-b", "main")
        git(repo, "-c", "user.name=bench", "-c", "user.email=bench@localhost", "add", "-A")
        git(repo, "-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-q", "-m", "v0")
        api_port, port = free_port(), free_port()
        cfg = os.path.join(work, "agent.yaml")
        with open(cfg, "w") as f:
            f.write(f"""listen: 127.0.0.1:{api_port}
state_dir: {work}/state
tokens:
  - {{ name: bench, token_env: BENCH_TOKEN, scopes: [read, deploy] }}
apps:
  web:
    repo: {repo}
    branch: main
    start: node app.js
    instances: 2
    port: {port}
    bind: 127.0.0.1
""")
        env = dict(os.environ, BENCH_TOKEN=TOKEN)
        log = open(os.path.join(work, "agent.log"), "wb")
        agent = subprocess.Popen([args.agent, "--config", cfg], stdout=log, stderr=log, env=env)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    apps = api(api_port, "GET", "/v1/apps/web")
                    if sum(w["state"] == "online" for w in apps["workers"]) == 2:
                        break
                except Exception:
                    pass
                time.sleep(0.1)
            else:
                sys.exit(f"the first release did not serve; see {work}/agent.log")
            time.sleep(1)
            idle = rss_kb(agent.pid)
            after = {}
            for n in range(1, args.deploys + 1):
                with open(os.path.join(repo, "VERSION"), "w") as f:
                    f.write(f"{n}\n")
                git(repo, "-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-q", "-am", f"v{n}")
                d = api(api_port, "POST", "/v1/apps/web/deploys", {"ref": "main"})
                while True:
                    state = api(api_port, "GET", f"/v1/deploys/{d['id']}")["state"]
                    if state not in ("queued", "fetching", "building", "rolling", "baking"):
                        break
                    time.sleep(0.05)
                if state != "live":
                    sys.exit(f"deploy {n} ended {state}; see {work}/agent.log")
                if n in (1, 10, 50, args.deploys):
                    time.sleep(1)
                    after[n] = rss_kb(agent.pid)
                    print(f"after deploy {n:4}: RSS {after[n] / 1024:.1f} MB", flush=True)
            print(f"\nidle at start {idle / 1024:.1f} MB; after the 1st deploy {after[1] / 1024:.1f} MB; "
                  f"after the {args.deploys}th {after[args.deploys] / 1024:.1f} MB "
                  f"(growth {(after[args.deploys] - after[1]) / 1024:+.1f} MB)")
        finally:
            agent.terminate(); agent.wait()


if __name__ == "__main__":
    main()
