//! The one integration-test binary. Each area of gov has a module here;
//! `support` holds the shared harness (temporary governance repositories,
//! the `gov` binary, servers on 127.0.0.1:0).

mod agents;
mod audit;
mod budgets;
mod cli_docs;
mod dashboard;
mod dashboard_policy;
mod demo;
mod faults;
mod forge;
mod guard;
mod impact;
mod init;
mod layers;
mod live_run;
mod policy;
mod policy_remote;
mod props;
mod remote;
mod runner;
mod sandbox;
mod security;
mod serve;
mod server;
mod support;
mod tamper;
mod tools;
mod trust;
mod watchdog;
mod writepath;
