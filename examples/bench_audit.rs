//! Audit chain benchmark (not a test): appends entries to a temporary
//! governance repository and prints a table. Run via `scripts/bench-audit.sh`.
//!
//! `bench_audit [SINGLE] [BATCHES] [BATCH_SIZE]` (defaults 20000, 100, 100).

use std::time::{Duration, Instant};

use gov::app::governance::Governance;
use gov::app::governance::Role;
use gov::config::Settings;
use gov::domain::audit::{Actor, Event, NewEntry};
use gov::testkit::keys::SigningKey;

type Res<T = ()> = Result<T, Box<dyn std::error::Error>>;

/// A governance repository as `gov init` makes it.
fn setup(root: &std::path::Path) -> Res<Settings> {
    gov::app::init::init(&gov::app::init::InitOptions {
        dir: root.to_path_buf(),
        operator_name: "operator".into(),
        operator_key: None,
    })?;
    Ok(Settings::load(root)?)
}

fn entry(i: u64) -> NewEntry {
    let payload = serde_json::json!({"i": i, "tool": "shell", "args": "ls -la"});
    // A fixed, valid name: `other` cannot refuse it.
    let event = Event::other("tool_call", payload).unwrap_or_else(|e| panic!("{e}"));
    NewEntry::new(Actor::server(), event).agent("bench")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

fn window(lat: &[Duration], from: usize, to: usize) -> (f64, Duration, Duration) {
    let w = &lat[from.min(lat.len())..to.min(lat.len())];
    let total: Duration = w.iter().sum();
    let mut sorted = w.to_vec();
    sorted.sort();
    let rate = w.len() as f64 / total.as_secs_f64().max(1e-9);
    (rate, percentile(&sorted, 0.5), percentile(&sorted, 0.99))
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

/// The cost of an append without the lock, the index and the flush to
/// disk: signed commit + compare-and-swap only, on a scratch ref.
fn append_without_fsync(settings: &Settings, n: u64) -> Res<f64> {
    let repo = git2::Repository::open(&settings.root)?;
    let key = SigningKey::load(&settings.server_key)?;
    let who = git2::Signature::now("gov server", "server@gov")?;
    let tree = repo.find_tree(gov::testkit::git::empty_tree(&repo)?)?;
    let refname = "refs/heads/bench/no-fsync";
    let mut parent: Option<git2::Oid> = None;
    let t = Instant::now();
    for i in 0..n {
        let msg = entry(i).place(i + 1, chrono::Utc::now()).commit_message();
        let pc = parent.map(|p| repo.find_commit(p)).transpose()?;
        let parents: Vec<&git2::Commit<'_>> = pc.iter().collect();
        let oid = gov::testkit::git::signed_commit(&repo, &key, &who, &tree, &parents, &msg)?;
        gov::testkit::git::cas_ref(&repo, refname, oid, parent, "bench")?;
        parent = Some(oid);
    }
    Ok(n as f64 / t.elapsed().as_secs_f64().max(1e-9))
}

fn main() -> Res {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<u64>());
    let single = args.next().transpose()?.unwrap_or(20_000);
    let batches = args.next().transpose()?.unwrap_or(100);
    let batch_size = args.next().transpose()?.unwrap_or(100);
    let dir = tempfile::tempdir()?;
    let settings = setup(dir.path())?;
    let gov = Governance::open(&settings, Role::Server)?;

    let mut lat = Vec::with_capacity(single as usize);
    let start = Instant::now();
    for i in 0..single {
        let t = Instant::now();
        gov.append(vec![entry(i)])?;
        lat.push(t.elapsed());
    }
    let single_total = start.elapsed();

    let t = Instant::now();
    for b in 0..batches {
        gov.append((0..batch_size).map(|i| entry(b * batch_size + i)).collect())?;
    }
    let batch_total = t.elapsed();
    let batch_rate = (batches * batch_size) as f64 / batch_total.as_secs_f64().max(1e-9);
    drop(gov);
    let no_fsync_rate = append_without_fsync(&settings, 1000)?;

    let t = Instant::now();
    let report = gov::app::audit::verify(&settings)?;
    let verify_time = t.elapsed();
    if !report.is_ok() {
        return Err(format!("verify failed: {:?}", report.problems.first()).into());
    }

    let n = lat.len();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("audit chain benchmark ({n} single appends, {batches} batches of {batch_size})");
    println!(
        "{:<36} {:>12} {:>10} {:>10}",
        "measure", "entries/s", "p50 ms", "p99 ms"
    );
    let rows = [
        ("single append, entries 500..1500", window(&lat, 500, 1500)),
        (
            "single append, last 1000 entries",
            window(&lat, n.saturating_sub(1000), n),
        ),
        ("single append, all", window(&lat, 0, n)),
    ];
    for (name, (rate, p50, p99)) in rows {
        println!(
            "{name:<36} {rate:>12.0} {:>10.3} {:>10.3}",
            ms(p50),
            ms(p99)
        );
    }
    println!(
        "{:<36} {:>12.0} {:>10} {:>10}",
        format!("group commit ({batch_size} per lock hold)"),
        batch_rate,
        "-",
        "-"
    );
    println!(
        "{:<36} {:>12.0} {:>10} {:>10}",
        "baseline: commit + CAS, no fsync/lock", no_fsync_rate, "-", "-"
    );
    println!(
        "{:<36} {:>12.0} {:>10} {:>10}",
        format!("verify ({} entries)", report.entries),
        report.entries as f64 / verify_time.as_secs_f64().max(1e-9),
        "-",
        "-"
    );
    println!(
        "single appends took {:.1} s in all; peak RSS {} MiB",
        single_total.as_secs_f64(),
        peak_rss_kib() / 1024
    );
    Ok(())
}
