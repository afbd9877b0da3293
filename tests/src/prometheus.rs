//! A real Prometheus (Debian's package) on loopback, scraping a test exporter every
//! second; stopped when dropped, and by `timeout` if the test process dies first.

use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::Context;

use crate::harness::eventually;

pub struct Prometheus {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `http://{target}/metrics`; returns once it is ready.
    pub async fn start(target: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
                 scrape_configs:\n  - job_name: models\n    static_configs: [{{targets: ['{target}']}}]\n"
            ),
        )?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new("timeout")
            .args(["1800", "prometheus"])
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=error")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("start prometheus (tests/setup installs it from Debian)")?;
        let prometheus = Self { child, port, _dir: dir };
        let ready = format!("{}/-/ready", prometheus.url());
        eventually("Prometheus ready", Duration::from_secs(30), || async {
            Ok(reqwest::get(&ready).await.ok().filter(|r| r.status().is_success()).map(|_| ()))
        })
        .await?;
        Ok(prometheus)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The value of an instant query, once Prometheus has one.
    pub async fn wait_for_value(&self, query: &str, timeout: Duration) -> anyhow::Result<f64> {
        let mut url = reqwest::Url::parse(&format!("{}/api/v1/query", self.url()))?;
        url.query_pairs_mut().append_pair("query", query);
        eventually(&format!("a value for {query}"), timeout, || async {
            let body: serde_json::Value = reqwest::get(url.clone()).await?.json().await?;
            Ok(body["data"]["result"][0]["value"][1].as_str().and_then(|v| v.parse().ok()))
        })
        .await
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}
