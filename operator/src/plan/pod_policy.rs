//! What a release's pod may be, whoever wrote its template. modelgate creates the pods,
//! so a template must not get through modelgate what its author could not create
//! directly: the cluster admin picks a Pod Security Standards level (chart value
//! `podSecurity`, default `baseline`), and the parts modelgate adds (the verified
//! model volume, the fetch init container) stay out of the user's reach at every level.
//!
//! The checks follow the Pod Security Standards text (kubernetes.io/docs/concepts/
//! security/pod-security-standards), field by field. Pure: no I/O.

use std::fmt;

use crate::api::MAX_TEMPLATE_BYTES;
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec, SecurityContext};

/// Pod Security Standards level the rendered pods must meet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// No restriction beyond modelgate's own (the model volume, the operator's identity).
    Privileged,
    /// No known privilege escalation: no host namespaces, host paths, privileged or
    /// extra-capability containers (the secure default).
    #[default]
    Baseline,
    /// Baseline plus the hardening best practices: non-root, no privilege escalation,
    /// all capabilities dropped, a seccomp profile, only ephemeral/config volume types.
    Restricted,
}

impl Level {
    /// Every level, least strict first, as the standard names them.
    pub const ALL: [Level; 3] = [Level::Privileged, Level::Baseline, Level::Restricted];

    pub const fn as_str(self) -> &'static str {
        match self {
            Level::Privileged => "privileged",
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Level {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Level::ALL.into_iter().find(|l| l.as_str() == s).ok_or_else(|| {
            let names: Vec<&str> = Level::ALL.iter().map(|l| l.as_str()).collect();
            format!("{s:?} is not a Pod Security level; use one of: {}", names.join(", "))
        })
    }
}

/// The admin's policy for rendered pods.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodPolicy {
    pub level: Level,
    /// The operator's own ServiceAccount (`namespace`, `name`): a release in that
    /// namespace must not run its pods with the operator's rights.
    pub operator_service_account: Option<(String, String)>,
}

/// Names of the volumes modelgate adds; a template may not use or shadow them.
pub const RESERVED_VOLUME_PREFIX: &str = "modelgate-";

const BASELINE_CAPABILITIES: [&str; 13] = [
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];
const SAFE_SYSCTLS: [&str; 10] = [
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];
const SELINUX_TYPES: [&str; 5] = ["", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"];
const RESTRICTED_VOLUMES: [&str; 8] =
    ["configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"];

/// Every reason the template's pod is refused, each naming the field and what to write
/// instead; empty when the pod is allowed. `model_path` is `spec.model.mountPath`.
pub fn check(template: &PodTemplateSpec, model_path: &str, namespace: &str, policy: &PodPolicy) -> Vec<String> {
    let mut v = Violations::default();
    let bytes = template_bytes(template);
    if bytes > MAX_TEMPLATE_BYTES {
        v.push(format!(
            "spec.template is {bytes} bytes as JSON; modelgate renders templates of at most {} KiB: move large \
             arguments, environment or files into a ConfigMap and mount or reference it",
            MAX_TEMPLATE_BYTES / 1024
        ));
        return v.0;
    }
    let Some(spec) = &template.spec else {
        v.push("spec.template.spec is missing: give the pod spec of the model server (containers, image, probes)");
        return v.0;
    };
    structure(spec, &mut v);
    model_untouched(spec, model_path, &mut v);
    identity(spec, namespace, policy, &mut v);
    if policy.level >= Level::Baseline {
        baseline(template, spec, &mut v);
    }
    if policy.level >= Level::Restricted {
        restricted(spec, &mut v);
    }
    v.0
}

/// The size of `template` as JSON (what `MAX_TEMPLATE_BYTES` bounds), counted without
/// writing it anywhere.
fn template_bytes(template: &PodTemplateSpec) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Serializing a typed value to a counter cannot fail; if it did, "too large".
    match serde_json::to_writer(&mut count, template) {
        Ok(()) => count.0,
        Err(_) => usize::MAX,
    }
}

#[derive(Default)]
struct Violations(Vec<String>);

impl Violations {
    fn push(&mut self, s: impl Into<String>) {
        // A template can repeat one mistake in many containers; a few lines say enough.
        const MAX: usize = 10;
        if self.0.len() < MAX {
            self.0.push(s.into());
        }
    }
}

fn all_containers(spec: &PodSpec) -> impl Iterator<Item = (&'static str, &Container)> {
    let inits = spec.init_containers.iter().flatten().map(|c| ("initContainers", c));
    inits.chain(spec.containers.iter().map(|c| ("containers", c)))
}

/// What modelgate needs to render the pod at all, and keeps for itself.
fn structure(spec: &PodSpec, v: &mut Violations) {
    if spec.containers.is_empty() {
        v.push("spec.template.spec.containers is empty: give at least the model server's container");
    }
    let mut names = std::collections::BTreeSet::new();
    for (list, c) in all_containers(spec) {
        if c.name.starts_with(RESERVED_VOLUME_PREFIX) {
            v.push(format!(
                "{list} {:?}: names starting with {RESERVED_VOLUME_PREFIX} are reserved for modelgate",
                c.name
            ));
        } else if !names.insert(c.name.as_str()) {
            v.push(format!("{list} {:?}: container names must be unique in a pod", c.name));
        }
        for m in c.volume_mounts.iter().flatten() {
            if m.name.starts_with(RESERVED_VOLUME_PREFIX) {
                v.push(format!(
                    "{list} {:?} mounts volume {:?}: modelgate mounts the verified model itself (read-only, at \
                     model.mountPath); remove that mount",
                    c.name, m.name
                ));
            }
        }
    }
    for vol in spec.volumes.iter().flatten() {
        if vol.name.starts_with(RESERVED_VOLUME_PREFIX) {
            v.push(format!(
                "volume {:?}: names starting with {RESERVED_VOLUME_PREFIX} are reserved for modelgate",
                vol.name
            ));
        }
    }
}

/// The served bytes are the verified bytes: no mount of the tenant's at the model's
/// path, inside it (the runtime mounts deeper paths over shallower ones, so a volume at
/// `/models/model.onnx` would replace the verified file) or above it (whatever lies
/// there shadows or replaces the directory). Paths are compared as the runtime resolves
/// them. Symbolic links inside the image are beyond what a template shows.
fn model_untouched(spec: &PodSpec, model_path: &str, v: &mut Violations) {
    let model = clean_path(model_path);
    for (list, c) in all_containers(spec) {
        for m in c.volume_mounts.iter().flatten().filter(|m| !m.name.starts_with(RESERVED_VOLUME_PREFIX)) {
            let at = clean_path(&m.mount_path);
            let clash = if at == model {
                "at"
            } else if inside(&at, &model) {
                "inside"
            } else if inside(&model, &at) {
                "above"
            } else {
                continue;
            };
            v.push(format!(
                "{list} {:?} mounts volume {:?} at {:?}, {clash} model.mountPath {model:?}: the verified model must be \
                 the only thing there; mount it elsewhere (outside {model:?}) or change model.mountPath",
                c.name, m.name, m.mount_path
            ));
        }
    }
}

/// A path as a container runtime resolves a mount destination: from `/`, with empty and
/// `.` segments dropped and `..` applied (never above `/`).
pub fn clean_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Whether the clean path `path` lies strictly inside the clean directory `dir`.
fn inside(path: &str, dir: &str) -> bool {
    path != dir && (dir == "/" || path.strip_prefix(dir).is_some_and(|rest| rest.starts_with('/')))
}

fn identity(spec: &PodSpec, namespace: &str, policy: &PodPolicy, v: &mut Violations) {
    let Some((ns, name)) = &policy.operator_service_account else { return };
    let account = spec.service_account_name.as_deref().or(spec.service_account.as_deref());
    if ns == namespace && account == Some(name.as_str()) {
        v.push(format!(
            "spec.template.spec.serviceAccountName {name:?} is modelgate's own ServiceAccount: model pods must not run \
             with the operator's rights; use a ServiceAccount of your own"
        ));
    }
}

fn baseline(template: &PodTemplateSpec, spec: &PodSpec, v: &mut Violations) {
    let why = "(Pod Security baseline)";
    for (field, on) in [("hostNetwork", spec.host_network), ("hostPID", spec.host_pid), ("hostIPC", spec.host_ipc)] {
        if on == Some(true) {
            v.push(format!("spec.template.spec.{field} must not be true {why}"));
        }
    }
    for vol in spec.volumes.iter().flatten() {
        if vol.host_path.is_some() {
            v.push(format!(
                "volume {:?} is a hostPath {why}: use an emptyDir, configMap or persistentVolumeClaim",
                vol.name
            ));
        }
    }
    let pod_sc = spec.security_context.as_ref();
    if pod_sc.and_then(|s| s.windows_options.as_ref()).and_then(|w| w.host_process) == Some(true) {
        v.push(format!("spec.template.spec.securityContext.windowsOptions.hostProcess must not be true {why}"));
    }
    if let Some(sc) = pod_sc {
        selinux(sc.se_linux_options.as_ref(), "spec.template.spec.securityContext", v);
        if sc.seccomp_profile.as_ref().is_some_and(|p| p.type_ == "Unconfined") {
            v.push(format!("spec.template.spec.securityContext.seccompProfile.type must not be Unconfined {why}"));
        }
        if sc.app_armor_profile.as_ref().is_some_and(|p| p.type_ == "Unconfined") {
            v.push(format!("spec.template.spec.securityContext.appArmorProfile.type must not be Unconfined {why}"));
        }
        for s in sc.sysctls.iter().flatten() {
            if !SAFE_SYSCTLS.contains(&s.name.as_str()) {
                v.push(format!("sysctl {:?} is not in the safe set {why}", s.name));
            }
        }
    }
    let annotations = template.metadata.as_ref().and_then(|m| m.annotations.as_ref());
    for (k, val) in annotations.into_iter().flatten() {
        if k.starts_with("container.apparmor.security.beta.kubernetes.io/") && val == "unconfined" {
            v.push(format!("annotation {k}: unconfined is not allowed {why}"));
        }
    }
    for (list, c) in all_containers(spec) {
        let at = format!("{list} {:?}", c.name);
        for p in c.ports.iter().flatten() {
            if p.host_port.is_some_and(|h| h != 0) {
                v.push(format!("{at}: hostPort {} is not allowed {why}; use a Service", p.host_port.unwrap_or(0)));
            }
        }
        let Some(sc) = &c.security_context else { continue };
        if sc.privileged == Some(true) {
            v.push(format!("{at}: securityContext.privileged must not be true {why}"));
        }
        if sc.windows_options.as_ref().and_then(|w| w.host_process) == Some(true) {
            v.push(format!("{at}: securityContext.windowsOptions.hostProcess must not be true {why}"));
        }
        for cap in sc.capabilities.as_ref().and_then(|c| c.add.as_ref()).into_iter().flatten() {
            if !BASELINE_CAPABILITIES.contains(&cap.as_str()) {
                v.push(format!("{at}: capability {cap} may not be added {why}"));
            }
        }
        selinux(sc.se_linux_options.as_ref(), &format!("{at}: securityContext"), v);
        if sc.proc_mount.as_deref().is_some_and(|p| p != "Default") {
            v.push(format!("{at}: securityContext.procMount must be Default {why}"));
        }
        if sc.seccomp_profile.as_ref().is_some_and(|p| p.type_ == "Unconfined") {
            v.push(format!("{at}: securityContext.seccompProfile.type must not be Unconfined {why}"));
        }
        if sc.app_armor_profile.as_ref().is_some_and(|p| p.type_ == "Unconfined") {
            v.push(format!("{at}: securityContext.appArmorProfile.type must not be Unconfined {why}"));
        }
    }
}

fn selinux(options: Option<&k8s_openapi::api::core::v1::SELinuxOptions>, at: &str, v: &mut Violations) {
    let Some(o) = options else { return };
    if !SELINUX_TYPES.contains(&o.type_.as_deref().unwrap_or("")) {
        v.push(format!("{at}.seLinuxOptions.type {:?} is not allowed (Pod Security baseline)", o.type_));
    }
    if o.user.is_some() || o.role.is_some() {
        v.push(format!("{at}.seLinuxOptions.user and .role must not be set (Pod Security baseline)"));
    }
}

fn restricted(spec: &PodSpec, v: &mut Violations) {
    let why = "(Pod Security restricted)";
    for vol in spec.volumes.iter().flatten() {
        let kind = serde_json::to_value(vol)
            .ok()
            .and_then(|j| j.as_object().and_then(|o| o.keys().find(|k| *k != "name").cloned()));
        if let Some(kind) = kind
            && !RESTRICTED_VOLUMES.contains(&kind.as_str())
        {
            v.push(format!("volume {:?} of type {kind} is not allowed {why}", vol.name));
        }
    }
    let pod_sc = spec.security_context.as_ref();
    let pod_non_root = pod_sc.and_then(|s| s.run_as_non_root) == Some(true);
    let pod_seccomp = pod_sc.and_then(|s| s.seccomp_profile.as_ref()).map(|p| p.type_.as_str());
    if pod_sc.and_then(|s| s.run_as_user) == Some(0) {
        v.push(format!("spec.template.spec.securityContext.runAsUser must not be 0 {why}"));
    }
    for (list, c) in all_containers(spec) {
        let at = format!("{list} {:?}", c.name);
        let sc = c.security_context.clone().unwrap_or_default();
        restricted_container(&at, &sc, pod_non_root, pod_seccomp, v);
    }
}

fn restricted_container(
    at: &str,
    sc: &SecurityContext,
    pod_non_root: bool,
    pod_seccomp: Option<&str>,
    v: &mut Violations,
) {
    let why = "(Pod Security restricted)";
    if sc.allow_privilege_escalation != Some(false) {
        v.push(format!("{at}: set securityContext.allowPrivilegeEscalation: false {why}"));
    }
    if sc.run_as_non_root != Some(true) && !(pod_non_root && sc.run_as_non_root.is_none()) {
        v.push(format!("{at}: set securityContext.runAsNonRoot: true (here or for the pod) {why}"));
    }
    if sc.run_as_user == Some(0) {
        v.push(format!("{at}: securityContext.runAsUser must not be 0 {why}"));
    }
    let seccomp = sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()).or(pod_seccomp);
    if !matches!(seccomp, Some("RuntimeDefault" | "Localhost")) {
        v.push(format!("{at}: set securityContext.seccompProfile.type: RuntimeDefault (here or for the pod) {why}"));
    }
    let caps = sc.capabilities.as_ref();
    if !caps.and_then(|c| c.drop.as_ref()).is_some_and(|d| d.iter().any(|c| c == "ALL")) {
        v.push(format!("{at}: set securityContext.capabilities.drop: [ALL] {why}"));
    }
    for cap in caps.and_then(|c| c.add.as_ref()).into_iter().flatten() {
        if cap != "NET_BIND_SERVICE" {
            v.push(format!("{at}: only NET_BIND_SERVICE may be added {why}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template(spec: serde_json::Value) -> PodTemplateSpec {
        serde_json::from_value(json!({"spec": spec})).unwrap()
    }

    fn policy(level: Level) -> PodPolicy {
        PodPolicy { level, operator_service_account: Some(("ops".into(), "modelgate".into())) }
    }

    fn refusals(spec: serde_json::Value, level: Level) -> Vec<String> {
        check(&template(spec), "/models", "team", &policy(level))
    }

    const SERVER: &str = "server";

    #[test]
    fn an_ordinary_model_server_passes_baseline() {
        let spec = json!({"containers": [{"name": SERVER, "image": "srv:1", "ports": [{"containerPort": 8080}]}]});
        assert!(refusals(spec.clone(), Level::Baseline).is_empty());
        assert!(!refusals(spec, Level::Restricted).is_empty(), "restricted asks for more");
    }

    #[test]
    fn baseline_refuses_what_escalates_and_says_which_field() {
        let cases = [
            (json!({"hostNetwork": true, "containers": [{"name": "a", "image": "i"}]}), "hostNetwork"),
            (json!({"hostPID": true, "containers": [{"name": "a", "image": "i"}]}), "hostPID"),
            (
                json!({"containers": [{"name": "a", "image": "i", "securityContext": {"privileged": true}}]}),
                "privileged",
            ),
            (
                json!({"containers": [{"name": "a", "image": "i"}], "volumes": [{"name": "h", "hostPath": {"path": "/"}}]}),
                "hostPath",
            ),
            (
                json!({"containers": [{"name": "a", "image": "i", "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}]}),
                "SYS_ADMIN",
            ),
            (
                json!({"containers": [{"name": "a", "image": "i", "ports": [{"containerPort": 80, "hostPort": 80}]}]}),
                "hostPort",
            ),
            (
                json!({"containers": [{"name": "a", "image": "i", "securityContext": {"procMount": "Unmasked"}}]}),
                "procMount",
            ),
            (
                json!({"initContainers": [{"name": "b", "image": "i", "securityContext": {"privileged": true}}], "containers": [{"name": "a", "image": "i"}]}),
                "initContainers \"b\"",
            ),
        ];
        for (spec, word) in cases {
            let r = refusals(spec.clone(), Level::Baseline);
            assert!(r.iter().any(|m| m.contains(word)), "{spec}: {r:?}");
            assert!(refusals(spec, Level::Privileged).is_empty(), "privileged lets {word} through");
        }
    }

    #[test]
    fn the_model_volume_and_the_operator_identity_stay_modelgates_at_every_level() {
        let writable = json!({"containers": [{"name": "a", "image": "i", "volumeMounts": [{"name": "modelgate-model", "mountPath": "/m"}]}]});
        let init = json!({"initContainers": [{"name": "swap", "image": "i", "volumeMounts": [{"name": "modelgate-model", "mountPath": "/m"}]}], "containers": [{"name": "a", "image": "i"}]});
        let own_sa = json!({"serviceAccountName": "modelgate", "containers": [{"name": "a", "image": "i"}]});
        for level in [Level::Privileged, Level::Baseline] {
            assert!(
                refusals(writable.clone(), level).iter().any(|m| m.contains("modelgate mounts the verified model"))
            );
            assert!(refusals(init.clone(), level).iter().any(|m| m.contains("initContainers \"swap\"")));
        }
        assert!(
            check(&template(own_sa.clone()), "/models", "ops", &policy(Level::Privileged))[0]
                .contains("own ServiceAccount")
        );
        assert!(
            check(&template(own_sa), "/models", "team", &policy(Level::Baseline)).is_empty(),
            "same name, other namespace"
        );
    }

    #[test]
    fn no_mount_may_cover_replace_or_shadow_the_verified_model() {
        let mount = |path: &str, init: bool| {
            let c = json!({"name": "c", "image": "i", "volumeMounts": [{"name": "mine", "mountPath": path}]});
            if init {
                json!({"initContainers": [c], "containers": [{"name": "s", "image": "i"}]})
            } else {
                json!({"containers": [c], "volumes": [{"name": "mine", "emptyDir": {}}]})
            }
        };
        for (path, clash) in [
            ("/models", "at"),
            ("/models/", "at"),
            ("/models/model.onnx", "inside"),
            ("/models//tokenizer", "inside"),
            ("/./models/x", "inside"),
            ("/data/../models/x", "inside"),
            ("models/x", "inside"),
            ("/", "above"),
            ("/mod/../", "above"),
        ] {
            for init in [false, true] {
                let found = refusals(mount(path, init), Level::Privileged);
                assert!(
                    found.iter().any(|m| m.contains(&format!("{clash} model.mountPath \"/models\""))),
                    "{path} (init {init}): {found:?}"
                );
            }
        }
        for fine in ["/modelsx", "/data", "/tmp/models", "/model"] {
            assert!(refusals(mount(fine, false), Level::Privileged).is_empty(), "{fine}");
        }
        assert_eq!(clean_path("a/./b//c/../d/"), "/a/b/d");
        assert_eq!(clean_path("/../.."), "/");
    }

    #[test]
    fn templates_modelgate_cannot_render_are_refused_not_panicked_on() {
        let none: PodTemplateSpec = serde_json::from_value(json!({})).unwrap();
        assert!(check(&none, "/models", "team", &policy(Level::Baseline))[0].contains("spec.template.spec is missing"));
        assert!(refusals(json!({"containers": []}), Level::Baseline)[0].contains("containers is empty"));
        let twice = json!({"containers": [{"name": "a", "image": "i"}, {"name": "a", "image": "j"}]});
        assert!(refusals(twice, Level::Baseline)[0].contains("unique"));
    }

    #[test]
    fn restricted_accepts_a_hardened_pod() {
        let sc = json!({"allowPrivilegeEscalation": false, "runAsNonRoot": true, "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}});
        let spec = json!({"containers": [{"name": "a", "image": "i", "securityContext": sc}], "volumes": [{"name": "cache", "emptyDir": {}}]});
        assert_eq!(refusals(spec, Level::Restricted), Vec::<String>::new());
        let nfs = json!({"containers": [{"name": "a", "image": "i", "securityContext": sc}], "volumes": [{"name": "n", "nfs": {"server": "s", "path": "/"}}]});
        assert!(refusals(nfs, Level::Restricted)[0].contains("type nfs"));
    }

    #[test]
    fn a_template_too_large_to_keep_is_refused_with_its_size() {
        let args: Vec<String> = (0..100).map(|i| format!("--flag-{i}={}", "x".repeat(1000))).collect();
        let big = json!({"containers": [{"name": "a", "image": "i", "args": args}]});
        let found = refusals(big, Level::Baseline);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("spec.template is 10") && found[0].contains("at most 64 KiB"), "{found:?}");
        let small = json!({"containers": [{"name": "a", "image": "i"}]});
        assert!(template_bytes(&template(small)) < 100);
    }
}
