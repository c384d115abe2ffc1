//! Load benchmark for `gov serve` (or any server that speaks the API):
//! durable writes per second at N keep-alive connections, p50/p99, the
//! server's resident memory and CPU, the load client's own CPU, and (for a
//! server it starts itself) repository size, maintenance, start-up time
//! and `gov audit verify` speed. Prints a table and one JSON line.
//!
//! Loopback only, bounded in count and time. Without `--url` it makes a
//! throw-away repository with `gov init`, optionally fills the chain with
//! `--preload` entries, and starts the server as a child process (this
//! same program, so its memory is the server's alone).
//!
//! Phases, in order (each `--x 0` skips it):
//! - submits: proposals without ids, 50% `publish_content` (waits for a
//!   person), 30% `research_only` (auto-approved), 20% `publish_content`
//!   with `requires_approval: false` (blocked: HTTP 400, audit-flagged), in
//!   `--rounds` rounds to show whether cost grows with history;
//! - decisions on the pending proposals (`--approve-pct` approved, the rest
//!   rejected; needs the operator token);
//! - budget charges (needs the runner token);
//! - audit posts;
//! - the hook round trip: the hook `gov run` writes into an agent's
//!   settings (`gov-hook pre-tool-use` beside `gov`, else `gov hook
//!   pre-tool-use`) started `--hooks` times, one after another, in a run of the `noop` agent, each timed from
//!   process start to its answer (given once its audit entry is durable);
//! - soak: more audit posts, sampling the server's memory.
//!
//! With `--reads R` (needs the operator token), one more keep-alive
//! connection asks `GET /proposals?status=pending&limit=1` (a query on the
//! server's index) R times a second while each submit round runs, and a
//! row `reads during submit round N` gives their latencies: how long a
//! reader (the dashboard, `gov proposals`) waits while agents write.
//!
//! Usage: bench_server [--url URL] [--operator-token T] [--runner-token T]
//!   [--clients 16] [--submits 20000] [--rounds 5] [--decisions 2000]
//!   [--approve-pct 20] [--charges 5000] [--audits 5000] [--hooks 200]
//!   [--soak 0] [--reads 0] [--preload 0] [--seconds 600] [--gov-bin PATH]
//!   [--server-bin PATH] [--keep]
//!
//! `--server-bin` starts the server from another build of this benchmark
//! (an older commit's), so that both are driven by the same client;
//! `--gov-bin` names the `gov` binary for the hook and for `gov audit
//! verify` (default: the one built beside this benchmark).

use std::io::BufRead;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

type BoxResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

#[derive(Clone)]
struct Opts {
    url: Option<String>,
    operator_token: Option<String>,
    runner_token: Option<String>,
    clients: usize,
    submits: usize,
    rounds: usize,
    decisions: usize,
    approve_pct: usize,
    charges: usize,
    audits: usize,
    soak: usize,
    hooks: usize,
    /// Reads per second during each submit round (0: none).
    reads: u32,
    gov_bin: Option<std::path::PathBuf>,
    server_bin: Option<std::path::PathBuf>,
    preload: usize,
    seconds: u64,
    /// Keep the benchmark's repository (its path is printed) instead of
    /// removing it.
    keep: bool,
}

fn opts(mut args: impl Iterator<Item = String>) -> BoxResult<Opts> {
    let mut o = Opts {
        url: None,
        operator_token: None,
        runner_token: None,
        clients: 16,
        submits: 20_000,
        rounds: 5,
        decisions: 2_000,
        approve_pct: 20,
        charges: 5_000,
        audits: 5_000,
        soak: 0,
        hooks: 200,
        reads: 0,
        gov_bin: None,
        server_bin: None,
        preload: 0,
        seconds: 600,
        keep: false,
    };
    while let Some(a) = args.next() {
        if a == "--keep" {
            o.keep = true;
            continue;
        }
        let v = args.next().ok_or_else(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--url" => o.url = Some(v.trim_end_matches('/').to_string()),
            "--operator-token" => o.operator_token = Some(v),
            "--runner-token" => o.runner_token = Some(v),
            "--clients" => o.clients = v.parse()?,
            "--submits" => o.submits = v.parse()?,
            "--rounds" => o.rounds = v.parse()?,
            "--decisions" => o.decisions = v.parse()?,
            "--approve-pct" => o.approve_pct = v.parse()?,
            "--charges" => o.charges = v.parse()?,
            "--audits" => o.audits = v.parse()?,
            "--soak" => o.soak = v.parse()?,
            "--hooks" => o.hooks = v.parse()?,
            "--reads" => o.reads = v.parse()?,
            "--gov-bin" => o.gov_bin = Some(v.into()),
            "--server-bin" => o.server_bin = Some(v.into()),
            "--preload" => o.preload = v.parse()?,
            "--seconds" => o.seconds = v.parse()?,
            _ => return Err(format!("unknown option {a}").into()),
        }
    }
    if let Some(u) = &o.url {
        let host = u
            .trim_start_matches("http://")
            .split(['/', ':'])
            .next()
            .unwrap_or("");
        if !matches!(host, "127.0.0.1" | "localhost" | "[") && !host.starts_with("127.") {
            return Err(format!("`{u}` is not a loopback address").into());
        }
    }
    o.clients = o.clients.clamp(1, 256);
    o.rounds = o.rounds.clamp(1, 100);
    o.approve_pct = o.approve_pct.min(100);
    for n in [
        &mut o.submits,
        &mut o.decisions,
        &mut o.charges,
        &mut o.audits,
        &mut o.soak,
        &mut o.hooks,
    ] {
        *n = (*n).min(1_000_000);
    }
    o.preload = o.preload.min(1_000_000);
    o.seconds = o.seconds.clamp(1, 3_600);
    Ok(o)
}

// ------------------------------------------------------------ the server

/// Child mode: serve the repository at `root` on 127.0.0.1:0, print the
/// URL, and stop when standard input closes.
fn serve_child(root: &str) -> BoxResult {
    // `GOV_LOG=gov=debug` shows each batch's size and timings on stderr.
    gov::cli::init_logging();
    gov::server::bound_allocator_arenas();
    gov::app::limit_git_memory();
    let settings = gov::config::Settings::load(std::path::Path::new(root))?;
    let state = gov::server::AppState::open(&settings)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        println!("listening http://{}", listener.local_addr()?);
        let stop = async {
            let _ = tokio::task::spawn_blocking(|| {
                let mut s = String::new();
                while std::io::stdin()
                    .read_line(&mut s)
                    .map(|n| n > 0)
                    .unwrap_or(false)
                {}
            })
            .await;
        };
        gov::server::serve(listener, state, stop).await
    })?;
    Ok(())
}

/// A repository as `gov init` makes it, with token-less agents accepted
/// (as the original's clients send no token).
fn make_repo(root: &std::path::Path) -> BoxResult<gov::config::Settings> {
    gov::app::init::init(&gov::app::init::InitOptions {
        dir: root.to_path_buf(),
        operator_name: "operator".into(),
        operator_key: None,
    })?;
    let toml = std::fs::read_to_string(root.join("gov.toml"))?
        .replace("# agent_auth = \"required\"", "agent_auth = \"optional\"");
    std::fs::write(root.join("gov.toml"), &toml)?;
    let settings = gov::config::Settings::load(root)?;
    // An enforcement setting is in force only once it is on `main`, signed
    // by an approver: the operator's key signs it here.
    let repo = git2::Repository::open(root)?;
    let main = settings.main_refname();
    let tip = repo.refname_to_id(&main)?;
    let key = gov::testkit::keys::SigningKey::load(&settings.operator_key)?;
    let who = git2::Signature::now("operator", "approver@gov")?;
    gov::testkit::git::commit_files(
        &repo,
        &key,
        &who,
        &main,
        Some(tip),
        &[("gov.toml".to_string(), toml.into_bytes())],
        "bench: accept agents without a token",
    )?;
    Ok(settings)
}

/// Appends `n` audit entries straight to the chain (batches of 1,000).
fn preload(settings: &gov::config::Settings, n: usize) -> BoxResult {
    let g = gov::app::governance::Governance::open(settings, gov::app::governance::Role::Server)?;
    let mut left = n;
    while left > 0 {
        let k = left.min(1_000);
        let entries = (0..k)
            .map(|i| {
                gov::domain::audit::NewEntry::new(
                    gov::domain::audit::Actor::server(),
                    gov::domain::audit::Event::from_parts(
                        "action_executed".into(),
                        json!({"preloaded": i}),
                    ),
                )
                .agent(format!("pre-{}", i % 16))
            })
            .collect();
        g.append(entries)?;
        left -= k;
    }
    g.maintain()?;
    Ok(())
}

struct Child {
    proc: std::process::Child,
    url: String,
    startup: Duration,
}

/// Starts the server: this program in its child mode, or `server_bin` (an
/// older build of this benchmark, to compare with the same client).
fn start_child(root: &std::path::Path, server_bin: Option<&std::path::Path>) -> BoxResult<Child> {
    let t = Instant::now();
    let exe = match server_bin {
        Some(b) => b.to_path_buf(),
        None => std::env::current_exe()?,
    };
    let mut proc = std::process::Command::new(exe)
        .arg("--serve-child")
        .arg(root)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let out = proc.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    std::io::BufReader::new(out).read_line(&mut line)?;
    let url = line
        .trim()
        .strip_prefix("listening ")
        .ok_or_else(|| format!("server said `{}`", line.trim()))?
        .to_string();
    let agent = ureq::AgentBuilder::new().build();
    agent.get(&format!("{url}/status")).call()?;
    Ok(Child {
        proc,
        url,
        startup: t.elapsed(),
    })
}

// ------------------------------------------------------------ measuring

/// Resident memory of a process, in MiB.
fn rss_mib(pid: u32) -> Option<f64> {
    status_mib(pid, "VmRSS:")
}

/// The most a process has had resident since it started (its
/// high-water mark): a peak between two samples, such as a background
/// merge's, shows here and nowhere else.
fn peak_rss_mib(pid: u32) -> Option<f64> {
    status_mib(pid, "VmHWM:")
}

/// The anonymous part of a process's RSS (heap and stacks, not the mapped
/// pack files and binary, which the kernel can drop and read again).
fn anon_mib(pid: u32) -> Option<f64> {
    status_mib(pid, "RssAnon:")
}

/// A field of `/proc/<pid>/status` given in kB, in MiB.
fn status_mib(pid: u32, field: &str) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = s
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// CPU seconds (user + system) a process has used.
fn cpu_secs(pid: &str) -> f64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some(rest) = s.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 of the stat line (utime, stime), counted after `)`.
    (ticks(11) + ticks(12)) / 100.0
}

/// The machine's CPU time so far, in ticks, as `/proc/stat` counts it:
/// the time the hypervisor gave to others while this machine wanted to
/// run (steal) and the total. `None` where there is no such file.
fn machine_ticks() -> Option<(u64, u64)> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    let line = s.lines().next()?.strip_prefix("cpu ")?;
    // user nice system idle iowait irq softirq steal guest guest_nice;
    // guest time is already counted in user and nice.
    let f: Vec<u64> = line
        .split_whitespace()
        .take(8)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    let steal = *f.get(7)?;
    Some((steal, f.iter().sum()))
}

/// The share of the machine's CPU time stolen by the hypervisor since
/// `start` ([`machine_ticks`]), in percent.
fn steal_pct_since(start: Option<(u64, u64)>) -> Option<f64> {
    let ((s0, t0), (s1, t1)) = start.zip(machine_ticks())?;
    let total = t1.checked_sub(t0).filter(|t| *t > 0)?;
    Some(100.0 * s1.saturating_sub(s0) as f64 / total as f64)
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1e3
}

/// One request of a phase: method, path, body, bearer token, and whether
/// an HTTP 400 is the expected answer (a blocked self-approval).
struct Req {
    path: String,
    body: Value,
    token: Option<String>,
    expect_400: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
struct PhaseResult {
    phase: String,
    ok: usize,
    failed: usize,
    seconds: f64,
    per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// The whole client's CPU over the phase (none for reads made while
    /// another phase runs: that phase's figure counts them).
    client_cpu_s: Option<f64>,
    server_cpu_s: Option<f64>,
    /// The share of the machine's CPU time its hypervisor gave to other
    /// machines during the phase (`/proc/stat`'s steal), in percent: on a
    /// shared virtual machine, the rates of two runs compare only at
    /// similar steal.
    steal_pct: Option<f64>,
    server_rss_mib: Option<f64>,
    /// Batches the server flushed during the phase, and the writers they
    /// carried (its `/status`; none from a server that does not say).
    batches: Option<u64>,
    writers_per_batch: Option<f64>,
    first_error: Option<String>,
}

/// The server's batches flushed and the writers they carried, from its
/// `/status` (gov's; the original has none).
fn batch_counts(url: &str, token: Option<&str>) -> Option<(u64, u64)> {
    let mut req = ureq::get(&format!("{url}/status")).timeout(Duration::from_secs(10));
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    let v: Value = req.call().ok()?.into_json().ok()?;
    let n = |k: &str| v["batches"][k].as_u64();
    Some((n("flushed")?, n("writers")?))
}

/// Runs `count` requests from `clients` keep-alive connections.
#[allow(
    clippy::too_many_arguments,
    reason = "a phase is its name, target, load and callbacks; a struct would only rename them"
)]
fn run_phase(
    name: &str,
    url: &str,
    o: &Opts,
    server: Option<u32>,
    count: usize,
    deadline: Instant,
    make: Arc<dyn Fn(usize) -> Req + Send + Sync>,
    on_answer: Arc<dyn Fn(&Value) + Send + Sync>,
) -> PhaseResult {
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let first_error: Arc<Mutex<Option<String>>> = Arc::default();
    let latencies: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let batches0 = batch_counts(url, o.operator_token.as_deref());
    let cpu0 = cpu_secs("self");
    let machine0 = machine_ticks();
    let server_cpu0 = server.map(|p| cpu_secs(&p.to_string()));
    let started = Instant::now();
    let threads: Vec<_> = (0..o.clients)
        .map(|_| {
            let (next, failed, first_error, latencies, make, on_answer) = (
                next.clone(),
                failed.clone(),
                first_error.clone(),
                latencies.clone(),
                make.clone(),
                on_answer.clone(),
            );
            let url = url.to_string();
            std::thread::spawn(move || {
                let agent = ureq::AgentBuilder::new()
                    .timeout(Duration::from_secs(30))
                    .max_idle_connections_per_host(1)
                    .build();
                let mut mine = Vec::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= count || Instant::now() >= deadline {
                        break;
                    }
                    let r = make(n);
                    let mut req = agent.post(&format!("{url}{}", r.path));
                    if let Some(t) = &r.token {
                        req = req.set("Authorization", &format!("Bearer {t}"));
                    }
                    let t = Instant::now();
                    let answer = req.send_json(r.body);
                    let took = t.elapsed();
                    let outcome = match answer {
                        Ok(resp) => {
                            let v: Value = resp.into_json().unwrap_or(Value::Null);
                            on_answer(&v);
                            Ok(())
                        }
                        Err(ureq::Error::Status(400, _)) if r.expect_400 => Ok(()),
                        Err(ureq::Error::Status(code, resp)) => Err(format!(
                            "HTTP {code}: {}",
                            resp.into_string().unwrap_or_default()
                        )),
                        Err(e) => Err(e.to_string()),
                    };
                    match outcome {
                        Ok(()) => mine.push(took),
                        Err(e) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            if let Ok(mut f) = first_error.lock() {
                                f.get_or_insert(e);
                            }
                        }
                    }
                }
                if let Ok(mut l) = latencies.lock() {
                    l.extend(mine);
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    let seconds = started.elapsed().as_secs_f64();
    let client_cpu_s = Some(cpu_secs("self") - cpu0);
    let batches = batches0
        .zip(batch_counts(url, o.operator_token.as_deref()))
        .map(|((f0, w0), (f, w))| (f.saturating_sub(f0), w.saturating_sub(w0)));
    let mut lat = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    lat.sort();
    PhaseResult {
        phase: name.to_string(),
        ok: lat.len(),
        failed: failed.load(Ordering::Relaxed),
        seconds,
        per_sec: lat.len() as f64 / seconds.max(1e-9),
        p50_ms: pct(&lat, 0.50),
        p99_ms: pct(&lat, 0.99),
        max_ms: lat.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
        client_cpu_s,
        server_cpu_s: server
            .zip(server_cpu0)
            .map(|(p, c0)| cpu_secs(&p.to_string()) - c0),
        steal_pct: steal_pct_since(machine0),
        server_rss_mib: server.and_then(rss_mib),
        batches: batches.map(|(f, _)| f),
        writers_per_batch: batches.map(|(f, w)| w as f64 / f.max(1) as f64),
        first_error: first_error.lock().ok().and_then(|f| f.clone()),
    }
}

/// Reads made `rate` times a second on one more keep-alive connection
/// until [`Reads::result`] (see `--reads`): `GET /proposals?status=
/// pending&limit=1`, a query the server answers from its index.
fn reads_during(url: &str, token: &str, rate: u32) -> Reads {
    let url = format!("{url}/proposals?status=pending&limit=1");
    let auth = format!("Bearer {token}");
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let thread = std::thread::spawn(move || {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(30))
            .max_idle_connections_per_host(1)
            .build();
        let every = Duration::from_secs(1) / rate.max(1);
        let (mut took, mut failed, mut first_error) = (Vec::new(), 0, None);
        let mut next = Instant::now();
        while !stopped.load(Ordering::Relaxed) {
            let t = Instant::now();
            match agent.get(&url).set("Authorization", &auth).call() {
                Ok(r) => {
                    let _ = r.into_string();
                    took.push(t.elapsed());
                }
                Err(e) => {
                    failed += 1;
                    first_error.get_or_insert(e.to_string());
                }
            }
            next += every;
            match next.checked_duration_since(Instant::now()) {
                Some(wait) => std::thread::sleep(wait),
                None => next = Instant::now(),
            }
        }
        (took, failed, first_error)
    });
    Reads {
        thread,
        started,
        stop,
    }
}

/// Reads running beside a phase (see [`reads_during`]).
struct Reads {
    thread: std::thread::JoinHandle<(Vec<Duration>, usize, Option<String>)>,
    started: Instant,
    stop: Arc<AtomicBool>,
}

impl Reads {
    /// Stops them; their row.
    fn result(self, phase: &str) -> PhaseResult {
        self.stop.store(true, Ordering::Relaxed);
        let (mut lat, failed, first_error) = self
            .thread
            .join()
            .unwrap_or_else(|_| (Vec::new(), 0, Some("the reading thread panicked".into())));
        let seconds = self.started.elapsed().as_secs_f64();
        lat.sort();
        PhaseResult {
            phase: format!("reads during {phase}"),
            ok: lat.len(),
            failed,
            seconds,
            per_sec: lat.len() as f64 / seconds.max(1e-9),
            p50_ms: pct(&lat, 0.50),
            p99_ms: pct(&lat, 0.99),
            max_ms: lat.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
            client_cpu_s: None,
            server_cpu_s: None,
            steal_pct: None,
            server_rss_mib: None,
            batches: None,
            writers_per_batch: None,
            first_error,
        }
    }
}

/// The `gov` binary beside this benchmark's build (`target/release/gov`
/// for `target/release/examples/bench_server`), unless `--gov-bin` names one.
fn gov_binary(o: &Opts) -> Option<std::path::PathBuf> {
    if let Some(p) = &o.gov_bin {
        return Some(p.clone());
    }
    let exe = std::env::current_exe().ok()?;
    let bin = exe.parent()?.parent()?.join("gov");
    bin.is_file().then_some(bin)
}

/// The hook round trip, as Claude Code makes it before each tool call: the
/// hook `gov run` writes into the settings (`gov-hook pre-tool-use` when
/// it is beside `gov`, else `gov hook pre-tool-use`; see
/// `runner::claude::hook_program`) started `n` times one after another in a run of
/// the `noop` agent, each timed from process start to its answer (which
/// the server gives once the decision's audit entry is durable). Returns
/// the durations, sorted, and how many answers were `allow`.
fn hook_round_trips(
    url: &str,
    runner_token: &str,
    agent_dir: &std::path::Path,
    gov: &std::path::Path,
    n: usize,
    deadline: Instant,
) -> BoxResult<(Vec<Duration>, usize)> {
    use std::io::Write;
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build();
    let opened: Value = agent
        .post(&format!("{url}/runs"))
        .set("Authorization", &format!("Bearer {runner_token}"))
        .send_json(json!({"agent_id": "noop"}))?
        .into_json()?;
    let run_id = opened["run_id"]
        .as_str()
        .ok_or("POST /runs gave no run_id")?;
    let token = opened["agent_token"]
        .as_str()
        .ok_or("POST /runs gave no agent_token")?;
    // What `gov run` writes into the agent's settings: `gov-hook` when it
    // is beside `gov`, else `gov hook`.
    let (program, args) = gov::runner::claude::hook_program(gov, "pre-tool-use");
    let mut took = Vec::with_capacity(n);
    let mut allowed = 0;
    for i in 0..n {
        if Instant::now() >= deadline {
            break;
        }
        let input = json!({
            "hook_event_name": "PreToolUse", "tool_name": "Read",
            "tool_input": {"file_path": agent_dir.join("memory.md")},
            "cwd": agent_dir, "tool_use_id": format!("toolu_bench_{i}"),
        })
        .to_string();
        let t = Instant::now();
        let mut child = std::process::Command::new(&program)
            .args(&args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("GOV_URL", url)
            .env("GOV_AGENT_ID", "noop")
            .env("GOV_RUN_ID", run_id)
            .env("GOV_AGENT_TOKEN", token)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        child
            .stdin
            .take()
            .ok_or("no stdin")?
            .write_all(input.as_bytes())?;
        let out = child.wait_with_output()?;
        took.push(t.elapsed());
        let answer: Value = serde_json::from_slice(&out.stdout)?;
        match answer["hookSpecificOutput"]["permissionDecision"].as_str() {
            Some("allow") => allowed += 1,
            Some(_) => {}
            None => return Err(format!("the hook answered `{answer}`").into()),
        }
    }
    took.sort();
    Ok((took, allowed))
}

fn submit_req(n: usize) -> Req {
    let now = chrono::Utc::now();
    let (action, requires_approval) = match n % 10 {
        0..=4 => ("publish_content", true),
        5..=7 => ("research_only", false),
        _ => ("publish_content", false),
    };
    Req {
        path: "/proposals".into(),
        body: json!({
            "agent_id": format!("bench-{}", n % 16), "wave": 1,
            "submitted_at": now.to_rfc3339(),
            "action_type": action, "payload": {"n": n, "text": "a benchmark proposal"},
            "expected_outcome": "benchmark", "requires_approval": requires_approval,
            "expires_at": (now + chrono::Duration::hours(1)).to_rfc3339(),
        }),
        token: None,
        expect_400: n % 10 >= 8,
    }
}

fn main() -> BoxResult {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("--serve-child") {
        let root = args.nth(1).ok_or("--serve-child needs a folder")?;
        return serve_child(&root);
    }
    let mut o = opts(args)?;
    let deadline = Instant::now() + Duration::from_secs(o.seconds);
    let dir = tempfile::tempdir()?;
    let mut child = None;
    let mut settings = None;
    let url = match &o.url {
        Some(u) => u.clone(),
        None => {
            let s = make_repo(dir.path())?;
            if o.preload > 0 {
                let t = Instant::now();
                preload(&s, o.preload)?;
                eprintln!(
                    "preloaded {} entries in {:.1}s",
                    o.preload,
                    t.elapsed().as_secs_f64()
                );
            }
            let token = |path: &std::path::Path, prefix: &str| -> BoxResult<String> {
                Ok(gov::app::tokens::load_or_create(path, prefix)?
                    .expose()
                    .to_string())
            };
            o.operator_token = Some(token(&s.operator_token_path(), "gov_op")?);
            o.runner_token = Some(token(&s.runner_token_path(), "gov_runner")?);
            let c = start_child(dir.path(), o.server_bin.as_deref())?;
            let u = c.url.clone();
            child = Some(c);
            settings = Some(s);
            u
        }
    };
    let pid = child.as_ref().map(|c| c.proc.id());
    let git_mib = |s: &Option<gov::config::Settings>| {
        s.as_ref()
            .map(|s| gov::testkit::maintain::dir_bytes(&s.root.join(".git")) as f64 / 1048576.0)
    };
    let mut results: Vec<PhaseResult> = Vec::new();
    let mut rounds_table = Vec::new();
    let pending: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut written = o.preload;

    // Submits, in rounds.
    if o.reads > 0 && o.operator_token.is_none() {
        eprintln!("reads during submits not measured: they need --operator-token");
    }
    let per_round = o.submits.div_ceil(o.rounds);
    let mut done = 0;
    for round in 1..=o.rounds {
        let k = per_round.min(o.submits - done);
        if k == 0 {
            break;
        }
        let base = done;
        let p2 = pending.clone();
        let phase = format!("submit round {round}");
        let reads = match (&o.operator_token, o.reads) {
            (Some(tok), rate) if rate > 0 => Some(reads_during(&url, tok, rate)),
            _ => None,
        };
        let r = run_phase(
            &phase,
            &url,
            &o,
            pid,
            k,
            deadline,
            Arc::new(move |n| submit_req(base + n)),
            Arc::new(move |v: &Value| {
                if v.get("status").and_then(Value::as_str) == Some("pending") {
                    if let (Some(id), Ok(mut p)) =
                        (v.get("proposal_id").and_then(Value::as_str), p2.lock())
                    {
                        p.push(id.to_string());
                    }
                }
            }),
        );
        done += k;
        written += r.ok;
        rounds_table.push((round, written, r.clone(), git_mib(&settings)));
        results.push(r);
        if let Some(reads) = reads {
            results.push(reads.result(&phase));
        }
    }

    // Decisions on pending proposals.
    let ids = pending.lock().map(|p| p.clone()).unwrap_or_default();
    let n_dec = o.decisions.min(ids.len());
    if n_dec > 0 {
        if let Some(tok) = o.operator_token.clone() {
            let ids = Arc::new(ids);
            let approve_every = o.approve_pct;
            let r = run_phase(
                "decisions",
                &url,
                &o,
                pid,
                n_dec,
                deadline,
                Arc::new(move |n| Req {
                    path: format!("/proposals/{}/decision", ids[n]),
                    body: json!({"decision": if n % 100 < approve_every { "approve" } else { "reject" }}),
                    token: Some(tok.clone()),
                    expect_400: false,
                }),
                Arc::new(|_: &Value| {}),
            );
            written += r.ok;
            results.push(r);
        }
    }
    if o.charges > 0 {
        if let Some(tok) = o.runner_token.clone() {
            let r = run_phase(
                "charges",
                &url,
                &o,
                pid,
                o.charges,
                deadline,
                Arc::new(move |n| Req {
                    path: format!("/budget/bench-{}/charge", n % 16),
                    body: json!({"tokens": 1, "tool": "bench", "dollars": 0.000001}),
                    token: Some(tok.clone()),
                    expect_400: false,
                }),
                Arc::new(|_: &Value| {}),
            );
            written += r.ok;
            results.push(r);
        }
    }
    let audit_req = |n: usize| Req {
        path: "/audit".into(),
        body: json!({"agent_id": format!("bench-{}", n % 16), "event_type": "action_executed", "payload": {"n": n}}),
        token: None,
        expect_400: false,
    };
    if o.audits > 0 {
        let r = run_phase(
            "audit posts",
            &url,
            &o,
            pid,
            o.audits,
            deadline,
            Arc::new(audit_req),
            Arc::new(|_: &Value| {}),
        );
        written += r.ok;
        results.push(r);
    }
    let mut hook_figures = json!(null);
    if o.hooks > 0 {
        match (gov_binary(&o), o.runner_token.clone()) {
            (Some(gov), Some(tok)) => {
                let dir = settings.as_ref().map_or_else(
                    std::env::temp_dir,
                    |s| s.root.join("agents").join("noop"),
                );
                let (took, allowed) =
                    hook_round_trips(&url, &tok, &dir, &gov, o.hooks, deadline)?;
                written += took.len();
                hook_figures = json!({
                    "count": took.len(),
                    "allowed": allowed,
                    "median_ms": pct(&took, 0.50),
                    "p99_ms": pct(&took, 0.99),
                    "max_ms": took.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
                });
            }
            (None, _) => eprintln!(
                "hook round trip not measured: no `gov` binary beside this benchmark (build it with `cargo build --release --bins`, or name one with --gov-bin)"
            ),
            (_, None) => eprintln!("hook round trip not measured: it needs --runner-token"),
        }
    }
    let mut soak_rss = Vec::new();
    let mut soak_anon = Vec::new();
    if o.soak > 0 {
        let step = o.soak.div_ceil(10);
        let mut left = o.soak;
        soak_rss.push((written, pid.and_then(rss_mib)));
        soak_anon.push((written, pid.and_then(anon_mib)));
        while left > 0 && Instant::now() < deadline {
            let k = step.min(left);
            let r = run_phase(
                "soak",
                &url,
                &o,
                pid,
                k,
                deadline,
                Arc::new(audit_req),
                Arc::new(|_: &Value| {}),
            );
            written += r.ok;
            left -= k;
            soak_rss.push((written, pid.and_then(rss_mib)));
            soak_anon.push((written, pid.and_then(anon_mib)));
        }
    }
    let final_rss = pid.and_then(rss_mib);
    let peak_rss = pid.and_then(peak_rss_mib);

    // Stop the server, then measure the repository.
    let mut startup_ms = None;
    let mut repo_figures = json!(null);
    if let Some(mut c) = child.take() {
        startup_ms = Some(c.startup.as_secs_f64() * 1e3);
        drop(c.proc.stdin.take());
        let _ = c.proc.wait();
    }
    if let Some(s) = &settings {
        let before = gov::testkit::maintain::dir_bytes(&s.root.join(".git"));
        let files_before = gov::testkit::maintain::file_count(&s.root.join(".git"));
        let t = Instant::now();
        let m = gov::app::governance::maintain(s)?;
        let m_secs = t.elapsed().as_secs_f64();
        let after = gov::testkit::maintain::dir_bytes(&s.root.join(".git"));
        let files_after = gov::testkit::maintain::file_count(&s.root.join(".git"));
        // `gov audit verify` as a user runs it (the `gov` binary beside this
        // benchmark, or --gov-bin), else the library's verify.
        let t = Instant::now();
        let (verify_ok, v_secs) = match gov_binary(&o) {
            Some(bin) => {
                let out = std::process::Command::new(bin)
                    .args(["audit", "verify"])
                    .env("GOV_REPO", &s.root)
                    .output()?;
                (out.status.success(), t.elapsed().as_secs_f64())
            }
            None => {
                let v = gov::app::audit::verify(s)?;
                (v.problems.is_empty(), t.elapsed().as_secs_f64())
            }
        };
        let entries = gov::app::governance::open_index(s)?.1.count()?;
        // Start-up with the whole history in place.
        let c = start_child(&s.root, o.server_bin.as_deref())?;
        let startup2 = c.startup.as_secs_f64() * 1e3;
        let rss_idle = rss_mib(c.proc.id());
        let mut c = c;
        drop(c.proc.stdin.take());
        let _ = c.proc.wait();
        repo_figures = json!({
            "entries": entries,
            "verify_ok": verify_ok,
            "verify_per_sec": entries as f64 / v_secs.max(1e-9),
            "git_bytes_before_maintenance": before,
            "git_bytes_after_maintenance": after,
            "bytes_per_entry": after as f64 / (entries.max(1) as f64),
            "git_files_before": files_before,
            "git_files_after": files_after,
            "maintenance_seconds": m_secs,
            "loose_after": m.loose_after,
            "packs_after": m.packs_after,
            "startup_ms_full": startup2,
            "rss_mib_idle_full": rss_idle,
        });
    }

    println!(
        "| round | entries | submits/s | p50 ms | p99 ms | failed | server RSS MiB | .git MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (round, entries, r, git) in &rounds_table {
        println!(
            "| {round} | {entries} | {:.0} | {:.1} | {:.1} | {} | {} | {} |",
            r.per_sec,
            r.p50_ms,
            r.p99_ms,
            r.failed,
            r.server_rss_mib.map_or("-".into(), |m| format!("{m:.1}")),
            git.map_or("-".into(), |m| format!("{m:.1}")),
        );
    }
    println!();
    println!(
        "| phase | ok | failed | /s | p50 ms | p99 ms | max ms | client CPU s | server CPU s | batches | writers per batch | steal % |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &results {
        println!(
            "| {} | {} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {} | {} | {} | {} | {} |",
            r.phase,
            r.ok,
            r.failed,
            r.per_sec,
            r.p50_ms,
            r.p99_ms,
            r.max_ms,
            r.client_cpu_s.map_or("-".into(), |c| format!("{c:.2}")),
            r.server_cpu_s.map_or("-".into(), |c| format!("{c:.2}")),
            r.batches.map_or("-".into(), |b| b.to_string()),
            r.writers_per_batch
                .map_or("-".into(), |w| format!("{w:.1}")),
            r.steal_pct.map_or("-".into(), |p| format!("{p:.0}")),
        );
        if let Some(e) = &r.first_error {
            println!("  first error: {e}");
        }
    }
    if !soak_rss.is_empty() {
        let samples = |v: &[(usize, Option<f64>)]| {
            v.iter()
                .map(|(n, m)| format!("{n}: {}", m.map_or("-".into(), |m| format!("{m:.1}"))))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!();
        println!("soak RSS (entries: MiB): {}", samples(&soak_rss));
        println!("soak anonymous RSS (entries: MiB): {}", samples(&soak_anon));
    }
    if let Some(peak) = peak_rss {
        println!();
        println!("server's peak RSS (high-water mark, since its start): {peak:.1} MiB");
    }
    if !hook_figures.is_null() {
        println!();
        println!(
            "hook round trip (`gov hook pre-tool-use`, process start to answer): {hook_figures}"
        );
    }
    if !repo_figures.is_null() {
        println!();
        println!("repository: {repo_figures}");
    }
    let total_time: f64 = results.iter().map(|r| r.seconds).sum();
    if Instant::now() >= deadline {
        println!("(stopped at the {}s time bound)", o.seconds);
    }
    let summary = json!({
        "bench": "bench_server",
        "url": o.url,
        "clients": o.clients,
        "phases": results,
        "soak_rss_mib": soak_rss,
        "soak_anon_mib": soak_anon,
        "final_rss_mib": final_rss,
        "peak_rss_mib": peak_rss,
        "hook": hook_figures,
        "startup_ms": startup_ms,
        "repository": repo_figures,
        "seconds": total_time,
    });
    println!("{summary}");
    if o.keep {
        eprintln!("repository kept: {}", dir.keep().display());
    }
    Ok(())
}
