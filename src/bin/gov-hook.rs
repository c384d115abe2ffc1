//! `gov-hook`: gov's Claude Code hooks (`gov hook <event>`) in a program of
//! their own. Claude Code starts the PreToolUse hook before every tool
//! call; linked with nothing of gov but the hook, this program starts in
//! about a third of the time `gov` takes (a sixth of its relocations to
//! apply). `gov run` and `gov guard` write it into the settings when it is
//! installed beside `gov` (`runner::claude::hook_program`).

fn main() -> gov::cli::ExitCode {
    gov::cli::hook::run_program(std::env::args_os().skip(1))
}
