use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = gov::cli::Cli::parse();
    gov::cli::init_logging();
    let code = gov::cli::run(cli);
    std::process::ExitCode::from(code as u8)
}
