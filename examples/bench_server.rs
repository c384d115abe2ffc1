//! Load generator for `gov serve`: proposal submits per second at N
//! concurrent clients, every write durable (signed commit, fsync'd), with
//! p50/p99 latency. Loopback only, bounded in count and time.
//!
//! It builds a throw-away governance repository (keys, the project's
//! default policies, one agent), starts the real server on 127.0.0.1:0 and
//! runs the clients against it. `scripts/bench-server.sh` runs it.
//!
//! Usage: bench_server [--clients N] [--requests TOTAL] [--seconds MAX]
//!                     [--action-type T]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gov::config::Settings;
use gov::server::{serve, AppState};

type BoxResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

struct Opts {
    clients: usize,
    requests: usize,
    seconds: u64,
    action_type: String,
}

fn opts() -> BoxResult<Opts> {
    let mut o = Opts {
        clients: 16,
        requests: 2000,
        seconds: 30,
        action_type: "publish_content".into(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().ok_or_else(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--clients" => o.clients = v.parse()?,
            "--requests" => o.requests = v.parse()?,
            "--seconds" => o.seconds = v.parse()?,
            "--action-type" => o.action_type = v,
            _ => return Err(format!("unknown option {a}").into()),
        }
    }
    o.clients = o.clients.clamp(1, 256);
    o.requests = o.requests.clamp(1, 100_000);
    o.seconds = o.seconds.clamp(1, 600);
    Ok(o)
}

/// A governance repository as `gov init` makes it, with token-less agents
/// accepted (as the original's clients send no token).
fn make_repo(root: &std::path::Path) -> BoxResult<Settings> {
    gov::app::init::init(&gov::app::init::InitOptions {
        dir: root.to_path_buf(),
        operator_name: "operator".into(),
        operator_key: None,
    })?;
    let toml = std::fs::read_to_string(root.join("gov.toml"))?;
    std::fs::write(
        root.join("gov.toml"),
        toml.replace("# agent_auth = \"required\"", "agent_auth = \"optional\""),
    )?;
    Ok(Settings::load(root)?)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() -> BoxResult {
    let o = opts()?;
    let dir = tempfile::tempdir()?;
    let settings = make_repo(dir.path())?;
    let state = AppState::open(&settings)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let listener = rt.block_on(tokio::net::TcpListener::bind(("127.0.0.1", 0)))?;
    let url = format!("http://{}", listener.local_addr()?);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = rt.spawn(serve(listener, state, async {
        let _ = stop_rx.await;
    }));

    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let timed_out = Arc::new(AtomicBool::new(false));
    let latencies: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let deadline = Instant::now() + Duration::from_secs(o.seconds);
    let started = Instant::now();
    let clients: Vec<_> = (0..o.clients)
        .map(|_| {
            let (url, next, failed, latencies, timed_out) = (
                url.clone(),
                next.clone(),
                failed.clone(),
                latencies.clone(),
                timed_out.clone(),
            );
            let (total, action) = (o.requests, o.action_type.clone());
            std::thread::spawn(move || {
                let agent = ureq::AgentBuilder::new()
                    .timeout(Duration::from_secs(30))
                    .build();
                let mut mine = Vec::new();
                loop {
                    if Instant::now() >= deadline {
                        timed_out.store(true, Ordering::Relaxed);
                        break;
                    }
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        break;
                    }
                    let now = chrono::Utc::now();
                    let body = serde_json::json!({
                        "agent_id": "noop", "wave": 1, "submitted_at": now.to_rfc3339(),
                        "action_type": action, "payload": {"n": n},
                        "expected_outcome": "benchmark",
                        "expires_at": (now + chrono::Duration::hours(1)).to_rfc3339(),
                    });
                    let t = Instant::now();
                    match agent.post(&format!("{url}/proposals")).send_json(body) {
                        Ok(_) => mine.push(t.elapsed()),
                        Err(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                if let Ok(mut l) = latencies.lock() {
                    l.extend(mine);
                }
            })
        })
        .collect();
    for c in clients {
        let _ = c.join();
    }
    let elapsed = started.elapsed();
    let _ = stop_tx.send(());
    let _ = rt.block_on(server);
    let mut lat = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    lat.sort();
    let ok = lat.len();
    println!("| clients | submits ok | failed | seconds | submits/s | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {} | {:.2} | {:.0} | {:.1} | {:.1} | {:.1} |",
        o.clients,
        ok,
        failed.load(Ordering::Relaxed),
        elapsed.as_secs_f64(),
        ok as f64 / elapsed.as_secs_f64(),
        pct(&lat, 0.50).as_secs_f64() * 1e3,
        pct(&lat, 0.99).as_secs_f64() * 1e3,
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
    if timed_out.load(Ordering::Relaxed) {
        println!("(stopped at the {}s time bound)", o.seconds);
    }
    println!("action type `{}`: each submit is a signed proposal commit and a signed audit entry, fsync'd", o.action_type);
    Ok(())
}
