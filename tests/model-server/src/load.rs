//! A bounded load generator: a steady rate for a fixed time, never more.

use std::{collections::BTreeMap, time::Duration};

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
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let mut tick = tokio::time::interval(Duration::from_secs(1) / args.rps);
    let total = u64::from(args.rps) * args.seconds;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..total {
        tick.tick().await;
        let (http, url, tx) = (http.clone(), url.clone(), tx.clone());
        tokio::spawn(async move {
            let outcome = match http.get(url).send().await {
                Ok(r) => r.status().as_u16().to_string(),
                Err(e) if e.is_timeout() => "timeout".to_string(),
                Err(_) => "error".to_string(),
            };
            let _ = tx.send(outcome);
        });
    }
    drop(tx);
    let mut counts = BTreeMap::<String, u64>::new();
    while let Some(outcome) = rx.recv().await {
        *counts.entry(outcome).or_default() += 1;
    }
    let summary: Vec<String> = counts.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("sent {total} requests to {}: {}", args.url, summary.join(" "));
    Ok(())
}
