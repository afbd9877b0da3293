//! The webhook gate: POST the rollout context as JSON; a 2xx answer passes, any other
//! answer fails. Timeouts and connection errors are retried, then fail: an evaluator
//! that cannot be reached never passes a model.

use std::{future::Future, pin::Pin, time::Duration};

use super::{Gate, GateContext};
use crate::plan::GateResult;

pub struct Webhook {
    url: reqwest::Url,
    http: reqwest::Client,
    retries: u32,
}

impl Webhook {
    pub fn new(url: String, timeout: Duration, retries: u32, ca_bundle: Option<Vec<u8>>) -> Result<Self, String> {
        let url = reqwest::Url::parse(&url).map_err(|e| format!("webhook.url {url:?} is not a URL: {e}"))?;
        if url.scheme() != "https" {
            return Err(format!("webhook.url {url} must be https"));
        }
        let mut builder = reqwest::Client::builder().timeout(timeout).https_only(true);
        if let Some(pem) = ca_bundle {
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| format!("webhook caBundle is not PEM: {e}"))?;
            if certs.is_empty() {
                return Err("webhook caBundle holds no certificate".into());
            }
            builder = builder.tls_certs_only(certs);
        }
        let http = builder.build().map_err(|e| format!("cannot build an HTTPS client: {e}"))?;
        Ok(Self { url, http, retries })
    }

    async fn call(&self, ctx: &GateContext) -> (GateResult, String) {
        let mut last = String::new();
        for attempt in 0..=self.retries {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
            match self.http.post(self.url.clone()).json(ctx).send().await {
                Ok(response) => {
                    let code = response.status();
                    let body = response.text().await.unwrap_or_default();
                    let body: String = body.trim().chars().take(200).collect();
                    let detail = if body.is_empty() { format!("HTTP {code}") } else { format!("HTTP {code}: {body}") };
                    let result = if code.is_success() { GateResult::Pass } else { GateResult::Fail };
                    return (result, detail);
                }
                Err(e) => last = format!("no answer after {} attempt(s): {e}", attempt + 1),
            }
        }
        (GateResult::Fail, last)
    }
}

impl Gate for Webhook {
    fn evaluate<'a>(&'a self, ctx: &'a GateContext) -> Pin<Box<dyn Future<Output = (GateResult, String)> + Send + 'a>> {
        Box::pin(self.call(ctx))
    }
}
