//! `gov serve` as a process and the CLI commands around it: deciding with
//! and without a server, status without a server, and durability across a
//! SIGKILL.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use crate::support::repo::{require_program, TestRepo, TestResult};
use crate::support::server::{add_policies_and_agents, proposal, TestServer};
use crate::support::{gov_bin, packs_held, pin_ids, text};

/// `gov serve --port 0` on a fresh repository; returns the child and its URL.
pub(crate) fn spawn_serve(repo: &TestRepo) -> TestResult<(Child, String)> {
    let (child, url, _) = spawn_serve_with_rest(repo)?;
    Ok((child, url))
}

/// Stops a `gov serve` with SIGTERM and checks that it ended well.
fn stop_gracefully(child: &mut Child) -> TestResult {
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status()?;
    let code = child.wait()?;
    assert!(code.success(), "{code:?}");
    Ok(())
}

/// The operator token `gov init` wrote for `repo`.
fn operator_token(repo: &TestRepo) -> TestResult<String> {
    Ok(
        std::fs::read_to_string(repo.settings.operator_token_path())?
            .trim()
            .to_string(),
    )
}

/// Starts `gov serve`, waits until it answers a request (so that it has
/// done what it does before serving), and kills it.
pub(crate) fn served_once(repo: &TestRepo) -> TestResult {
    let (mut child, url, _) = spawn_serve_with_rest(repo)?;
    let answered = match ureq::get(&format!("{url}/status")).call() {
        Ok(_) | Err(ureq::Error::Status(..)) => Ok(()),
        Err(e) => Err(e),
    };
    let _ = child.kill();
    let _ = child.wait();
    Ok(answered?)
}

/// Starts `gov serve`, takes the first `n` lines it prints after its
/// start-up lines (waiting up to 30 s for each), and kills it.
pub(crate) fn lines_after_start(repo: &TestRepo, n: usize) -> TestResult<Vec<String>> {
    let (mut child, _, rest) = spawn_serve_with_rest(repo)?;
    let said: Result<Vec<String>, _> = (0..n)
        .map(|_| rest.recv_timeout(Duration::from_secs(30)))
        .collect();
    let _ = child.kill();
    let _ = child.wait();
    Ok(said.map_err(|_| format!("fewer than {n} lines after the start-up lines"))?)
}

/// [`spawn_serve`], with the lines `gov serve` prints after its start-up
/// lines (stdout is read to its end either way, so the child never blocks
/// on a full pipe).
pub(crate) fn spawn_serve_with_rest(
    repo: &TestRepo,
) -> TestResult<(Child, String, std::sync::mpsc::Receiver<String>)> {
    let mut child = Command::new(gov_bin())
        .arg("--repo")
        .arg(repo.root())
        .args(["serve", "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(if std::env::var_os("GOV_DEBUG_SERVE").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let mut line = || -> TestResult<String> { Ok(lines.next().ok_or("gov serve stopped")??) };
    // The start-up lines, exactly but for the port and the login code.
    let first = line()?;
    let port: u16 = first
        .strip_prefix("gov serve: listening on http://127.0.0.1:")
        .and_then(|p| p.strip_suffix('/'))
        .ok_or_else(|| format!("start line: {first}"))?
        .parse()?;
    let url = format!("http://127.0.0.1:{port}");
    assert_eq!(first, format!("gov serve: listening on {url}/"));
    let link = line()?;
    let code = link
        .strip_prefix(&format!(
            "dashboard (this link works once, for 5 minutes; `gov dashboard-link` prints another): {url}/login?code="
        ))
        .ok_or_else(|| format!("dashboard line: {link}"))?;
    assert!(
        !code.is_empty()
            && code
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "{link}"
    );
    assert_eq!(
        line()?,
        format!(
            "operator token: {} (send it as `Authorization: Bearer ...`)",
            repo.settings.operator_token_path().display()
        )
    );
    let policy = line()?;
    let version = policy
        .strip_prefix("policy set in force: ")
        .ok_or_else(|| format!("policy line: {policy}"))?;
    assert!(!version.is_empty() && !version.contains(' '), "{policy}");
    // Keep draining stdout so the child never blocks on a full pipe.
    let (tx, rest) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    Ok((child, url, rest))
}

#[test]
fn gov_approve_without_a_server_makes_a_verified_merge() -> TestResult {
    let mut s = TestServer::start()?;
    let tok = s.agent_token("noop")?;
    let r = s.submit_pending(&tok)?;
    let id = r.text("proposal_id");
    s.stop();
    // The default port is 8005; make sure the CLI does not find a server
    // there by pointing it at a port nobody listens on.
    let toml = std::fs::read_to_string(s.repo.root().join("gov.toml"))?;
    assert!(toml.contains("\n# port = 8005\n"), "gov init's gov.toml");
    std::fs::write(
        s.repo.root().join("gov.toml"),
        toml.replace("\n# port = 8005\n", "\nport = 1\n"),
    )?;
    let list = s.repo.gov(&["proposals", "--status", "pending"])?;
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    assert!(String::from_utf8_lossy(&list.stdout).contains(&id));
    let show = s.repo.gov(&["proposals", "show", &id])?;
    let text = String::from_utf8_lossy(&show.stdout).to_string();
    assert!(
        text.contains("publish_content") && text.contains("reserved-for-person"),
        "{text}"
    );

    let out = s
        .repo
        .gov(&["approve", &id, "--note", "from the terminal"])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        s.repo.approved_line(&id)?
    );
    let again = s.repo.gov(&["reject", &id])?;
    assert_eq!(again.status.code(), Some(7));
    assert_eq!(
        String::from_utf8_lossy(&again.stderr),
        format!("error: proposal `{id}` already decided (status=approved)\n")
    );
    let missing = s.repo.gov(&["approve", "no-such-proposal"])?;
    assert_eq!(missing.status.code(), Some(6));
    assert_eq!(
        String::from_utf8_lossy(&missing.stderr),
        "error: proposal `no-such-proposal` not found\n"
    );

    let git = s.repo.repo()?;
    let main = git.find_commit(git.refname_to_id("refs/heads/main")?)?;
    assert_eq!(main.parent_count(), 2);
    require_program("ssh-keygen")?;
    let v = s.repo.git_with_signers(&["verify-commit", "main"])?;
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
    let verify = s.repo.gov(&["audit", "verify"])?;
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    Ok(())
}

#[test]
fn status_and_scoreboard_say_plainly_when_no_server_runs() -> TestResult {
    let repo = TestRepo::new()?;
    let toml = "[server]\nport = 1\n";
    std::fs::write(repo.root().join("gov.toml"), toml)?;
    // A record left by a server that was killed names a process that is
    // gone: it is ignored.
    let mut gone = Command::new("true").spawn()?;
    let dead_pid = gone.id();
    gone.wait()?;
    std::fs::create_dir_all(repo.root().join(".gov"))?;
    std::fs::write(
        repo.root().join(".gov/server.json"),
        format!("{{\"pid\":{dead_pid},\"url\":\"http://127.0.0.1:1\"}}"),
    )?;
    for cmd in ["status", "scoreboard"] {
        let out = repo.gov(&[cmd])?;
        assert_eq!(out.status.code(), Some(8));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("no gov server of this repository is running"),
            "{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    Ok(())
}

#[test]
fn gov_serve_answers_status_and_decides_through_the_server() -> TestResult {
    let repo = TestRepo::new()?;
    add_policies_and_agents(&repo)?;
    let (mut child, url) = spawn_serve(&repo)?;
    // The CLI finds this server through `.gov/server.json`, not through the
    // port in gov.toml (which this server does not use).
    let record = repo.root().join(".gov/server.json");
    let text = std::fs::read_to_string(&record)?;
    assert!(text.contains(&url), "{text}");
    let op = operator_token(&repo)?;
    let r: serde_json::Value = ureq::post(&format!("{url}/proposals"))
        .set("Authorization", &format!("Bearer {op}"))
        .send_json(proposal("noop", "send_email"))?
        .into_json()?;
    let id = r["proposal_id"].as_str().unwrap_or_default().to_string();
    let status = repo.gov(&["status"])?;
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let text = String::from_utf8_lossy(&status.stdout).to_string();
    assert!(
        text.contains("policy version") && text.contains("pending         1"),
        "{text}"
    );
    let out = repo.gov(&["reject", &id, "--note", "nope"])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("proposal `{id}` rejected\n")
    );
    let board = repo.gov(&["scoreboard"])?;
    assert!(String::from_utf8_lossy(&board.stdout).contains("noop"));
    let pause = repo.gov(&["pause", "noop", "--reason", "lunch"])?;
    assert_eq!(
        String::from_utf8_lossy(&pause.stdout),
        "agent noop: paused\n"
    );
    let resume = repo.gov(&["resume", "noop"])?;
    assert!(
        resume.status.success(),
        "{}",
        String::from_utf8_lossy(&resume.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&resume.stdout), "agent noop: ok\n");
    // `gov run` finds the server as the other commands do, through
    // `.gov/server.json` (the port in gov.toml is not this server's).
    let ran = repo.gov(&["run", "noop"])?;
    assert_eq!(
        ran.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    assert_eq!(
        pin_ids(&String::from_utf8_lossy(&ran.stderr)),
        "gov run: run `<uuid>` of agent `noop` started\n"
    );
    assert_eq!(
        pin_ids(&String::from_utf8_lossy(&ran.stdout)),
        "complete: run `<uuid>` of agent `noop` (0 tokens, $0.0000; 100% of the budget left)\n"
    );
    // SIGTERM: graceful shutdown.
    stop_gracefully(&mut child)?;
    assert!(!record.exists(), "gov serve left its record behind");
    Ok(())
}

#[test]
fn every_answered_write_survives_a_sigkill() -> TestResult {
    let repo = TestRepo::new()?;
    add_policies_and_agents(&repo)?;
    let (mut child, url) = spawn_serve(&repo)?;
    let op = operator_token(&repo)?;
    let acked: Arc<Mutex<Vec<(u64, u64)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4u64)
        .map(|w| {
            let (url, op, acked, stop) = (url.clone(), op.clone(), acked.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) && n < 2000 {
                    let tag = w * 1_000_000 + n;
                    let r = ureq::post(&format!("{url}/audit"))
                        .set("Authorization", &format!("Bearer {op}"))
                        .send_json(json!({"event_type": "action_executed", "agent_id": "noop", "payload": {"tag": tag}}));
                    match r.ok().and_then(|r| r.into_json::<serde_json::Value>().ok()) {
                        Some(v) => {
                            if let (Some(id), Ok(mut a)) = (v["audit_id"].as_u64(), acked.lock()) {
                                a.push((id, tag));
                            }
                        }
                        None => break,
                    }
                    n += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(700));
    child.kill()?; // SIGKILL
    let _ = child.wait();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let _ = w.join();
    }
    let acked = acked.lock().map(|a| a.clone()).unwrap_or_default();
    assert!(!acked.is_empty(), "no write was answered before the kill");

    let verify = repo.gov(&["audit", "verify"])?;
    assert!(
        verify.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    // Restart: every answered write is there, with its content.
    let mut s = TestServer::start_on(repo)?;
    let svc = gov::app::service::Service::open(s.settings())?;
    let index = svc.governance().index()?;
    for (id, tag) in &acked {
        let payload: String = index.conn().query_row(
            "SELECT payload_json FROM audit WHERE seq = ?1",
            [*id as i64],
            |r| r.get(0),
        )?;
        let v: serde_json::Value = serde_json::from_str(&payload)?;
        assert_eq!(v["tag"].as_u64(), Some(*tag), "entry {id}");
    }
    drop(index);
    s.stop();
    Ok(())
}

/// The whole loop end to end: `gov init`, the real server, `gov run noop`
/// (propose, wait, a person approves, execute, audit), `gov audit verify`.
#[test]
fn gov_run_noop_against_the_real_server() -> TestResult {
    require_program("python3")?;
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("gov-repo");
    gov::app::init::init(&gov::app::init::InitOptions {
        dir: root.clone(),
        operator_name: "ada".into(),
        operator_key: None,
    })?;
    let settings = gov::config::Settings::load(&root)?;
    let s = TestServer::start_on(TestRepo { dir, settings })?;
    let mut child = Command::new(gov_bin())
        .arg("--repo")
        .arg(&root)
        .args(["run", "noop"])
        .env("GOV_URL", &s.base)
        .env("GOV_NOOP_POLL", "0.1")
        .env("GOV_NOOP_TIMEOUT", "30")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut pending = None;
    for _ in 0..200 {
        let r = s.get("/proposals?status=pending", Some(&s.operator))?;
        if let Some(id) = r.body[0]["proposal_id"].as_str() {
            pending = Some(id.to_string());
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let Some(id) = pending else {
        let _ = child.kill();
        let out = child.wait_with_output()?;
        let skipped = s.audit("agent_run_skipped")?;
        return Err(format!(
            "noop never proposed: {}{} skipped: {skipped:?}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    };
    // A person approves from another process (`gov approve`, which goes
    // through the running server).
    let d = s.repo.gov(&["approve", &id, "--note", "go"])?;
    assert!(d.status.success(), "{}", String::from_utf8_lossy(&d.stderr));
    assert_eq!(
        String::from_utf8_lossy(&d.stdout),
        s.repo.approved_line(&id)?
    );
    let out = child.wait_with_output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(s.audit("action_executed")?.len(), 1);
    assert_eq!(s.audit("agent_run_complete")?.len(), 1);
    let verify = s.repo.gov(&["audit", "verify"])?;
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    Ok(())
}

#[test]
fn a_wrong_operator_token_is_refused_not_gone_around() -> TestResult {
    let repo = TestRepo::new()?;
    add_policies_and_agents(&repo)?;
    let (mut child, url) = spawn_serve(&repo)?;
    let op = operator_token(&repo)?;
    let r: serde_json::Value = ureq::post(&format!("{url}/proposals"))
        .set("Authorization", &format!("Bearer {op}"))
        .send_json(proposal("noop", "send_email"))?
        .into_json()?;
    let id = r["proposal_id"].as_str().unwrap_or_default().to_string();
    std::fs::write(
        repo.settings.operator_token_path(),
        "gov_op_not-the-token\n",
    )?;
    for args in [vec!["approve", id.as_str()], vec!["pause", "noop"]] {
        let out = repo.gov(&args)?;
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.starts_with(
                "error: the server refused the operator token in `.gov/operator-token`: "
            ),
            "{err}"
        );
        assert_eq!(out.stdout, b"");
    }
    let _ = child.kill();
    let _ = child.wait();
    // Nothing was written around the server: still pending, not paused.
    let show = repo.gov(&["proposals", "--status", "pending"])?;
    assert!(String::from_utf8_lossy(&show.stdout).contains(&id));
    let chain = repo.gov(&["audit", "log", "--event", "agent_paused"])?;
    assert_eq!(String::from_utf8_lossy(&chain.stdout), "");
    Ok(())
}

/// A pack larger than libgit2's mapping limit is read through windows of at
/// most 2 MiB, 8 MiB in all (`store::git_memory`), not mapped whole: with
/// libgit2's defaults (windows of up to 1 GiB) the start-up walk of `main`
/// mapped all of it, and every page it touched stayed resident.
#[test]
fn gov_serve_maps_a_large_pack_a_window_at_a_time() -> TestResult {
    const WINDOW: u64 = 2 << 20;
    const MAPPED: u64 = 8 << 20;
    let repo = TestRepo::new()?;
    // 40 MiB that do not compress, reachable from a tag, packed with
    // everything else (`main`'s commits, which the start-up walk reads).
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let noise: Vec<u8> = (0..(40usize << 20) / 8)
        .flat_map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()
        })
        .collect();
    // libgit2 says only "no error" when write(2) fails under it (a full
    // disk, say), so the failure says what was being written.
    let blob = repo
        .repo()?
        .blob(&noise)
        .map_err(|e| format!("writing a 40 MiB blob into {}: {e}", repo.root().display()))?;
    for args in [
        vec!["tag", "large", &blob.to_string()],
        vec!["-c", "pack.compression=0", "repack", "-a", "-d", "-q"],
    ] {
        let out = repo.git(&args)?;
        assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
    }
    let pack = std::fs::read_dir(repo.root().join(".git/objects/pack"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pack"))
        .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .ok_or("no pack")?;
    assert!(std::fs::metadata(&pack)?.len() > MAPPED);

    let (mut child, url) = spawn_serve(&repo)?;
    let op = std::fs::read_to_string(repo.settings.operator_token_path())?;
    let status = ureq::get(&format!("{url}/status"))
        .set("Authorization", &format!("Bearer {}", op.trim()))
        .call()?
        .status();
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", child.id()))?;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status, 200);
    let name = pack.to_string_lossy();
    let windows: Vec<u64> = maps
        .lines()
        .filter(|l| l.ends_with(name.as_ref()))
        .map(|l| {
            let range = l.split(' ').next().unwrap_or_default();
            let (start, end) = range.split_once('-').unwrap_or_default();
            u64::from_str_radix(end, 16).unwrap_or(u64::MAX)
                - u64::from_str_radix(start, 16).unwrap_or(0)
        })
        .collect();
    assert!(!windows.is_empty(), "the server read nothing of {name}");
    assert!(windows.iter().all(|&w| w <= WINDOW), "{windows:?}");
    assert!(windows.iter().sum::<u64>() <= MAPPED, "{windows:?}");
    Ok(())
}

/// The packs `gov maintain` merges and deletes are let go by the server
/// once its handles next open (each is opened afresh after a second): a
/// handle kept for good held every deleted pack, its descriptor, its mapped
/// index and its disk space, for as long as the server ran.
#[test]
fn gov_serve_lets_go_of_the_packs_maintenance_deleted() -> TestResult {
    let repo = TestRepo::new()?;
    add_policies_and_agents(&repo)?;
    let (mut child, url) = spawn_serve(&repo)?;
    let op = std::fs::read_to_string(repo.settings.operator_token_path())?;
    let submit = || -> TestResult<String> {
        let r: serde_json::Value = ureq::post(&format!("{url}/proposals"))
            .set("Authorization", &format!("Bearer {}", op.trim()))
            .send_json(proposal("noop", "send_email"))?
            .into_json()?;
        Ok(r["proposal_id"]
            .as_str()
            .ok_or("no proposal id")?
            .to_string())
    };
    // `main` moves (an approval, by another process), so the next
    // submission reads main's new tip out of a pack: the server keeps
    // what it read of an unchanged tip.
    let approve = |id: &str| -> TestResult {
        let approved = repo.gov(&["approve", id])?;
        assert!(approved.status.success(), "{}", text(&approved.stderr));
        Ok(())
    };
    approve(&submit()?)?;
    let id = submit()?;
    let maintained = repo.gov(&["maintain"])?;
    assert!(maintained.status.success(), "{}", text(&maintained.stderr));
    approve(&id)?;
    std::thread::sleep(Duration::from_millis(1_100));
    submit()?;
    // Asked until none is deleted, for at most five seconds (a loaded
    // machine may delay the server's pass that lets go of idle handles).
    let (held, deleted) = packs_held(child.id(), repo.root(), Duration::from_secs(5));
    let _ = child.kill();
    let _ = child.wait();
    assert!(held > 0, "the server holds no pack open");
    assert_eq!(deleted, Vec::<String>::new());
    Ok(())
}

/// A running server packs loose refs in a task of its own, apart from its
/// passes that merge packs: 100 loose branches (a `git` command's, say)
/// end up in `packed-refs`, their loose files gone, their values kept.
#[test]
fn a_running_server_packs_loose_refs_in_the_background() -> TestResult {
    let repo = TestRepo::new()?;
    add_policies_and_agents(&repo)?;
    let git = repo.repo()?;
    let head = git.refname_to_id("refs/heads/main")?;
    for i in 0..100 {
        git.reference(&format!("refs/heads/topic-{i}"), head, false, "")?;
    }
    let loose = |i: usize| repo.root().join(format!(".git/refs/heads/topic-{i}"));
    assert!((0..100).all(|i| loose(i).exists()));
    let (mut child, _url) = spawn_serve(&repo)?;
    // Bounded: the first refs step comes within a second of the start.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while (0..100).any(|i| loose(i).exists()) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let left: Vec<usize> = (0..100).filter(|&i| loose(i).exists()).collect();
    assert_eq!(left, Vec::<usize>::new(), "still loose after 60 s");
    let packed = std::fs::read_to_string(repo.root().join(".git/packed-refs"))?;
    for i in 0..100 {
        let line = format!("{head} refs/heads/topic-{i}\n");
        assert!(packed.contains(&line), "{line:?} is not in packed-refs");
        assert_eq!(git.refname_to_id(&format!("refs/heads/topic-{i}"))?, head);
    }
    Ok(())
}

/// A server stopped gracefully (SIGTERM) right after approvals it answered
/// without waiting for the checkout (as the API and the dashboard do)
/// leaves every one of their files in the checked-out `main`: in the
/// working tree and its Git index, `git status` clean. The server puts
/// approvals' files there in the background and once more as it stops.
#[test]
fn a_stopped_server_leaves_the_approvals_it_answered_in_the_checkout() -> TestResult {
    let repo = TestRepo::new()?;
    add_policies_and_agents(&repo)?;
    let (mut child, url) = spawn_serve(&repo)?;
    let op = operator_token(&repo)?;
    let bearer = format!("Bearer {op}");
    let mut ids = Vec::new();
    for _ in 0..12 {
        let r: serde_json::Value = ureq::post(&format!("{url}/proposals"))
            .set("Authorization", &bearer)
            .send_json(proposal("noop", "send_email"))?
            .into_json()?;
        assert_eq!(r["status"], "pending", "{r}");
        ids.push(r["proposal_id"].as_str().unwrap_or_default().to_string());
    }
    for id in &ids {
        let d = ureq::post(&format!("{url}/proposals/{id}/decision"))
            .set("Authorization", &bearer)
            .send_json(json!({"decision": "approve"}))?;
        assert_eq!(d.status(), 200);
    }
    stop_gracefully(&mut child)?;
    let listed = |args: &[&str]| -> TestResult<String> {
        let o = repo.git(args)?;
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let on_main = listed(&["ls-tree", "-r", "--name-only", "main", "proposals"])?;
    let indexed = listed(&["ls-files", "proposals"])?;
    for id in &ids {
        let file = format!("/{id}.toml");
        let path = on_main
            .lines()
            .find(|l| l.ends_with(&file))
            .ok_or_else(|| format!("{id} is not on main"))?;
        assert!(
            repo.root().join(path).is_file(),
            "{path} is not in the working tree"
        );
        assert!(
            indexed.lines().any(|l| l == path),
            "{path} is not in the Git index"
        );
    }
    assert_eq!(listed(&["status", "--porcelain"])?, "");
    Ok(())
}
