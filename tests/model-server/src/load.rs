//! A bounded load generator: a steady rate for a fixed time, never more.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context as _, bail};

#[derive(clap::Args)]
pub struct Args {
    /// Where to send predictions, such as http://10.96.12.34:8080/predict.
    #[arg(long)]
    url: String,
    /// Requests per second (at most 500).
    #[arg(long, default_value_t = 20)]
    rps: u32,
    /// How long to send, in seconds (at most 3600).
    #[arg(long, default_value_t = 60)]
    seconds: u64,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.rps == 0 || args.rps > 500 {
        bail!("--rps must be between 1 and 500");
    }
    if args.seconds == 0 || args.seconds > 3600 {
        bail!("--seconds must be between 1 and 3600");
    }
    let url = reqwest::Url::parse(&args.url).context("--url must be a URL")?;
    // A Service balances connections, not requests: a new connection for each request
    // spreads them over the pods as many independent clients would.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let mut tick = tokio::time::interval(Duration::from_secs(1) / args.rps);
    let total = u64::from(args.rps) * args.seconds;
    let counts = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let mut inflight = tokio::task::JoinSet::new();
    let send = async {
        for _ in 0..total {
            tick.tick().await;
            let (http, url, counts) = (http.clone(), url.clone(), counts.clone());
            inflight.spawn(async move {
                let outcome = match http.get(url).send().await {
                    Ok(r) => r.status().as_u16().to_string(),
                    Err(e) if e.is_timeout() => "timeout".to_string(),
                    Err(_) => "error".to_string(),
                };
                if let Ok(mut counts) = counts.lock() {
                    *counts.entry(outcome).or_default() += 1;
                }
            });
            // Finished requests are reaped as we go: memory stays bounded by the rate.
            while inflight.try_join_next().is_some() {}
        }
    };
    // Ctrl-C (or SIGINT from a test) ends the load early; the summary is printed anyway.
    tokio::select! {
        () = send => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    let _ = tokio::time::timeout(Duration::from_secs(6), async { while inflight.join_next().await.is_some() {} }).await;
    let counts = counts.lock().map(|c| c.clone()).unwrap_or_default();
    let sent: u64 = counts.values().sum();
    let summary: Vec<String> = counts.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("sent {sent} requests to {}: {}", args.url, summary.join(" "));
    Ok(())
}
