//! Fetching over HTTPS with the limits TUF asks for: a byte cap on every file (endless
//! data), request timeouts and a minimum average rate (slow retrieval).

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use reqwest::{StatusCode, Url};

use super::TrustError;

/// Limits and trust anchors of the transport.
#[derive(Clone, Debug)]
pub struct TransportOptions {
    /// PEM certificates to trust instead of the system roots.
    pub ca_bundle: Option<Vec<u8>>,
    /// Allow `http://` to loopback hosts (the conformance client only).
    pub allow_http_loopback: bool,
    /// Time to connect and receive response headers.
    pub request_timeout: Duration,
    /// Longest wait for the next chunk of a body.
    pub idle_timeout: Duration,
    /// After `grace`, the average rate must stay above this many bytes per second.
    pub min_bytes_per_sec: u64,
    pub grace: Duration,
    /// Longest a whole metadata download (`get`) may take, however steadily it trickles:
    /// the rate floor alone lets a 5 MiB role take twenty minutes.
    pub metadata_deadline: Duration,
}

impl Default for TransportOptions {
    fn default() -> Self {
        Self {
            ca_bundle: None,
            allow_http_loopback: false,
            request_timeout: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(15),
            min_bytes_per_sec: 4096,
            grace: Duration::from_secs(10),
            metadata_deadline: Duration::from_secs(60),
        }
    }
}

/// An HTTPS client for one repository.
#[derive(Clone, Debug)]
pub struct Transport {
    client: reqwest::Client,
    options: TransportOptions,
}

impl Transport {
    pub fn new(options: TransportOptions) -> Result<Self, TrustError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(options.request_timeout)
            .read_timeout(options.idle_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .https_only(!options.allow_http_loopback);
        if let Some(pem) = &options.ca_bundle {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| TrustError::Insecure(format!("the CA bundle is not valid PEM: {e}")))?;
            if certs.is_empty() {
                return Err(TrustError::Insecure("the CA bundle holds no certificate".into()));
            }
            builder = builder.tls_certs_only(certs);
        }
        let client = builder.build().map_err(|e| TrustError::Insecure(format!("cannot build HTTPS client: {e}")))?;
        Ok(Self { client, options })
    }

    /// Refuses anything but https (or http to loopback when allowed).
    pub fn check_url(&self, url: &Url) -> Result<(), TrustError> {
        match url.scheme() {
            "https" => Ok(()),
            "http" if self.options.allow_http_loopback && is_loopback(url) => Ok(()),
            _ => Err(TrustError::Insecure(format!("{url}: only https:// repositories are allowed"))),
        }
    }

    /// GETs metadata at `url` into memory, refusing more than `limit` bytes or more time
    /// than `metadata_deadline`.
    pub async fn get(&self, url: &Url, limit: u64) -> Result<Vec<u8>, TrustError> {
        let mut body = Vec::new();
        let download = self.stream(url, limit, |chunk| {
            body.extend_from_slice(&chunk);
            Ok(())
        });
        match tokio::time::timeout(self.options.metadata_deadline, download).await {
            Ok(received) => received?,
            Err(_) => {
                return Err(TrustError::Fetch {
                    url: url.to_string(),
                    reason: format!("not complete within {:?} (slow retrieval)", self.options.metadata_deadline),
                });
            }
        };
        Ok(body)
    }

    /// GETs `url`, handing each chunk to `sink`, refusing more than `limit` bytes.
    /// Returns the number of bytes received.
    pub async fn stream(
        &self,
        url: &Url,
        limit: u64,
        sink: impl FnMut(Bytes) -> Result<(), TrustError>,
    ) -> Result<u64, TrustError> {
        let mut sink = sink;
        let (_, received) = self
            .stream_from(url, 0, limit, |part| match part {
                Body::Start(_) => Ok(()),
                Body::Data(chunk) => sink(chunk),
            })
            .await?;
        Ok(received)
    }

    /// GETs the bytes of `url` from `offset` on (a Range request when `offset` > 0),
    /// for a body of `length` bytes in all. A server that ignores the range (200), answers
    /// another one, or cannot satisfy it is asked for the whole body instead: `sink` is
    /// told the offset the body starts at (0 or `offset`) before the first chunk, so the
    /// caller never appends bytes to the wrong place. Returns that offset and the bytes
    /// received.
    pub async fn stream_from(
        &self,
        url: &Url,
        offset: u64,
        length: u64,
        mut sink: impl FnMut(Body) -> Result<(), TrustError>,
    ) -> Result<(u64, u64), TrustError> {
        self.check_url(url)?;
        let fetch_err = |reason: String| TrustError::Fetch { url: url.to_string(), reason };
        let mut response = self.send(url, offset).await?;
        let mut start = 0;
        if offset > 0 {
            match response.status() {
                StatusCode::PARTIAL_CONTENT if content_range_start(&response) == Some(offset) => start = offset,
                s if s == StatusCode::PARTIAL_CONTENT || s == StatusCode::RANGE_NOT_SATISFIABLE => {
                    response = self.send(url, 0).await?;
                }
                _ => {}
            }
        }
        match response.status() {
            StatusCode::PARTIAL_CONTENT if start == 0 => {
                return Err(fetch_err("HTTP 206 (a part of the file) to a request for all of it".into()));
            }
            s if s.is_success() => {}
            StatusCode::NOT_FOUND | StatusCode::FORBIDDEN => return Err(TrustError::NotFound { url: url.to_string() }),
            s => return Err(fetch_err(format!("HTTP {s}"))),
        }
        let limit = length.saturating_sub(start);
        if response.content_length().is_some_and(|n| n > limit) {
            return Err(TrustError::TooLarge { what: url.to_string(), limit: length });
        }
        sink(Body::Start(start))?;
        let begun = Instant::now();
        let mut received = 0u64;
        let mut body = response.bytes_stream();
        loop {
            let next = tokio::time::timeout(self.options.idle_timeout, body.next())
                .await
                .map_err(|_| fetch_err(format!("no data for {:?} (slow retrieval)", self.options.idle_timeout)))?;
            let Some(chunk) = next else { break };
            let chunk = chunk.map_err(|e| fetch_err(error_chain(&e)))?;
            received += chunk.len() as u64;
            if received > limit {
                return Err(TrustError::TooLarge { what: url.to_string(), limit: length });
            }
            sink(Body::Data(chunk))?;
            let elapsed = begun.elapsed();
            if elapsed > self.options.grace
                && received < self.options.min_bytes_per_sec.saturating_mul(elapsed.as_secs().max(1))
            {
                return Err(fetch_err(format!(
                    "{received} bytes in {elapsed:?} is below {} bytes/s (slow retrieval)",
                    self.options.min_bytes_per_sec
                )));
            }
        }
        Ok((start, received))
    }

    async fn send(&self, url: &Url, offset: u64) -> Result<reqwest::Response, TrustError> {
        let mut request = self.client.get(url.clone());
        if offset > 0 {
            request = request.header(reqwest::header::RANGE, format!("bytes={offset}-"));
        }
        tokio::time::timeout(self.options.request_timeout, request.send())
            .await
            .map_err(|_| TrustError::Fetch {
                url: url.to_string(),
                reason: format!("no response within {:?}", self.options.request_timeout),
            })?
            .map_err(|e| TrustError::Fetch { url: url.to_string(), reason: error_chain(&e) })
    }
}

/// What a streamed GET hands its sink: where the body starts, then its chunks.
pub enum Body {
    Start(u64),
    Data(Bytes),
}

/// The first byte of a `Content-Range: bytes <first>-<last>/<total>` answer.
fn content_range_start(response: &reqwest::Response) -> Option<u64> {
    let value = response.headers().get(reqwest::header::CONTENT_RANGE)?.to_str().ok()?;
    let (first, _) = value.strip_prefix("bytes ")?.split_once('-')?;
    first.trim().parse().ok()
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}
