#![forbid(unsafe_code)]

use clap::Parser;
use modelgate::cli::Cli;

// jemalloc keeps the resident size close to the live data under the operator's pattern
// (bursts of short-lived objects from watch events); glibc's per-thread arenas hold on
// to it. See the scale benchmark in docs/benchmarks.md.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    modelgate::telemetry::init(cli.log_format);
    // jemalloc returns freed pages to the system only while the program allocates,
    // unless a background thread does it: without one, an operator at rest after a
    // burst (a restart's lists, a thousand reconciles) kept its peak as its size.
    #[cfg(not(target_env = "msvc"))]
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        tracing::debug!(error = %e, "jemalloc background purging not enabled");
    }
    // The conformance client protocol `modelgate tuf` implements says 1 for any failure.
    let refusal_code = cli.command.has_refusal_exit_code();
    match cli.command.run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // One line a person can act on, with the chain of causes.
            eprintln!("modelgate: {}", modelgate::cli::render_error(&err));
            // A refusal to trust (as opposed to, say, a network error) has its own code,
            // so the operator can tell a pod's failed verification from a flaky fetch.
            let refused = err
                .chain()
                .any(|e| e.downcast_ref::<modelgate::trust::TrustError>().is_some_and(|t| !t.is_transient()));
            if refused && refusal_code {
                std::process::ExitCode::from(modelgate::api::FETCH_EXIT_UNTRUSTED as u8)
            } else {
                std::process::ExitCode::FAILURE
            }
        }
    }
}
