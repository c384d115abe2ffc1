//! Running agents under governance, and the tool-call hook.
//!
//! - [`run`]: `gov run`: one run of one agent, from `POST /runs` to
//!   `POST /runs/{id}/finish`.
//! - [`process`] (`crate::process`, shared with `gov sync`'s git): spawning
//!   in a process group; wall clock and Ctrl-C (SIGTERM, grace, SIGKILL).
//! - [`env`]: the environment a child gets (operator secrets removed).
//! - [`sandbox`]: the Landlock confinement every agent runs under (through
//!   `gov sandbox-exec`): no `.gov/`, no Git directory, writes only in its
//!   folder and its run's private folder.
//! - [`claude`]: the `claude -p` command line and the hook settings file.
//! - [`stream_json`]: parsing Claude Code's stream-json for usage and outcome.
//! - [`meter`]: charging a run as its usage grows, stopping it when its
//!   reservation or a cap is spent; command agents' usage file.
//! - [`hook`]: `gov hook pre-tool-use`: every tool call asks the policy set;
//!   any failure is a deny.
//! - [`guard`]: the settings `gov guard` adds to a project, and takes out.
//! - [`transcript`], [`session_meter`]: a `gov guard` session's usage, read
//!   from its transcript by its hooks and reported as its run's.
//!
//! The HTTP contract with the server is in `docs/RUNNER.md`.

pub mod claude;
pub mod env;
pub mod guard;
pub mod hook;
pub mod meter;
pub use crate::process;
pub mod run;
pub mod sandbox;
pub mod session_meter;
pub mod stream_json;
pub mod transcript;
