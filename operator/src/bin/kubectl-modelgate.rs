#![forbid(unsafe_code)]
//! The kubectl plugin: `kubectl modelgate status|pause|resume|promote|abort|retry|rollback|history|plan`.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    modelgate::plugin::main().await
}
