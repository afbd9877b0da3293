//! The webhook gate: POST the rollout context as JSON; a 2xx answer passes, any other
//! answer fails. Timeouts and connection errors are retried, then fail: an evaluator
//! that cannot be reached never passes a model.

use std::{future::Future, pin::Pin, time::Duration};

use tracing::debug;

use super::{
    Gate, GateContext,
    egress::{self, EgressPolicy},
};
use crate::plan::GateResult;

pub struct Webhook {
    url: reqwest::Url,
    timeout: Duration,
    retries: u32,
    ca_bundle: Option<Vec<u8>>,
    egress: EgressPolicy,
}

impl Webhook {
    pub fn new(
        url: String,
        timeout: Duration,
        retries: u32,
        ca_bundle: Option<Vec<u8>>,
        egress: EgressPolicy,
    ) -> Result<Self, String> {
        let url = reqwest::Url::parse(&url).map_err(|_| "webhook.url is not a URL".to_string())?;
        Ok(Self { url, timeout, retries, ca_bundle, egress })
    }

    /// Status gets the HTTP code and our own words; the reply's text goes to the
    /// operator's log only.
    async fn call(&self, ctx: &GateContext) -> (GateResult, String) {
        let (host, addrs) = match self.egress.resolve(&self.url, false).await {
            Ok(r) => r,
            Err(refused) => return (GateResult::Fail, format!("not called: {refused}")),
        };
        let http = match egress::client(&host, &addrs, self.timeout, self.ca_bundle.as_deref()) {
            Ok(c) => c,
            Err(e) => return (GateResult::Fail, e),
        };
        let mut last = String::new();
        for attempt in 0..=self.retries {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
            match http.post(self.url.clone()).json(ctx).send().await {
                Ok(response) => {
                    let code = response.status();
                    let body = egress::read_capped(response).await.unwrap_or_default();
                    let text: String = String::from_utf8_lossy(&body).chars().take(200).collect();
                    debug!(code = code.as_u16(), reply = %text.escape_debug(), "webhook gate answered");
                    let result = if code.is_success() { GateResult::Pass } else { GateResult::Fail };
                    let detail = if code.is_redirection() {
                        format!("HTTP {} (a redirect, which gates do not follow)", code.as_u16())
                    } else {
                        format!("HTTP {}", code.as_u16())
                    };
                    return (result, detail);
                }
                Err(e) => {
                    debug!(error = %e, attempt, "webhook gate: no answer");
                    last = format!("no answer after {} attempt(s)", attempt + 1);
                }
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
