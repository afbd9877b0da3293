//! The server: load and check the model, then answer predictions, probes and metrics.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Instant,
};

use anyhow::Context as _;
use aws_lc_rs::digest;
use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};
use tokio::io::AsyncReadExt as _;

use crate::behavior::{Behavior, HEADER_MAX};

/// How long a terminating server keeps answering (not Ready) before it stops.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(3);

#[derive(clap::Args)]
pub struct Args {
    /// The model file, or the directory of a model of several files (modelgate's
    /// read-only mount, with the manifest modelgate wrote).
    #[arg(long, default_value = "/models/model.onnx")]
    model: PathBuf,
    /// The model is an OCI image the node mounted at `--model` (a directory of files),
    /// pulled and checked by the node against the promised digest: the server reads every
    /// file (its load) and takes the digest as promised.
    #[arg(long)]
    image: bool,
    /// The sha256 the pod was promised; without it the server never becomes Ready.
    #[arg(long, env = "MODEL_SHA256")]
    expect_sha256: Option<String>,
    /// The revision this pod serves, for the metrics' `revision` label.
    #[arg(long, env = "REVISION", default_value = "")]
    revision: String,
    #[arg(long, default_value = "0.0.0.0:8080")]
    listen: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    code: u16,
    revision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RevisionLabel {
    revision: String,
}

struct Server {
    revision: String,
    digest: String,
    behavior: Behavior,
    /// Readiness as the probe sees it: false while loading and while draining.
    ready: AtomicBool,
    /// The model is loaded and is the one promised: predictions are answered (also
    /// while draining).
    serving: AtomicBool,
    served: AtomicU64,
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RevisionLabel, Histogram>,
    /// Memory the model says it holds (kept, never read).
    _ballast: Vec<u8>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let promised = args.expect_sha256.as_deref().map(str::to_ascii_lowercase);
    let (digest, head) = if args.image {
        load_image(&args.model, promised.as_deref()).await?
    } else if args.model.is_dir() {
        load_set(&args.model).await?
    } else {
        hash(&args.model).await?
    };
    let behavior = Behavior::parse(&head)?;
    let trusted = promised.as_deref() == Some(digest.as_str());
    if !trusted {
        eprintln!(
            "model {} has sha256 {digest}, but this pod was promised {}: not serving it",
            args.model.display(),
            promised.as_deref().unwrap_or("nothing (set MODEL_SHA256)")
        );
    }
    let ballast = vec![1u8; usize::try_from(behavior.memory_mib).unwrap_or(0) * 1024 * 1024];

    let mut registry = Registry::default();
    let requests = Family::<RequestLabels, Counter>::default();
    registry.register("model_requests", "Predictions answered, by HTTP status code", requests.clone());
    let latency = Family::<RevisionLabel, Histogram>::new_with_constructor(|| {
        Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5])
    });
    registry.register("model_request_duration_seconds", "Time to answer a prediction", latency.clone());

    let server = Arc::new(Server {
        revision: args.revision.clone(),
        digest: digest.clone(),
        behavior: behavior.clone(),
        ready: AtomicBool::new(false),
        serving: AtomicBool::new(false),
        served: AtomicU64::new(0),
        registry,
        requests,
        latency,
        _ballast: ballast,
    });
    println!(
        "loaded {} (sha256 {digest}, revision {:?}) in {} ms; behaviour {behavior:?}",
        args.model.display(),
        args.revision,
        started.elapsed().as_millis()
    );

    if let Some(code) = behavior.exit {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        eprintln!("the model says: exit {code}");
        std::process::exit(code);
    }
    {
        let server = server.clone();
        tokio::spawn(async move {
            tokio::time::sleep(server.behavior.load).await;
            if trusted {
                server.serving.store(true, Ordering::SeqCst);
            }
            if trusted && !server.behavior.never_ready {
                server.ready.store(true, Ordering::SeqCst);
                println!("ready");
            }
        });
    }

    let draining = server.clone();
    let app = Router::new()
        .route("/predict", get(predict).post(predict))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .with_state(server);
    let listener =
        tokio::net::TcpListener::bind(&args.listen).await.with_context(|| format!("listen on {}", args.listen))?;
    let shutdown = async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
        // Endpoints learn of a terminating pod a moment after it does: keep answering
        // (not Ready) while clients move away, then stop.
        draining.ready.store(false, Ordering::SeqCst);
        tokio::time::sleep(DRAIN).await;
    };
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await?;
    Ok(())
}

/// The file's sha256, streamed, and its first bytes (the behaviour header).
async fn hash(path: &PathBuf) -> anyhow::Result<(String, Vec<u8>)> {
    let mut file = tokio::fs::File::open(path).await.with_context(|| format!("open the model {}", path.display()))?;
    let mut ctx = digest::Context::new(&digest::SHA256);
    let mut head = Vec::with_capacity(HEADER_MAX);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).await?;
        let Some(chunk) = buf.get(..n) else { break };
        if n == 0 {
            break;
        }
        if head.len() < HEADER_MAX {
            let take = (HEADER_MAX - head.len()).min(n);
            head.extend_from_slice(chunk.get(..take).unwrap_or_default());
        }
        ctx.update(chunk);
    }
    Ok((hex::encode(ctx.finish()), head))
}

/// An image the node mounted: every file below `dir` is read (the load); the first, by
/// sorted path, carries the behaviour header. The digest is the promised one: the node
/// pulled the image by it and checked every blob against it.
async fn load_image(dir: &std::path::Path, promised: Option<&str>) -> anyhow::Result<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let mut entries = tokio::fs::read_dir(&d).await.with_context(|| format!("read {}", d.display()))?;
        while let Some(entry) = entries.next_entry().await? {
            let kind = entry.file_type().await?;
            if kind.is_dir() {
                dirs.push(entry.path());
            } else if kind.is_file() {
                files.push(entry.path());
            }
        }
    }
    files.sort();
    anyhow::ensure!(!files.is_empty(), "the image mounted at {} holds no files", dir.display());
    let mut head = Vec::new();
    for (i, path) in files.iter().enumerate() {
        let (_, first) = hash(path).await?;
        if i == 0 {
            head = first;
        }
    }
    println!("image at {}: {} files, as the node verified them", dir.display(), files.len());
    Ok((promised.unwrap_or_default().to_string(), head))
}

/// A model of several files: the promise is the manifest's sha256; every file it lists
/// is read and checked (this is the load), the first one carries the behaviour header.
async fn load_set(dir: &std::path::Path) -> anyhow::Result<(String, Vec<u8>)> {
    #[derive(serde::Deserialize)]
    struct Manifest {
        files: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        path: String,
        sha256: String,
    }
    let manifest_path = dir.join(".modelgate-manifest.json");
    let bytes = tokio::fs::read(&manifest_path).await.with_context(|| format!("read {}", manifest_path.display()))?;
    let digest = hex::encode(digest::digest(&digest::SHA256, &bytes));
    let manifest: Manifest = serde_json::from_slice(&bytes).context("parse the manifest")?;
    let mut head = Vec::new();
    for (i, entry) in manifest.files.iter().enumerate() {
        let (sha256, first) = hash(&dir.join(&entry.path)).await?;
        anyhow::ensure!(
            sha256 == entry.sha256,
            "{} has sha256 {sha256}, the manifest says {}",
            entry.path,
            entry.sha256
        );
        if i == 0 {
            head = first;
        }
    }
    Ok((digest, head))
}

async fn predict(State(server): State<Arc<Server>>) -> impl IntoResponse {
    let start = Instant::now();
    let n = server.served.fetch_add(1, Ordering::Relaxed) + 1;
    if !server.behavior.latency.is_zero() {
        tokio::time::sleep(server.behavior.latency).await;
    }
    let (code, body) = if !server.serving.load(Ordering::SeqCst) {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n".to_string())
    } else if server.behavior.errors_every > 0 && n % server.behavior.errors_every == 0 {
        (StatusCode::INTERNAL_SERVER_ERROR, "the model failed\n".to_string())
    } else {
        let digest = server.digest.get(..12).unwrap_or_default();
        let score = (n % 100) as f64 / 100.0;
        (StatusCode::OK, format!("{{\"revision\":\"{}\",\"model\":\"{digest}\",\"score\":{score}}}\n", server.revision))
    };
    server.requests.get_or_create(&RequestLabels { code: code.as_u16(), revision: server.revision.clone() }).inc();
    server
        .latency
        .get_or_create(&RevisionLabel { revision: server.revision.clone() })
        .observe(start.elapsed().as_secs_f64());
    (code, body)
}

async fn ready(State(server): State<Arc<Server>>) -> StatusCode {
    if server.ready.load(Ordering::SeqCst) { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }
}

async fn metrics(State(server): State<Arc<Server>>) -> impl IntoResponse {
    let mut body = String::new();
    match encode(&mut body, &server.registry) {
        Ok(()) => {
            (StatusCode::OK, [("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")], body)
        }
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, [("content-type", "text/plain")], String::new()),
    }
}
