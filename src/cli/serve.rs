//! `gov serve [--port PORT]`: the API and dashboard on 127.0.0.1 only.

use std::path::PathBuf;

use super::{ExitCode, Failure};
use crate::config::Settings;
use crate::server::{serve, shutdown_signal, AppState};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The port on 127.0.0.1 (default: `[server] port` in gov.toml, 8005).
    #[arg(long)]
    pub port: Option<u16>,
}

pub fn run(args: Args, repo: Option<PathBuf>) -> Result<ExitCode, Failure> {
    crate::server::bound_allocator_arenas();
    let root = super::repo_root(repo)?;
    let settings = Settings::load(&root)?;
    let port = args.port.unwrap_or(settings.port);
    let state =
        AppState::open(&settings).map_err(|e| Failure::from_error(ExitCode::Failure, &e))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(ExitCode::Failure, format!("cannot start the runtime: {e}")))?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .map_err(|e| {
                Failure::new(
                    ExitCode::Failure,
                    format!("cannot listen on 127.0.0.1:{port}: {e}"),
                )
            })?;
        let addr = listener
            .local_addr()
            .map_err(|e| Failure::new(ExitCode::Failure, e.to_string()))?;
        let record = super::server_record::ServerRecord {
            pid: std::process::id(),
            url: format!("http://{addr}"),
        };
        if let Err(e) = super::server_record::write(&settings, &record) {
            eprintln!(
                "warning: cannot write `{}` ({e}): other gov commands will not find this server",
                super::server_record::path(&settings).display()
            );
        }
        // Printed after the record is written: whoever waits for this line
        // can find the server through `.gov/server.json`.
        println!("gov serve: listening on http://{addr}/");
        println!(
            "dashboard (this link works once, for 5 minutes; `gov dashboard-link` prints another): {}",
            crate::server::dashboard::login_url(&state, addr.port())
        );
        println!(
            "operator token: {} (send it as `Authorization: Bearer ...`)",
            settings.operator_token_path().display()
        );
        match state.svc.policy_status() {
            crate::app::service::PolicyStatus {
                version: Some(v), ..
            } => println!("policy set in force: {v}"),
            crate::app::service::PolicyStatus { error, .. } => println!(
                "warning: no policy set is in force ({}); every request is refused",
                error.unwrap_or_default()
            ),
        }
        match state.svc.records_posted_by_agents() {
            Ok(0) => {}
            Ok(n) => println!(
                "warning: agents posted {n} audit entr{} of a type gov writes itself, before gov refused them (2026-12-04); they count for nothing, and `gov audit verify` names each",
                if n == 1 { "y" } else { "ies" }
            ),
            Err(e) => tracing::warn!(error = %e, "cannot count the records agents posted"),
        }
        match state.svc.catch_up_checkout() {
            Ok(done) => {
                let n = done.put_back.len();
                if n > 0 {
                    let (s, them) = if n == 1 { ("", "it") } else { ("s", "them") };
                    let put = match done.waiting {
                        false => "brought up to date".to_string(),
                        true => format!("a `git` command holds the Git index (`.git/index.lock`); {them} will be brought up to date once it lets go"),
                    };
                    println!(
                        "note: the checkout lacked `main`'s approved version of {n} file{s} (gov could not put {them} there: a server or command stopped, or a `git` command held the Git index); {put}: {}",
                        some_of(&done.put_back)
                    );
                }
                if !done.left.is_empty() {
                    println!(
                        "warning: the working tree holds other content where `main` has approved changes; it is kept, and `git status` shows it as changes to `main`'s: {}",
                        some_of(&done.left)
                    );
                }
            }
            Err(e) => println!("warning: cannot bring the checkout up to `main`'s approved changes: {e}"),
        }
        let svc = state.svc.clone();
        let _ = std::thread::Builder::new()
            .name("gov-warm-up".into())
            .spawn(move || svc.warm_up());
        let served = serve(listener, state, shutdown_signal()).await;
        super::server_record::remove_own(&settings);
        served.map_err(|e| Failure::new(ExitCode::Failure, format!("server failed: {e}")))?;
        println!("gov serve: stopped");
        Ok(ExitCode::Ok)
    })
}

/// Up to five of `paths`, quoted, and how many more there are.
fn some_of(paths: &[String]) -> String {
    const SHOWN: usize = 5;
    let list = crate::domain::paths::quoted_list(&paths[..paths.len().min(SHOWN)]);
    match paths.len().saturating_sub(SHOWN) {
        0 => list,
        more => format!("{list} and {more} more"),
    }
}
