//! An example model server, and a load generator for it: what modelgate's tests and demo
//! release on the real node.
//!
//! `model-server serve` loads the model file that modelgate's init container verified
//! into the pod's mount, hashes it, and becomes Ready only if the digest is the one the
//! pod was promised (the `modelgate.dev/model-sha256` annotation, passed in through the
//! downward API): a file swapped under the pod is never served. It answers predictions
//! over HTTP and exports Prometheus metrics labelled with its revision.
//!
//! Its behaviour comes from the model file itself, so a bad model is just another validly
//! signed file that only the gates can catch (see [`Behavior`]).
//!
//! `model-server load` sends bounded traffic to a URL and prints what came back.

mod behavior;
mod load;
mod serve;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Serve(serve::Args),
    Load(load::Args),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve(args) => serve::run(args).await,
        Command::Load(args) => load::run(args).await,
    }
}
