//! Use cases shared by the CLI and the HTTP server. Both edges call these;
//! neither re-implements them.

pub mod agents;
pub mod audit;
pub mod clock;
pub mod credentials;
pub mod error;
pub mod governance;
pub mod init;
pub mod orphans;
pub mod policy_change;
pub mod policy_files;
pub mod policy_report;
pub mod proposals;
pub mod recover;
pub mod remote;
pub mod replay;
pub mod run_budget;
pub mod runs;
pub mod scaffold;
pub mod service;
pub mod tokens;
pub mod tool_calls;
pub mod watchdog;

/// Turns libgit2's object cache off and bounds its pack mappings, for
/// this process (see [`crate::store::git_memory`]).
pub use crate::store::git_memory::limit as limit_git_memory;
