//! `gov hook pre-tool-use`: Claude Code's PreToolUse hook. Reads the tool
//! call on stdin, prints allow or deny on stdout, always exits 0 (a deny is
//! an answer, not an error); see [`crate::runner::hook`].

use std::io::{Read, Write};

use super::{ExitCode, Failure};
use crate::runner::hook::{self, HookOutput};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub event: Event,
}

#[derive(Debug, clap::Subcommand)]
pub enum Event {
    /// Ask the policy set whether a tool call may run (Claude Code PreToolUse).
    PreToolUse,
    /// Report a `gov guard` session's usage from its transcript (Claude
    /// Code Stop and SessionEnd hooks).
    Meter,
}

pub fn run(args: Args) -> Result<ExitCode, Failure> {
    match args.event {
        Event::PreToolUse => pre_tool_use(),
        Event::Meter => meter(),
    }
}

/// What `gov-hook --help` prints.
pub const PROGRAM_USAGE: &str = "\
gov-hook: gov's Claude Code hooks, as `gov hook` runs them, in a program
that starts faster (gov writes it into an agent's settings when it is
installed beside `gov`).

Usage: gov-hook <EVENT>

Events:
  pre-tool-use  Ask the policy set whether a tool call may run (PreToolUse)
  meter         Report a `gov guard` session's usage (Stop, SessionEnd)
";

/// `gov-hook <event>` (the `gov-hook` binary): [`run`] with its arguments
/// read by hand, so that the program links no command-line parser and
/// nothing of gov but the hook.
pub fn run_program(args: impl IntoIterator<Item = std::ffi::OsString>) -> ExitCode {
    let args: Vec<std::ffi::OsString> = args.into_iter().collect();
    let words: Vec<Option<&str>> = args.iter().map(|a| a.to_str()).collect();
    let event = match words.as_slice() {
        [Some("pre-tool-use")] => Event::PreToolUse,
        [Some("meter")] => Event::Meter,
        [Some("-h" | "--help")] => {
            print!("{PROGRAM_USAGE}");
            return ExitCode::Ok;
        }
        [Some("-V" | "--version")] => {
            println!("gov-hook {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::Ok;
        }
        _ => {
            let given: Vec<String> = args
                .iter()
                .map(|a| format!("`{}`", a.to_string_lossy()))
                .collect();
            let given = match given.is_empty() {
                true => "no event".to_string(),
                false => given.join(" "),
            };
            eprint!("error: gov-hook takes one event, `pre-tool-use` or `meter` (got {given})\n\n{PROGRAM_USAGE}");
            return ExitCode::Config;
        }
    };
    match run(Args { event }) {
        Ok(code) => code,
        Err(f) => {
            eprintln!("error: {}", f.message);
            f.code
        }
    }
}

/// The metering hook: reads the session's transcript and reports its
/// usage. It decides nothing, so it prints nothing and exits 0; what fails
/// goes to stderr (Claude Code shows it), and the next PreToolUse hook,
/// which meters too, fails closed on it.
fn meter() -> Result<ExitCode, Failure> {
    let deadline = hook::deadline_from_env(|k| std::env::var(k).ok());
    std::thread::spawn(move || {
        std::thread::sleep(deadline);
        eprintln!(
            "gov hook meter: gave up after its deadline of {} s",
            deadline.as_secs()
        );
        std::process::exit(0);
    });
    let mut stdin = String::new();
    let result = std::io::stdin()
        .take(16 * 1024 * 1024)
        .read_to_string(&mut stdin)
        .map_err(|e| hook::HookError::BadInput(e.to_string()))
        .and_then(|_| hook::meter(&stdin, |k| std::env::var(k).ok()));
    if let Err(e) = result {
        eprintln!("gov hook meter: {}", crate::domain::errors::error_chain(&e));
    }
    Ok(ExitCode::Ok)
}

/// Whoever answers first (the hook or its deadline) prints; the other
/// stays silent.
static ANSWERED: std::sync::Mutex<bool> = std::sync::Mutex::new(false);

/// Prints the answer unless one was printed already. `false` when stdout
/// cannot be written.
fn answer_once(answer: &HookOutput) -> bool {
    let mut done = ANSWERED.lock().unwrap_or_else(|e| e.into_inner());
    if *done {
        return true;
    }
    *done = true;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", answer.to_json())
        .and_then(|_| out.flush())
        .is_ok()
}

fn pre_tool_use() -> Result<ExitCode, Failure> {
    // The hook never outlives its deadline: past it, deny and exit, whatever
    // the request or the wait is doing.
    let deadline = hook::deadline_from_env(|k| std::env::var(k).ok());
    std::thread::spawn(move || {
        std::thread::sleep(deadline);
        answer_once(&HookOutput::deny(format!(
            "gov: tool call denied: the policy check took longer than its deadline of {} s",
            deadline.as_secs()
        )));
        std::process::exit(0);
    });
    let mut stdin = String::new();
    let answer = match std::io::stdin()
        .take(16 * 1024 * 1024)
        .read_to_string(&mut stdin)
    {
        Err(e) => HookOutput::deny(format!(
            "gov: tool call denied: cannot read the hook input: {e}"
        )),
        // A panic must not become a non-zero exit: Claude Code would then
        // let the tool run.
        Ok(_) => std::panic::catch_unwind(|| hook::run(&stdin, |k| std::env::var(k).ok()))
            .unwrap_or_else(|_| {
                HookOutput::deny("gov: tool call denied: the hook failed unexpectedly")
            }),
    };
    if !answer_once(&answer) {
        // Exit 2 is Claude Code's "block this call" when stdout is unusable.
        eprintln!("gov hook: cannot write the answer; blocking the tool call");
        return Ok(ExitCode::Config);
    }
    Ok(ExitCode::Ok)
}
