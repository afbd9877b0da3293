//! The `modelgate` command line: one module per subcommand.

mod crd;
mod fetch;
mod run;
mod tuf;

use clap::{Parser, Subcommand};

use crate::telemetry::LogFormat;

/// modelgate releases machine-learning models safely on Kubernetes.
#[derive(Debug, Parser)]
#[command(name = "modelgate", version, about, propagate_version = true)]
pub struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "MODELGATE_LOG_FORMAT")]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the operator (in a cluster, or outside it with a kubeconfig).
    Run(run::Run),
    /// Print the CustomResourceDefinitions, or write them to a directory.
    Crd(crd::Crd),
    /// Download a model target, verified by TUF, into a file (the init container).
    Fetch(fetch::Fetch),
    /// Verify a model target against its TUF repository and print what was verified.
    Verify(fetch::Verify),
    /// A TUF client following the tuf-conformance client protocol.
    Tuf(tuf::Tuf),
}

impl Command {
    /// Whether a refusal to trust exits with `FETCH_EXIT_UNTRUSTED` (3) rather than 1:
    /// `fetch` (the operator reads the init container's code) and `verify`; never `tuf`,
    /// whose protocol fixes its codes.
    pub fn has_refusal_exit_code(&self) -> bool {
        matches!(self, Command::Fetch(_) | Command::Verify(_))
    }

    pub async fn run(self) -> anyhow::Result<()> {
        match self {
            Command::Run(cmd) => cmd.run().await,
            Command::Crd(cmd) => cmd.run().await,
            Command::Fetch(cmd) => cmd.run().await,
            Command::Verify(cmd) => cmd.run().await,
            Command::Tuf(cmd) => cmd.run().await,
        }
    }
}

/// Renders an error and its causes on one line: `what failed: because: because`.
pub fn render_error(err: &anyhow::Error) -> String {
    err.chain().map(ToString::to_string).collect::<Vec<_>>().join(": ")
}
