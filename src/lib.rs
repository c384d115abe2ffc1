//! gov: a governance harness for autonomous AI agents.
//!
//! Layout (see ARCHITECTURE.md for the whole map and the invariants):
//!
//! - [`domain`]: the pure core: policy decisions, proposals, budget ledger,
//!   watchdog rules, audit entries. No I/O.
//! - [`config`]: `gov.toml` and `agent.toml`, raw and resolved.
//! - `store` (crate-private): adapters: Git (signed commits, the audit chain, proposal
//!   branches), SQLite (the rebuildable index), keys.
//! - [`app`]: the use cases that the CLI and the HTTP server share.
//! - [`cli`]: one file per subcommand; maps errors to exit codes once.
//! - [`server`]: the HTTP API and the dashboard.
//! - [`runner`]: spawning and supervising agents; the tool-call hook.
//! - [`process`]: a child in its own process group, supervised (wall clock,
//!   SIGTERM, grace, SIGKILL): agents, and the `git` that `gov sync` runs.
//! - [`wire`]: the HTTP API's request and response bodies, shared by the
//!   server, the client, the CLI, the runner and the tests.
//! - `testkit` (feature `testkit`, dev builds only): the store internals
//!   the integration tests and benchmarks reach; `store` is otherwise
//!   private to the crate.

pub mod app;
pub mod cli;
pub mod client;
pub mod config;
pub mod domain;
pub mod process;
pub mod runner;
pub mod server;
pub(crate) mod store;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod wire;
