#!/usr/bin/env python3
"""noop: gov's zero-cost smoke agent (python3 standard library only).

Through the HTTP API, with the run's own agent token:
  1. POST /proposals        a `publish_content` proposal, requires_approval
  2. GET  /proposals/{id}   polled until a person decides (bounded by
                            GOV_NOOP_TIMEOUT seconds, default 300); the
                            decision is printed as soon as it is seen
  3. if approved: runs smoke.sh and POST /audit `action_executed`
  4. POST /audit            `agent_stop`
  5. appends a line to memory.md
Exit 0 when the proposal was approved or rejected, 1 on any error.
"""
import datetime
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
DECIDED = {"approved", "auto-approved", "rejected", "expired"}


def env(name, default=None):
    value = os.environ.get(name, default)
    if value is None or value == "":
        raise RuntimeError("%s is not set: run me with `gov run noop`" % name)
    return value


class Api:
    def __init__(self):
        self.url = env("GOV_URL").rstrip("/")
        self.token = env("GOV_AGENT_TOKEN")

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", "Bearer " + self.token)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")[:500]
            raise RuntimeError("%s %s: HTTP %d: %s" % (method, path, e.code, detail))
        except (urllib.error.URLError, OSError) as e:
            raise RuntimeError("%s %s: cannot reach the gov server: %s" % (method, path, e))


def audit(api, agent_id, event_type, proposal_id, task_id, payload):
    api.call("POST", "/audit", {
        "agent_id": agent_id,
        "event_type": event_type,
        "proposal_id": proposal_id,
        "task_id": task_id,
        "payload": payload,
    })


def remember(line):
    with open(os.path.join(HERE, "memory.md"), "a") as f:
        f.write(line + "\n")


def main():
    api = Api()
    agent_id = env("GOV_AGENT_ID")
    run_id = os.environ.get("GOV_RUN_ID", "")
    task_id = os.environ.get("GOV_TASK_ID") or None
    timeout = float(os.environ.get("GOV_NOOP_TIMEOUT", "300"))
    poll = float(os.environ.get("GOV_NOOP_POLL", "2"))

    message = "noop smoke message from run %s" % run_id
    proposal = api.call("POST", "/proposals", {
        "agent_id": agent_id,
        "action_type": "publish_content",
        "payload": {"channel": "smoke", "message": message},
        "expected_outcome": "a one-line smoke message is published",
        "expected_cost_tokens": 0,
        "expected_cost_dollars": 0,
        "reversible": False,
        "requires_approval": True,
        "rationale": "exercise the propose -> approve -> execute -> audit loop",
    })
    pid = proposal.get("proposal_id")
    if not pid:
        raise RuntimeError("the server's answer has no proposal_id: %s" % json.dumps(proposal)[:300])
    print("noop: proposal %s submitted (%s); waiting for a decision" % (pid, proposal.get("status")), flush=True)

    deadline = time.monotonic() + timeout
    status = proposal.get("status")
    while status not in DECIDED:
        if time.monotonic() >= deadline:
            raise RuntimeError("no decision on proposal %s after %g s" % (pid, timeout))
        time.sleep(poll)
        status = api.call("GET", "/proposals/%s" % pid).get("status")

    print("noop: proposal %s %s" % (pid, status), flush=True)
    approved = status in ("approved", "auto-approved")
    if approved:
        out = subprocess.run(["sh", "smoke.sh"], cwd=HERE, capture_output=True, text=True, timeout=30)
        if out.returncode != 0:
            raise RuntimeError("smoke.sh failed with exit %d: %s" % (out.returncode, out.stderr.strip()))
        audit(api, agent_id, "action_executed", pid, task_id,
              {"action_type": "publish_content", "output": out.stdout.strip(), "run_id": run_id})
        print("noop: executed: %s" % out.stdout.strip(), flush=True)
    audit(api, agent_id, "agent_stop", pid, task_id,
          {"run_id": run_id, "outcome": "executed" if approved else status})
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    remember("- %s run %s: proposal %s %s%s" % (now, run_id, pid, status, ", executed" if approved else ""))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # any failure is a failed run, said plainly
        print("noop: error: %s" % e, file=sys.stderr, flush=True)
        sys.exit(1)
