//! A real Prometheus (Debian's package), scraping a test exporter every second from
//! loopback, or the real node's model pods (found through the API server) from the pod
//! gateway, where an operator in a pod reaches it too; stopped when dropped, and by
//! `timeout` if the test process dies first.

use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::Context;

use crate::harness::eventually;

pub struct Prometheus {
    child: Child,
    host: String,
    discovery: Option<tokio::task::JoinHandle<()>>,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `http://{target}/metrics`, its series labelled with
    /// `namespace` as Kubernetes discovery would; returns once it is ready.
    pub async fn start(target: &str, namespace: &str) -> anyhow::Result<Self> {
        let config = format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             scrape_configs:\n  - job_name: models\n    \
             static_configs: [{{targets: ['{target}'], labels: {{namespace: '{namespace}'}}}}]\n"
        );
        Self::run_in(tempfile::tempdir()?, &config, "127.0.0.1").await
    }

    /// Starts Prometheus on the pod gateway scraping every model pod of `namespace` on
    /// port 8080 every 2 s, with the pod's namespace, release and role (`modelgate.dev/role`) as labels. Debian's
    /// Prometheus has no Kubernetes discovery: a task here lists the pods every second
    /// and writes them as a file_sd target file.
    pub async fn scraping_pods(client: &kube::Client, namespace: &str) -> anyhow::Result<Self> {
        // In Prometheus' own temporary directory: removed with it when the test ends.
        let dir = tempfile::tempdir()?;
        let targets = dir.path().join("targets.json");
        std::fs::write(&targets, "[]")?;
        let config = format!(
            "global: {{scrape_interval: 2s, evaluation_interval: 2s}}\n\
             scrape_configs:\n  - job_name: models\n    \
             file_sd_configs: [{{files: ['{}'], refresh_interval: 1s}}]\n",
            targets.display()
        );
        let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::namespaced(client.clone(), namespace);
        let path = targets.clone();
        let namespace = namespace.to_string();
        let discovery = tokio::spawn(async move {
            let params = kube::api::ListParams::default().labels(modelgate::api::LABEL_RELEASE);
            loop {
                if let Ok(list) = pods.list(&params).await {
                    let groups: Vec<serde_json::Value> = list
                        .items
                        .iter()
                        .filter_map(|p| {
                            let ip = p.status.as_ref()?.pod_ip.clone()?;
                            let release = p.metadata.labels.as_ref()?.get(modelgate::api::LABEL_RELEASE)?.clone();
                            let pod = p.metadata.name.clone()?;
                            let role = p.metadata.labels.as_ref()?.get(modelgate::api::LABEL_ROLE).cloned().unwrap_or_default();
                            Some(serde_json::json!({"targets": [format!("{ip}:8080")], "labels": {"namespace": namespace, "release": release, "pod": pod, "role": role}}))
                        })
                        .collect();
                    let tmp = path.with_extension("tmp");
                    if std::fs::write(&tmp, serde_json::to_vec(&groups).unwrap_or_default()).is_ok() {
                        let _ = std::fs::rename(&tmp, &path);
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        let mut prometheus = Self::run_in(dir, &config, crate::tuf::POD_GATEWAY).await?;
        prometheus.discovery = Some(discovery);
        Ok(prometheus)
    }

    async fn run_in(dir: tempfile::TempDir, config_text: &str, host: &str) -> anyhow::Result<Self> {
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, config_text)?;
        let port = TcpListener::bind(format!("{host}:0"))?.local_addr()?.port();
        // Stops by itself: after MODELGATE_SERVER_TTL seconds (as the test servers do), 30 minutes by default.
        let ttl = std::env::var("MODELGATE_SERVER_TTL").unwrap_or_else(|_| "1800".into());
        let child = Command::new("timeout")
            .args([ttl.as_str(), "prometheus"])
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={host}:{port}"))
            .arg("--log.level=error")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("start prometheus (tests/setup installs it from Debian)")?;
        let prometheus = Self { child, host: host.to_string(), discovery: None, port, _dir: dir };
        let ready = format!("{}/-/ready", prometheus.url());
        eventually("Prometheus ready", Duration::from_secs(30), || async {
            Ok(reqwest::get(&ready).await.ok().filter(|r| r.status().is_success()).map(|_| ()))
        })
        .await?;
        Ok(prometheus)
    }

    pub fn url(&self) -> String {
        format!("http://{}:{}", self.host, self.port)
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
        if let Some(discovery) = self.discovery.take() {
            discovery.abort();
        }
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}
