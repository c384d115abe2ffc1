//! `gov approve ID [--note N] [--final]` and `gov reject ID ...`: through
//! the running server with the operator's token when one answers, else
//! directly on the repository through the same use case (the chain lock
//! keeps the two from racing).

use std::path::PathBuf;

use crate::wire::{DecisionRequest, ProposalDecided};

use super::http::Client;
use super::{ExitCode, Failure};
use crate::app::proposals::{decide_in_person, CheckoutState, DecisionInput};
use crate::app::service::Service;
use crate::config::Settings;
use crate::domain::proposal::Verdict;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The proposal id.
    pub id: String,
    /// A note recorded with the decision.
    #[arg(long)]
    pub note: Option<String>,
    /// The decision is final (the agent should not propose it again).
    #[arg(long)]
    pub r#final: bool,
}

pub fn run(args: Args, verdict: Verdict, repo: Option<PathBuf>) -> Result<ExitCode, Failure> {
    let root = super::repo_root(repo)?;
    let settings = Settings::load(&root)?;
    let client = Client::new(&settings);
    if client.is_up() {
        let request = DecisionRequest {
            decision: verdict,
            final_: args.r#final,
            note: args.note,
            // The person at the terminal sees the file in their checkout.
            wait_for_checkout: true,
        };
        let decided: ProposalDecided = client
            .post(&format!("/proposals/{}/decision", args.id), &request)?
            .ok_as()?;
        println!(
            "{}",
            decided_line(
                &decided.proposal_id,
                decided.status.as_str(),
                decided.merge_commit.as_deref(),
                &settings.main_branch
            )
        );
        if decided.checkout_waits {
            println!(
                "{}",
                checkout_waits_line("the server puts them there once it lets go")
            );
        }
        return Ok(ExitCode::Ok);
    }
    let svc = Service::open(&settings)?;
    let input = DecisionInput {
        verdict,
        note: args.note,
        final_: args.r#final,
    };
    let (p, checkout) = decide_in_person(&svc, &args.id, &input, &settings.operator_name)?;
    println!(
        "{}",
        decided_line(
            &p.proposal_id,
            p.status.as_str(),
            p.merge_commit.as_deref(),
            &settings.main_branch
        )
    );
    if checkout == CheckoutState::Waits {
        println!(
            "{}",
            checkout_waits_line(
                "`gov serve` puts them there as it starts, once the `git` command is done"
            )
        );
    }
    Ok(ExitCode::Ok)
}

/// What `gov approve` prints when a `git` command kept the approved files
/// out of the checkout for now; `then` says what puts them there.
fn checkout_waits_line(then: &str) -> String {
    format!(
        "note: a `git` command holds the Git index (`.git/index.lock`), so the approved files are not in the checkout yet (`git status` shows them undone until then); {then}"
    )
}

/// What `gov approve` and `gov reject` print: "proposal `ID` approved:
/// merged into main as COMMIT" or "proposal `ID` rejected".
fn decided_line(id: &str, status: &str, merge: Option<&str>, main: &str) -> String {
    match merge {
        Some(c) => format!("proposal `{id}` {status}: merged into {main} as {c}"),
        None => format!("proposal `{id}` {status}"),
    }
}
