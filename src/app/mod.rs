//! Use cases shared by the CLI and the HTTP server. Both edges call these;
//! neither re-implements them.

pub mod audit;
pub mod governance;
pub mod init;
pub mod scaffold;
