//! The pure core: no file system, processes, Git, SQLite, HTTP or async here.
//! The clock is passed in. Everything that decides something lives below this
//! module so that it can be tested with plain values.

pub mod audit;
pub mod budget;
pub mod credential;
pub mod errors;
pub mod event;
pub mod forge;
pub mod ids;
pub mod money;
pub mod paths;
pub mod policy;
pub mod policy_diff;
pub mod policy_scope;
pub mod proposal;
pub mod request;
pub mod run;
pub mod watchdog;
