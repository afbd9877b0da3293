//! A model repository that the tests change while the operator watches it: made and
//! re-signed by python-tuf (`tests/tuf/modelrepo.py`), served over HTTPS on loopback,
//! and registered in a namespace as a ModelRepository with its pinned root and CA.

use std::{collections::BTreeMap, path::Path, process::Command, time::Duration};

use anyhow::{Context, bail};
use k8s_openapi::api::{apps::v1::ReplicaSet, core::v1::ConfigMap};
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use modelgate::api::{LABEL_RELEASE, LABEL_REVISION, ModelRelease, ModelRepository, Phase};
use serde_json::{Value, json};

use crate::{
    harness::{eventually, repo_root},
    tuf::{Server, python},
};

/// Name of the ModelRepository every fixture creates.
pub const REPOSITORY: &str = "ml-models";

pub struct ModelRepo {
    dir: tempfile::TempDir,
    pub server: Server,
    /// sha256 of each published target, by path.
    pub digests: BTreeMap<String, String>,
}

impl ModelRepo {
    /// A repository publishing `name/<v>/model.onnx` for each of `versions`. A version
    /// may carry the example model server's behaviour after `@`, `2.4.0@errors=0.2`
    /// (`,` between settings): a validly signed model that misbehaves.
    pub fn new(name: &str, versions: &[&str]) -> anyhow::Result<Self> {
        Self::serve(name, versions, Server::https)
    }

    /// `new`, served where the real node's pods reach it (the pod gateway), for model
    /// pods whose `modelgate fetch` really runs and an operator running in a pod.
    pub fn for_pods(name: &str, versions: &[&str]) -> anyhow::Result<Self> {
        Self::serve(name, versions, Server::https_for_pods)
    }

    /// `new`, served by a server whose `/slow/` paths trickle (6 KiB/s); register it,
    /// then point its `metadataUrl` at `slow/metadata/`.
    pub fn trickling(name: &str, versions: &[&str]) -> anyhow::Result<Self> {
        Self::serve(name, versions, Server::https_trickling)
    }

    /// Publishes `count` tiny targets `bulk/<i>/x.bin` in `role`: metadata that is large
    /// to download.
    pub fn bulk_in(&self, role: &str, count: usize) -> anyhow::Result<()> {
        tool(self.dir.path(), &["bulk", &count.to_string(), "--role", role]).map(|_| ())
    }

    fn serve(name: &str, versions: &[&str], server: fn(&Path) -> anyhow::Result<Server>) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        tool(dir.path(), &["init"])?;
        let mut repo = Self { server: server(&dir.path().join("public"))?, dir, digests: BTreeMap::new() };
        repo.add(name, versions)?;
        Ok(repo)
    }

    /// Publishes more versions (new targets, snapshot and timestamp versions).
    pub fn add(&mut self, name: &str, versions: &[&str]) -> anyhow::Result<()> {
        let out = tool(self.dir.path(), &[&["add", name], versions].concat())?;
        self.record(&out);
        Ok(())
    }

    /// Keeps the `PATH sha256` lines the tool printed.
    fn record(&mut self, out: &str) {
        for line in out.lines() {
            if let Some((path, sha)) = line.split_once(' ') {
                self.digests.insert(path.into(), sha.into());
            }
        }
    }

    /// Publishes a model of `count` files under `prefix` (`<prefix>model-0000i-of-0000N.safetensors`).
    pub fn add_shards(&mut self, prefix: &str, count: usize) -> anyhow::Result<Vec<String>> {
        let out = tool(self.dir.path(), &["shards", prefix, &count.to_string()])?;
        let mut paths = Vec::new();
        for line in out.lines() {
            if let Some((path, sha)) = line.split_once(' ') {
                self.digests.insert(path.into(), sha.into());
                paths.push(path.to_string());
            }
        }
        Ok(paths)
    }

    /// Publishes every file under directory `src` as target `prefix` + its path below
    /// `src` (one new targets version).
    pub fn add_dir(&mut self, prefix: &str, src: &Path) -> anyhow::Result<()> {
        let src = src.to_str().context("a UTF-8 path")?;
        let out = tool(self.dir.path(), &["add-dir", prefix, src])?;
        self.record(&out);
        Ok(())
    }

    /// Publishes the file `path` as target `target`.
    pub fn add_file(&mut self, target: &str, path: &Path) -> anyhow::Result<()> {
        let out = tool(self.dir.path(), &["add-file", target, path.to_str().context("a UTF-8 path")?])?;
        self.record(&out);
        Ok(())
    }

    /// Publishes an OCI image's manifest as target `target`, its signed custom metadata
    /// naming the registry `repository` the image is pulled from.
    pub fn add_image(&mut self, target: &str, manifest: &[u8], repository: &str) -> anyhow::Result<()> {
        let file = self.dir.path().join("manifest.upload");
        std::fs::write(&file, manifest)?;
        let out = tool(self.dir.path(), &["add-image", target, file.to_str().context("a UTF-8 path")?, repository])?;
        self.record(&out);
        Ok(())
    }

    /// Revokes targets: the publishers sign new targets metadata without them.
    pub fn remove(&self, paths: &[&str]) -> anyhow::Result<()> {
        tool(self.dir.path(), &[&["remove"], paths].concat()).map(|_| ())
    }

    /// Delegates the target paths `pattern` matches to a role of their own (a team's).
    pub fn delegate(&self, role: &str, pattern: &str) -> anyhow::Result<()> {
        tool(self.dir.path(), &["delegate", role, pattern]).map(|_| ())
    }

    /// `add`, signed by the delegated `role`.
    pub fn add_in(&mut self, role: &str, name: &str, versions: &[&str]) -> anyhow::Result<()> {
        let out = tool(self.dir.path(), &[&["add", name], versions, &["--role", role]].concat())?;
        self.record(&out);
        Ok(())
    }

    /// `remove`, from the delegated `role`.
    pub fn remove_in(&self, role: &str, paths: &[&str]) -> anyhow::Result<()> {
        tool(self.dir.path(), &[&["remove"], paths, &["--role", role]].concat()).map(|_| ())
    }

    /// The server stops serving `role`'s metadata (404), while the snapshot that lists
    /// it is served as before: a hidden update.
    pub fn hide(&self, role: &str) -> anyhow::Result<()> {
        let meta = self.dir.path().join("public/metadata");
        std::fs::rename(meta.join(format!("{role}.json")), self.dir.path().join(format!("hidden-{role}.json")))?;
        Ok(())
    }

    /// Changes one byte of a published target on the server, as an attacker with access
    /// to the file server (not to the signing keys) would.
    pub fn tamper(&self, target: &str) -> anyhow::Result<()> {
        let path = self.dir.path().join("public/targets").join(target);
        let mut bytes = std::fs::read(&path)?;
        bytes[100] ^= 0x01;
        std::fs::write(&path, bytes)?;
        Ok(())
    }

    /// The directory the server publishes (`metadata/`, `targets/`).
    pub fn server_root(&self) -> std::path::PathBuf {
        self.dir.path().join("public")
    }

    pub fn sha256(&self, target: &str) -> &str {
        &self.digests[target]
    }

    /// The pinned root (version 1) as python-tuf wrote it.
    pub fn root_json(&self) -> anyhow::Result<String> {
        Ok(std::fs::read_to_string(self.dir.path().join("root.json"))?)
    }

    /// Creates the pinned-root and CA ConfigMaps and the ModelRepository in `ns`.
    pub async fn register(&self, client: &Client, ns: &str) -> anyhow::Result<()> {
        self.register_as(client, ns, REPOSITORY, "10s").await
    }

    /// `register`, with `spec` merged into the repository's spec (`provenance`, ...).
    pub async fn register_with(&self, client: &Client, ns: &str, spec: Value) -> anyhow::Result<()> {
        let root = std::fs::read_to_string(self.dir.path().join("root.json"))?;
        register_repository_with(client, ns, REPOSITORY, "10s", &root, &self.server, spec).await
    }

    /// `register`, with the repository's name and refresh interval.
    pub async fn register_as(&self, client: &Client, ns: &str, name: &str, refresh: &str) -> anyhow::Result<()> {
        let root = std::fs::read_to_string(self.dir.path().join("root.json"))?;
        register_repository(client, ns, name, refresh, &root, &self.server).await
    }
}

/// As the security team: the pinned root and CA in `trust_ns` (the operator's
/// namespace) and ClusterModelRepository `name` with `policy`, labelled for the test
/// operator of namespace `served_by` (`harness::TEST_LABEL`).
pub async fn register_cluster(
    repo: &ModelRepo,
    client: &Client,
    trust_ns: &str,
    name: &str,
    served_by: &str,
    policy: Value,
) -> anyhow::Result<()> {
    register_cluster_with(repo, client, trust_ns, name, served_by, policy, json!({})).await
}

/// `register_cluster`, with `extra` merged into the spec (`provenance`, ...).
pub async fn register_cluster_with(
    repo: &ModelRepo,
    client: &Client,
    trust_ns: &str,
    name: &str,
    served_by: &str,
    policy: Value,
    extra: Value,
) -> anyhow::Result<()> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), trust_ns);
    let ca = std::fs::read_to_string(repo.server.ca.as_ref().context("an HTTPS server")?)?;
    for (cm_name, key, value) in [("ml-root", "root.json", repo.root_json()?), ("repo-ca", "ca.crt", ca)] {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": cm_name}, "data": {key: value}});
        cms.patch(cm_name, &PatchParams::apply("modelgate-tests"), &Patch::Apply(&cm)).await?;
    }
    let mut manifest = json!({
        "apiVersion": "modelgate.dev/v1alpha1", "kind": "ClusterModelRepository",
        "metadata": {"name": name, "labels": {crate::harness::TEST_LABEL: served_by}},
        "spec": {
            "metadataUrl": repo.server.url("metadata/"),
            "targetsUrl": repo.server.url("targets/"),
            "trustedRoot": {"configMapRef": {"name": "ml-root", "key": "root.json"}},
            "caBundle": {"configMapRef": {"name": "repo-ca", "key": "ca.crt"}},
            "refreshInterval": "10s",
            "policy": policy,
        }
    });
    merge_spec(&mut manifest, &extra)?;
    let cluster_repo: modelgate::api::ClusterModelRepository = serde_json::from_value(manifest)?;
    Api::<modelgate::api::ClusterModelRepository>::all(client.clone())
        .create(&PostParams::default(), &cluster_repo)
        .await?;
    Ok(())
}

/// Creates the pinned-root (`ml-root`) and CA (`repo-ca`) ConfigMaps and a ModelRepository
/// `name` in `ns` for the repository `server` serves (`metadata/`, `targets/`), pinned to
/// `root`.
pub async fn register_repository(
    client: &Client,
    ns: &str,
    name: &str,
    refresh: &str,
    root: &str,
    server: &Server,
) -> anyhow::Result<()> {
    register_repository_with(client, ns, name, refresh, root, server, json!({})).await
}

/// `register_repository`, with `extra` merged into the spec.
pub async fn register_repository_with(
    client: &Client,
    ns: &str,
    name: &str,
    refresh: &str,
    root: &str,
    server: &Server,
    extra: Value,
) -> anyhow::Result<()> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let ca = std::fs::read_to_string(server.ca.as_ref().context("an HTTPS server")?)?;
    for (cm_name, key, value) in [("ml-root", "root.json", root.to_string()), ("repo-ca", "ca.crt", ca)] {
        let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": cm_name}, "data": {key: value}}))?;
        let params = PatchParams::apply("modelgate-tests");
        cms.patch(
            cm_name,
            &params,
            &Patch::Apply(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": cm.metadata, "data": cm.data})),
        )
        .await?;
    }
    let mut manifest = json!({
        "apiVersion": "modelgate.dev/v1alpha1", "kind": "ModelRepository", "metadata": {"name": name},
        "spec": {
            "metadataUrl": server.url("metadata/"),
            "targetsUrl": server.url("targets/"),
            "trustedRoot": {"configMapRef": {"name": "ml-root", "key": "root.json"}},
            "caBundle": {"configMapRef": {"name": "repo-ca", "key": "ca.crt"}},
            "refreshInterval": refresh
        }
    });
    merge_spec(&mut manifest, &extra)?;
    let repo: ModelRepository = serde_json::from_value(manifest)?;
    Api::<ModelRepository>::namespaced(client.clone(), ns).create(&PostParams::default(), &repo).await?;
    Ok(())
}

/// Sets each field of `extra` in `manifest.spec`.
fn merge_spec(manifest: &mut Value, extra: &Value) -> anyhow::Result<()> {
    for (k, v) in extra.as_object().context("the extra spec is an object")? {
        manifest["spec"][k] = v.clone();
    }
    Ok(())
}

fn tool(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let (cmd, rest) = args.split_first().context("a command")?;
    let out = Command::new(python())
        .arg(repo_root().join("tests/tuf/modelrepo.py"))
        .arg(cmd)
        .arg(dir)
        .args(rest)
        .output()
        .context("run tests/tuf/modelrepo.py")?;
    if !out.status.success() {
        bail!("modelrepo.py {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// What a pod template's spec needs to run on the simulated node (`sim-node`, tainted):
/// merge it into `template.spec`.
pub fn simulated() -> Value {
    json!({
        "nodeSelector": {crate::kubelet::SIMULATED_LABEL: "simulated"},
        "tolerations": [{"key": crate::kubelet::SIMULATED_TAINT, "operator": "Exists", "effect": "NoSchedule"}],
    })
}

/// A ModelRelease manifest: `replicas` pods of a tiny server serving `target` on the
/// simulated node, with `spec` merged over the defaults (steps, gates, rollback, ...).
pub fn release(name: &str, target: &str, replicas: i32, spec: Value) -> anyhow::Result<ModelRelease> {
    let mut manifest = json!({
        "apiVersion": "modelgate.dev/v1alpha1", "kind": "ModelRelease", "metadata": {"name": name},
        "spec": {
            "repositoryRef": {"name": REPOSITORY},
            "model": {"target": target, "mountPath": "/models"},
            "replicas": replicas,
            "template": {"spec": {"containers": [{"name": "server", "image": "model-server:1"}]}},
        }
    });
    for (k, v) in simulated().as_object().context("an object")? {
        manifest["spec"]["template"]["spec"][k] = v.clone();
    }
    for (k, v) in spec.as_object().context("spec is an object")? {
        manifest["spec"][k] = v.clone();
    }
    Ok(serde_json::from_value(manifest)?)
}

/// A webhook judge over HTTPS on loopback (`tests/tuf/serve.py`: it answers with the
/// status in its folder's `webhook-status`, 200 by default, and logs each request to
/// `webhook-requests.jsonl`), and ConfigMap `judge-ca` in `ns` with its CA under
/// `ca.crt`. Keep both returned values alive as long as the judge is needed.
pub async fn webhook_judge(client: &Client, ns: &str) -> anyhow::Result<(tempfile::TempDir, Server)> {
    let dir = tempfile::tempdir()?;
    let judge = Server::https(dir.path())?;
    let ca = std::fs::read_to_string(judge.ca.as_ref().context("an HTTPS judge")?)?;
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "judge-ca"}, "data": {"ca.crt": ca}});
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .patch("judge-ca", &PatchParams::apply("modelgate-tests"), &Patch::Apply(&cm))
        .await?;
    Ok((dir, judge))
}

/// Changes a release's target (a new revision), as `kubectl patch` would.
pub async fn set_target(api: &Api<ModelRelease>, name: &str, target: &str) -> anyhow::Result<()> {
    let patch = json!({"spec": {"model": {"target": target}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

/// Changes an image release's manifest target (a new revision), as `kubectl patch` would.
pub async fn set_image_target(api: &Api<ModelRelease>, name: &str, target: &str) -> anyhow::Result<()> {
    let patch = json!({"spec": {"model": {"image": {"target": target}}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

/// Waits until `name`'s history has an entry of `target` with `outcome`; the newest one.
pub async fn wait_history(
    api: &Api<ModelRelease>,
    name: &str,
    target: &str,
    outcome: modelgate::api::Outcome,
    timeout: Duration,
) -> anyhow::Result<modelgate::api::HistoryEntry> {
    eventually(&format!("{name}: {target} {outcome:?}"), timeout, || async {
        let status = api.get(name).await?.status.unwrap_or_default();
        Ok(status.history.iter().rev().find(|h| h.revision.target == target && h.outcome == outcome).cloned())
    })
    .await
}

/// Sets a command annotation (`modelgate.dev/promote`, ...) to a new value.
pub async fn command(api: &Api<ModelRelease>, name: &str, annotation: &str, value: &str) -> anyhow::Result<()> {
    let patch = json!({"metadata": {"annotations": {annotation: value}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

/// Waits for `phase`; on timeout the error carries the release's last phase and message.
pub async fn wait_phase(
    api: &Api<ModelRelease>,
    name: &str,
    phase: Phase,
    timeout: Duration,
) -> anyhow::Result<ModelRelease> {
    let reached = eventually(&format!("{name} in phase {phase:?}"), timeout, || async {
        let r = api.get(name).await?;
        Ok((r.status.as_ref().and_then(|s| s.phase) == Some(phase)).then_some(r))
    })
    .await;
    match reached {
        Ok(r) => Ok(r),
        Err(e) => {
            let status = api.get(name).await.ok().and_then(|r| r.status);
            let (last, message) = status.map(|s| (s.phase, s.message)).unwrap_or_default();
            bail!("{e}; it is {last:?}: {}", message.unwrap_or_default())
        }
    }
}

/// Waits until `revision` is the stable revision (promoted, or returned to).
pub async fn wait_stable(api: &Api<ModelRelease>, name: &str, revision: i64, timeout: Duration) -> anyhow::Result<()> {
    eventually(&format!("{name} serving revision {revision}"), timeout, || async {
        let r = api.get(name).await?;
        Ok(r.status.and_then(|s| s.stable).is_some_and(|s| s.revision.number == revision).then_some(()))
    })
    .await
}

/// Replica count of each revision's ReplicaSet, by revision number.
pub async fn revisions(client: &Client, ns: &str, release: &str) -> anyhow::Result<BTreeMap<i64, i32>> {
    let list = Api::<ReplicaSet>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!("{LABEL_RELEASE}={release}")))
        .await?;
    Ok(list
        .items
        .iter()
        .map(|rs| {
            let revision = rs.labels().get(LABEL_REVISION).and_then(|r| r.parse().ok()).unwrap_or(-1);
            (revision, rs.spec.replicas.unwrap_or(0))
        })
        .collect())
}

/// Makes model pods in `ns` run their `modelgate fetch` init container for real.
pub async fn run_fetch(client: &Client, ns: &str) -> anyhow::Result<()> {
    behave(client, ns, crate::kubelet::RUN_FETCH, "true").await
}

/// Makes every pod serving `sha256` in `ns` behave so (see the simulated kubelet).
pub async fn behave(client: &Client, ns: &str, sha256: &str, behavior: &str) -> anyhow::Result<()> {
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "sim-kubelet"}, "data": {sha256: behavior}});
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .patch("sim-kubelet", &PatchParams::apply("modelgate-tests").force(), &Patch::Apply(&cm))
        .await?;
    Ok(())
}
