//! Downloading a verified model into a directory that appears whole or not at all.
//!
//! Layout under the volume root: `.partial/<n>` holds file n of the set while it
//! downloads (kept across restarts of the fetch, so a retry resumes it with a Range
//! request), `.incoming/` the files already verified, and `model/` the complete set:
//! `.incoming` is renamed to `model` in one step once every file and the manifest are
//! in place. Serving containers mount only `model/`.
//!
//! A resumed file is hashed again from its first byte (the bytes on disk are read back),
//! never from a saved hash state; a file whose bytes do not match is deleted before the
//! error is returned, so the next attempt starts it afresh instead of failing forever.

use std::{
    io::{Read, Seek, Write},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use aws_lc_rs::digest::{Context, SHA256, SHA512};
use reqwest::Url;

use super::{
    ModelFile, ModelSet, TargetFile, TrustError,
    store::store_err,
    transport::{Body, Transport},
    updater::{Digests, check_hashes},
};
use crate::api::MANIFEST_FILE;

/// The URL of a target, hash-prefixed when the repository uses consistent snapshots.
pub fn target_url(base: &Url, name: &str, info: &TargetFile, consistent: bool) -> Result<Url, TrustError> {
    let mut base = base.clone();
    if !base.path().ends_with('/') {
        let path = format!("{}/", base.path());
        base.set_path(&path);
    }
    let path = if consistent {
        let hash = match info.hash("sha256")? {
            Some(h) => h,
            None => info.hash("sha512")?.ok_or_else(|| TrustError::Hash {
                what: name.into(),
                reason: "no sha256 or sha512 to build a consistent-snapshot name".into(),
            })?,
        };
        match name.rsplit_once('/') {
            Some((dir, file)) => format!("{dir}/{hash}.{file}"),
            None => format!("{hash}.{name}"),
        }
    } else {
        name.to_string()
    };
    base.join(&path).map_err(|e| TrustError::Malformed { what: format!("target {name:?}"), reason: e.to_string() })
}

/// The directory serving containers see (a subPath of the volume).
pub const MODEL_DIR: &str = "model";
const INCOMING_DIR: &str = ".incoming";
const PARTIAL_DIR: &str = ".partial";
/// Attempts per file within one run when the network fails mid-file (each resumes).
const ATTEMPTS: u32 = 3;
const WRITE_BUFFER: usize = 256 * 1024;

/// Bytes and files done, shared by the downloads and the progress log.
#[derive(Debug, Default)]
pub struct Progress {
    bytes: AtomicU64,
    files: AtomicUsize,
}

impl Progress {
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn files(&self) -> usize {
        self.files.load(Ordering::Relaxed)
    }

    fn add(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }

    fn sub(&self, n: u64) {
        let _ = self.bytes.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| Some(b.saturating_sub(n)));
    }
}

/// How a set is downloaded.
#[derive(Clone, Debug)]
pub struct FetchOptions {
    /// Files downloaded at once.
    pub concurrency: usize,
    /// How often progress is logged (to stderr: `kubectl logs` of the init container).
    pub progress_every: Duration,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self { concurrency: default_concurrency(), progress_every: Duration::from_secs(10) }
    }
}

/// One download per CPU the process may use, at most 8: hashing is the bottleneck on
/// a fast network, and each download holds a write buffer.
pub fn default_concurrency() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 8)
}

/// Downloads `set` into `root/model`, verified; resumes what an earlier run left.
/// Returns the number of bytes fetched over the network in this run.
pub async fn fetch_set(
    transport: &Transport,
    targets_url: &Url,
    consistent: bool,
    set: &ModelSet,
    root: &Path,
    options: &FetchOptions,
) -> Result<u64, TrustError> {
    let done = root.join(MODEL_DIR);
    if done.exists() {
        if verify_dir(&done, set).is_ok() {
            return Ok(0);
        }
        std::fs::remove_dir_all(&done).map_err(|e| store_err(&done, e))?;
    }
    let incoming = root.join(INCOMING_DIR);
    let partial = root.join(PARTIAL_DIR);
    for dir in [&incoming, &partial] {
        std::fs::create_dir_all(dir).map_err(|e| store_err(dir, e))?;
    }
    let progress = Arc::new(Progress::default());
    let total: u64 = set.files.iter().map(|f| f.info.length).sum();
    let reporter = tokio::spawn(report(progress.clone(), set.files.len(), total, options.progress_every));
    let fetched = Arc::new(AtomicU64::new(0));
    let limit = Arc::new(tokio::sync::Semaphore::new(options.concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (index, file) in set.files.iter().enumerate() {
        let url = target_url(targets_url, &file.target, &file.info, consistent)?;
        let job = Job {
            transport: transport.clone(),
            url,
            file: file.clone(),
            part: partial.join(index.to_string()),
            out: incoming.join(&file.path),
            progress: progress.clone(),
            fetched: fetched.clone(),
        };
        let limit = limit.clone();
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            job.run().await
        });
    }
    let mut failure = None;
    while let Some(joined) = tasks.join_next().await {
        let result = joined.unwrap_or_else(|e| {
            Err(TrustError::Store { path: root.display().to_string(), reason: format!("a download task failed: {e}") })
        });
        if let Err(e) = result {
            // The first refusal wins; the others stop with it.
            failure.get_or_insert(e);
            tasks.abort_all();
        }
    }
    reporter.abort();
    if let Some(e) = failure {
        return Err(e);
    }
    if set.model.is_set() {
        write_file(&incoming.join(MANIFEST_FILE), &set.manifest())?;
    }
    sync_dir(&incoming)?;
    std::fs::rename(&incoming, &done).map_err(|e| store_err(&done, e))?;
    sync_dir(root)?;
    let _ = std::fs::remove_dir_all(&partial);
    log_progress(&progress, set.files.len(), total, None);
    Ok(fetched.load(Ordering::Relaxed))
}

/// Whether `dir` holds exactly the verified set: every file at its length and hashes,
/// and the manifest of a set byte for byte.
pub fn verify_dir(dir: &Path, set: &ModelSet) -> Result<(), TrustError> {
    for f in &set.files {
        let path = dir.join(&f.path);
        let digests = hash_file(&path, &f.info, &Progress::default())?;
        if digests.1 != f.info.length {
            return Err(mismatch(
                &f.target,
                format!("{} holds {} bytes, not {}", path.display(), digests.1, f.info.length),
            ));
        }
        check_hashes(&format!("target {:?}", f.target), &f.info.hashes, &digests.0)?;
    }
    if set.model.is_set() {
        let path = dir.join(MANIFEST_FILE);
        let on_disk = std::fs::read(&path).map_err(|e| store_err(&path, e))?;
        if on_disk != set.manifest() {
            return Err(mismatch(MANIFEST_FILE, "the manifest on disk differs from the verified one".into()));
        }
    }
    Ok(())
}

struct Job {
    transport: Transport,
    url: Url,
    file: ModelFile,
    part: PathBuf,
    out: PathBuf,
    progress: Arc<Progress>,
    fetched: Arc<AtomicU64>,
}

impl Job {
    async fn run(self) -> Result<(), TrustError> {
        if let Some(dir) = self.out.parent() {
            std::fs::create_dir_all(dir).map_err(|e| store_err(dir, e))?;
        }
        // Verified by an earlier run: hashed again, never taken on trust.
        if self.out.exists() {
            let (digests, len) = hash_file(&self.out, &self.file.info, &self.progress)?;
            let what = format!("target {:?}", self.file.target);
            if len == self.file.info.length && check_hashes(&what, &self.file.info.hashes, &digests).is_ok() {
                self.progress.files.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            self.progress.sub(len);
            std::fs::remove_file(&self.out).map_err(|e| store_err(&self.out, e))?;
        }
        let fetched =
            fetch_file(&self.transport, &self.url, &self.file.target, &self.file.info, &self.part, &self.progress)
                .await?;
        self.fetched.fetch_add(fetched, Ordering::Relaxed);
        std::fs::rename(&self.part, &self.out).map_err(|e| store_err(&self.out, e))?;
        self.progress.files.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Downloads one target into `part`, resuming the bytes already there, and verifies
/// the whole file. On success `part` holds exactly the signed bytes, read-only; on a
/// mismatch it is deleted. Returns the bytes received over the network.
pub async fn fetch_file(
    transport: &Transport,
    url: &Url,
    name: &str,
    info: &TargetFile,
    part: &Path,
    progress: &Progress,
) -> Result<u64, TrustError> {
    let download = Download { transport, url, name, info, part, progress };
    let mut fetched = 0;
    let mut attempt = 0;
    loop {
        attempt += 1;
        match download.attempt().await {
            Ok(n) => return Ok(fetched + n),
            Err((n, e)) => {
                fetched += n;
                let retry = matches!(e, TrustError::Fetch { .. }) && attempt < ATTEMPTS;
                if !retry {
                    if !e.is_transient() {
                        // Bytes that failed verification are never resumed from.
                        let _ = std::fs::remove_file(part);
                    }
                    return Err(e);
                }
                tracing::debug!(target = name, attempt, error = %e, "download interrupted; resuming");
            }
        }
    }
}

/// One target's download into its partial file.
struct Download<'a> {
    transport: &'a Transport,
    url: &'a Url,
    name: &'a str,
    info: &'a TargetFile,
    part: &'a Path,
    progress: &'a Progress,
}

impl Download<'_> {
    /// One attempt: the bytes received, and on failure the error.
    async fn attempt(&self) -> Result<u64, (u64, TrustError)> {
        let Download { transport, url, name, info, part, progress } = *self;
        let fail = |e: TrustError| (0, e);
        let part_path = part;
        let (mut file, mut hasher, have) = resume(part, info, progress).map_err(fail)?;
        let mut received = 0u64;
        if have < info.length {
            let mut writer = std::io::BufWriter::with_capacity(WRITE_BUFFER, &mut file);
            let result = transport
                .stream_from(url, have, info.length, |part| match part {
                    Body::Start(start) if start != have => {
                        // The server sends the whole file: start over, from a clean hash.
                        writer.flush().map_err(|e| store_err(part_path, e))?;
                        writer.get_mut().set_len(0).map_err(|e| store_err(part_path, e))?;
                        writer.get_mut().seek(std::io::SeekFrom::Start(0)).map_err(|e| store_err(part_path, e))?;
                        hasher = Hasher::for_file(info);
                        progress.sub(have);
                        Ok(())
                    }
                    Body::Start(_) => Ok(()),
                    Body::Data(chunk) => {
                        hasher.update(&chunk);
                        received += chunk.len() as u64;
                        progress.add(chunk.len() as u64);
                        writer.write_all(&chunk).map_err(|e| store_err(part_path, e))
                    }
                })
                .await;
            let flushed = writer.flush().map_err(|e| store_err(part, e));
            match result.and_then(|r| flushed.map(|()| r)) {
                Ok(_) => {}
                Err(TrustError::TooLarge { .. }) => {
                    let reason = format!("the server sent more than the signed length of {} bytes", info.length);
                    return Err((received, mismatch(name, reason)));
                }
                Err(e) => return Err((received, e)),
            }
        }
        let length = file.metadata().map_err(|e| (received, store_err(part, e)))?.len();
        if length != info.length {
            let reason = format!("received {length} bytes, the signed length is {}", info.length);
            return Err((received, mismatch(name, reason)));
        }
        check_hashes(&format!("target {name:?}"), &info.hashes, &hasher.finish()).map_err(|e| (received, e))?;
        file.sync_all().map_err(|e| (received, store_err(part, e)))?;
        // Readable by any user in the pod (the model server rarely runs as the fetch's UID),
        // writable by none: the volume is mounted read-only into servers anyway.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(part, std::fs::Permissions::from_mode(0o444))
                .map_err(|e| (received, store_err(part, e)))?;
        }
        Ok(received)
    }
}

/// The part file of an earlier attempt (or a new one), re-hashed from its first byte so
/// a resumed file is verified whole: the file, the hash so far and the bytes it holds.
/// One longer than the signed length is started over.
fn resume(part: &Path, info: &TargetFile, progress: &Progress) -> Result<(std::fs::File, Hasher, u64), TrustError> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(part)
        .map_err(|e| store_err(part, e))?;
    #[cfg(unix)]
    {
        // Left writable while it grows; made read-only once verified.
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(part, std::fs::Permissions::from_mode(0o644));
    }
    let on_disk = file.metadata().map_err(|e| store_err(part, e))?.len();
    let mut hasher = Hasher::for_file(info);
    if on_disk > info.length {
        file.set_len(0).map_err(|e| store_err(part, e))?;
        return Ok((file, hasher, 0));
    }
    let mut buf = vec![0u8; 1 << 20];
    let mut read = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(|e| store_err(part, e))?;
        if n == 0 {
            break;
        }
        hasher.update(buf.get(..n).unwrap_or_default());
        read += n as u64;
    }
    progress.add(read);
    Ok((file, hasher, read))
}

/// The hashes the signed metadata lists (each algorithm costs a full pass).
struct Hasher {
    sha256: Option<Context>,
    sha512: Option<Context>,
}

impl Hasher {
    fn for_file(info: &TargetFile) -> Self {
        Self {
            sha256: info.hashes.contains_key("sha256").then(|| Context::new(&SHA256)),
            sha512: info.hashes.contains_key("sha512").then(|| Context::new(&SHA512)),
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        for c in [self.sha256.as_mut(), self.sha512.as_mut()].into_iter().flatten() {
            c.update(bytes);
        }
    }

    fn finish(self) -> Digests {
        let hex = |c: Option<Context>| c.map(|c| hex::encode(c.finish()));
        Digests { sha256: hex(self.sha256), sha512: hex(self.sha512) }
    }
}

/// Whether the file at `path` holds exactly the signed bytes (streamed, bounded).
pub fn matches_signed(path: &Path, info: &TargetFile) -> bool {
    hash_file(path, info, &Progress::default())
        .is_ok_and(|(d, len)| len == info.length && check_hashes("local copy", &info.hashes, &d).is_ok())
}

/// The digests and length of a file on disk, never reading past the signed length + 1.
fn hash_file(path: &Path, info: &TargetFile, progress: &Progress) -> Result<(Digests, u64), TrustError> {
    let file = std::fs::File::open(path).map_err(|e| store_err(path, e))?;
    let mut reader = file.take(info.length.saturating_add(1));
    let mut hasher = Hasher::for_file(info);
    let mut buf = vec![0u8; 1 << 20];
    let mut read = 0u64;
    loop {
        let n = reader.read(&mut buf).map_err(|e| store_err(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(buf.get(..n).unwrap_or_default());
        read += n as u64;
        progress.add(n as u64);
    }
    Ok((hasher.finish(), read))
}

fn mismatch(target: &str, reason: String) -> TrustError {
    TrustError::TargetMismatch { target: target.into(), reason }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), TrustError> {
    let mut f = std::fs::File::create(path).map_err(|e| store_err(path, e))?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(|e| store_err(path, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o444)).map_err(|e| store_err(path, e))?;
    }
    Ok(())
}

/// Makes a rename in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), TrustError> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| store_err(dir, e))
}

async fn report(progress: Arc<Progress>, files: usize, total: u64, every: Duration) {
    let start = Instant::now();
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        log_progress(&progress, files, total, Some(start.elapsed()));
    }
}

fn log_progress(progress: &Progress, files: usize, total: u64, elapsed: Option<Duration>) {
    const MIB: f64 = 1024.0 * 1024.0;
    let bytes = progress.bytes().min(total);
    let percent = if total == 0 { 100.0 } else { bytes as f64 * 100.0 / total as f64 };
    let rate = match elapsed {
        Some(t) if t.as_secs_f64() > 0.0 => format!(", {:.1} MiB/s", bytes as f64 / MIB / t.as_secs_f64()),
        _ => String::new(),
    };
    eprintln!(
        "modelgate: fetched {}/{files} files, {:.1} of {:.1} MiB ({percent:.0}%){rate}",
        progress.files(),
        bytes as f64 / MIB,
        total as f64 / MIB
    );
}
