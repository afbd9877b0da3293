#![forbid(unsafe_code)]

use clap::Parser;
use modelgate::cli::Cli;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    modelgate::telemetry::init(cli.log_format);
    match cli.command.run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // One line a person can act on, with the chain of causes.
            eprintln!("modelgate: {}", modelgate::cli::render_error(&err));
            std::process::ExitCode::FAILURE
        }
    }
}
