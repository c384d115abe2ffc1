use clap::Parser;

fn main() -> gov::cli::ExitCode {
    let cli = gov::cli::Cli::parse();
    gov::cli::init_logging();
    gov::cli::run(cli)
}
