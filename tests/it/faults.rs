//! Fault tests (issue 9 item 8), bounded: `gov serve` killed with SIGKILL at
//! random moments under mixed load, then restarted and verified; a
//! repository on a small tmpfs filled up.
//!
//! `GOV_FAULT_ROUNDS` sets the number of SIGKILL rounds (3 by default, so
//! the suite stays fast; the 100 with `GOV_FAULT_ROUNDS=100`).

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::serve::spawn_serve;
use crate::support::repo::{OutputText, TestRepo, TestResult};
use crate::support::server::{add_policies_and_agents, proposal, TestServer};

fn rounds() -> u64 {
    std::env::var("GOV_FAULT_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

/// A small pseudo-random number from the clock and a counter.
fn jitter(n: u64, below: u64) -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mut x = u64::from(t) ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x % below.max(1)
}

fn call(url: &str, token: &str, path: &str, body: &Value) -> Option<(u16, Value)> {
    let r = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(20))
        .build()
        .post(&format!("{url}{path}"))
        .set("Authorization", &format!("Bearer {token}"))
        .send_json(body.clone());
    let resp = match r {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(_) => return None,
    };
    let status = resp.status();
    Some((status, resp.into_json().unwrap_or(Value::Null)))
}

/// What the load got a 2xx for before the kill.
#[derive(Debug, Default, Clone)]
struct Acked {
    audit: Vec<(u64, String)>,
    proposals: Vec<String>,
    redeemed: Vec<String>,
    /// Proposals whose rejection was answered (their branches renamed).
    rejected: Vec<String>,
}

#[test]
fn sigkill_at_random_moments_loses_no_answered_write() -> TestResult {
    let repo = TestRepo::new()?;
    add_policies_and_agents(&repo)?;
    let op_path = repo.settings.operator_token_path();
    let total = rounds();
    let mut rejections = 0;
    for round in 0..total {
        let (mut child, url) = spawn_serve(&repo)?;
        let op = std::fs::read_to_string(&op_path)?.trim().to_string();
        let (_, minted) = call(&url, &op, "/agents/noop/tokens", &json!({})).ok_or("no server")?;
        let tok = minted["agent_token"]
            .as_str()
            .ok_or("no token")?
            .to_string();
        let acked: Arc<Mutex<Acked>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let mut load = Vec::new();
        for kind in 0..4u64 {
            let (url, tok, acked, stop) = (url.clone(), tok.clone(), acked.clone(), stop.clone());
            let op = op.clone();
            load.push(std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) && n < 500 {
                    n += 1;
                    let tag = format!("r{round}-k{kind}-{n}");
                    let ok = match kind {
                        0 => call(
                            &url,
                            &tok,
                            "/audit",
                            &json!({"event_type": "note", "payload": {"tag": tag}}),
                        )
                        .and_then(|(s, v)| (s == 200).then(|| v["audit_id"].as_u64()).flatten())
                        .map(|id| acked.lock().map(|mut a| a.audit.push((id, tag.clone())))),
                        1 => {
                            let action = if n.is_multiple_of(2) {
                                "send_email"
                            } else {
                                "research_only"
                            };
                            call(&url, &tok, "/proposals", &proposal("noop", action))
                                .and_then(|(s, v)| {
                                    (s == 200)
                                        .then(|| v["proposal_id"].as_str().map(String::from))
                                        .flatten()
                                })
                                .map(|id| acked.lock().map(|mut a| a.proposals.push(id)))
                        }
                        // A proposal waiting for a person, then rejected.
                        3 => call(&url, &tok, "/proposals", &proposal("noop", "send_email"))
                            .and_then(|(s, v)| {
                                (s == 200)
                                    .then(|| v["proposal_id"].as_str().map(String::from))
                                    .flatten()
                            })
                            .and_then(|id| {
                                call(
                                    &url,
                                    &op,
                                    &format!("/proposals/{id}/decision"),
                                    &json!({"decision": "reject"}),
                                )
                                .and_then(|(s, _)| (s == 200).then_some(id))
                            })
                            .map(|id| acked.lock().map(|mut a| a.rejected.push(id))),
                        _ => call(
                            &url,
                            &tok,
                            "/credentials/issue",
                            &json!({"agent_id": "noop", "scope": "s"}),
                        )
                        .and_then(|(s, v)| {
                            (s == 200)
                                .then(|| v["token"].as_str().map(String::from))
                                .flatten()
                        })
                        .and_then(|cred| {
                            call(&url, &tok, "/credentials/redeem", &json!({"token": cred}))
                                .and_then(|(s, _)| (s == 200).then_some(cred))
                        })
                        .map(|cred| acked.lock().map(|mut a| a.redeemed.push(cred))),
                    };
                    if ok.is_none() {
                        break;
                    }
                }
            }));
        }
        std::thread::sleep(Duration::from_millis(100 + jitter(round, 600)));
        child.kill()?; // SIGKILL
        let _ = child.wait();
        stop.store(true, Ordering::Relaxed);
        for t in load {
            let _ = t.join();
        }
        let acked = acked.lock().map(|a| a.clone()).map_err(|_| "poisoned")?;

        // Restart: the new server repairs what the kill left and serves.
        let (mut child, url) = spawn_serve(&repo)?;
        let verify = repo.gov(&["audit", "verify"])?;
        assert!(
            verify.status.success(),
            "round {round}: {}{}",
            verify.stdout_text(),
            verify.stderr_text()
        );
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(20))
            .build();
        let get = |path: &str| -> TestResult<Value> {
            Ok(agent
                .get(&format!("{url}{path}"))
                .set("Authorization", &format!("Bearer {op}"))
                .call()?
                .into_json()?)
        };
        let export = repo.gov(&["audit", "export"])?.stdout_text();
        let on_chain: std::collections::HashMap<u64, String> = export
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|e| {
                Some((
                    e["audit_id"].as_u64()?,
                    e["payload"]["tag"].as_str()?.to_string(),
                ))
            })
            .collect();
        for (id, tag) in &acked.audit {
            assert_eq!(
                on_chain.get(id),
                Some(tag),
                "round {round}: entry #{id} lost"
            );
        }
        for id in &acked.proposals {
            let p = get(&format!("/proposals/{id}"))?;
            assert_eq!(p["proposal_id"], *id, "round {round}: proposal {id} lost");
        }
        rejections += acked.rejected.len();
        let git = |args: &[&str]| repo.git(args).map(|o| o.status.success());
        for id in &acked.rejected {
            let p = get(&format!("/proposals/{id}"))?;
            assert_eq!(
                p["status"], "rejected",
                "round {round}: rejection of {id} lost"
            );
            let kept = format!("refs/heads/gov/rejected/{id}");
            let gone = format!("refs/heads/gov/proposal/{id}");
            assert!(
                git(&["show-ref", "--verify", "--quiet", &kept])?,
                "round {round}: {kept} missing"
            );
            assert!(
                !git(&["show-ref", "--verify", "--quiet", &gone])?,
                "round {round}: {gone} left"
            );
        }
        for cred in &acked.redeemed {
            let (status, _) = call(&url, &tok, "/credentials/redeem", &json!({"token": cred}))
                .ok_or("no server")?;
            assert_eq!(
                status, 401,
                "round {round}: a redeemed credential redeemed again"
            );
        }
        // No stale lock: a write goes through at once.
        let (status, body) = call(
            &url,
            &op,
            "/audit",
            &json!({"event_type": "round_done", "agent_id": "noop"}),
        )
        .ok_or("no server")?;
        assert_eq!(status, 200, "round {round}: {body}");
        child.kill()?;
        let _ = child.wait();
    }
    // The rejections (a branch renamed by moving its ref file) were there.
    assert!(rejections > 0, "no rejection was answered before a kill");
    eprintln!("{total} SIGKILL rounds: no answered write lost ({rejections} rejections)");
    Ok(())
}

/// A tmpfs mounted for the test and unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> TestResult<Tmpfs> {
        let dir = tempfile::tempdir()?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()?;
        if !out.status.success() {
            return Err(format!(
                "cannot mount a tmpfs (this test needs root): {}",
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        Ok(Tmpfs { dir })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Fills the file system at `dir` with one file; returns its path.
fn fill(dir: &std::path::Path) -> TestResult<std::path::PathBuf> {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path)?;
    let block = vec![0u8; 64 * 1024];
    loop {
        match f.write_all(&block) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => return Err(e.into()),
        }
    }
    // Small writes too, until not even a byte fits.
    while f.write_all(&[0u8; 512]).is_ok() {}
    while f.write_all(&[0u8]).is_ok() {}
    let _ = f.sync_all();
    Ok(path)
}

#[test]
fn a_full_disk_refuses_writes_cleanly_and_recovers() -> TestResult {
    let fs = Tmpfs::mount("24m")?;
    let repo = TestRepo::new_in(tempfile::tempdir_in(fs.dir.path())?)?;
    add_policies_and_agents(&repo)?;
    let mut s = TestServer::start_on(repo)?;
    let tok = s.agent_token("noop")?;
    let r = s.post("/proposals", Some(&tok), &proposal("noop", "send_email"))?;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let before = gov::app::audit::verify(s.settings())?.entries;

    let filler = fill(fs.dir.path())?;
    for _ in 0..3 {
        for (path, body) in [
            ("/proposals", proposal("noop", "send_email")),
            ("/audit", json!({"event_type": "note"})),
        ] {
            let r = s.post(path, Some(&tok), &body)?;
            assert_eq!(r.status, 507, "{path}: {:?}", r.body);
            assert_eq!(r.body["detail"]["error"], "storage_full", "{:?}", r.body);
        }
    }
    std::fs::remove_file(&filler)?;
    // Nothing half-written: the chain verifies with no new entry and no
    // orphan branch, and writes go through again.
    let report = gov::app::audit::verify(s.settings())?;
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.entries, before);
    let r = s.post("/proposals", Some(&tok), &proposal("noop", "send_email"))?;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = s.post("/audit", Some(&tok), &json!({"event_type": "note"}))?;
    assert_eq!(r.status, 200, "{:?}", r.body);
    s.stop();
    let report = gov::app::audit::verify(s.settings())?;
    assert!(report.is_ok(), "{:?}", report.problems);
    Ok(())
}
