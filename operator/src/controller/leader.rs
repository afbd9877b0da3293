//! Leader election on a `coordination.k8s.io` Lease, so two replicas are safe: only the
//! holder reconciles. Writes use the Lease's resourceVersion, so two candidates can never
//! both win. A holder that cannot renew within `RENEW_DEADLINE` (shorter than the lease,
//! each attempt bounded by it too) stops the process (its pod restarts as a follower)
//! before anyone else may take the Lease: never two leaders. A follower judges expiry
//! by its own monotonic clock, from when it last saw the Lease change (as client-go
//! does), never by comparing its clock with a time another machine wrote. On shutdown
//! the holder gives the Lease up, so a rolling update hands over in about a second.

use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::Timestamp,
};
use kube::{
    Api,
    api::{ObjectMeta, PostParams},
};
use tracing::{info, warn};

use super::Error;

const LEASE_DURATION: Duration = Duration::from_secs(15);
/// The holder gives up leading if it could not renew for this long: a third of the
/// lease before a follower may take it (client-go's defaults: 15 s, 10 s, 2 s).
const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// A follower tries this often: a lease given up on shutdown is taken within it.
const RETRY_EVERY: Duration = Duration::from_secs(1);
const RENEW_EVERY: Duration = Duration::from_secs(2);

pub struct Leader {
    api: Api<Lease>,
    name: String,
    identity: String,
    /// The Lease record last seen (its resourceVersion) and when, by this process's
    /// monotonic clock.
    observed: std::sync::Mutex<Option<(String, tokio::time::Instant)>>,
}

impl Leader {
    pub fn new(api: Api<Lease>, name: &str, identity: &str) -> Self {
        Self { api, name: name.into(), identity: identity.into(), observed: std::sync::Mutex::default() }
    }

    /// How long ago the Lease record last changed, as this process saw it.
    fn unchanged_for(&self, lease: &Lease) -> Duration {
        let version = lease.metadata.resource_version.clone().unwrap_or_default();
        let mut observed = self.observed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match observed.as_ref() {
            Some((seen, at)) if *seen == version => at.elapsed(),
            _ => {
                *observed = Some((version, tokio::time::Instant::now()));
                Duration::ZERO
            }
        }
    }

    /// Waits until this process holds the lease.
    pub async fn acquire(&self) -> Result<(), Error> {
        let mut said = false;
        loop {
            match self.try_take().await {
                Ok(true) => {
                    info!(lease = %self.name, identity = %self.identity, "leader election won");
                    return Ok(());
                }
                Ok(false) if !said => {
                    info!(lease = %self.name, "another replica leads; waiting");
                    said = true;
                }
                Ok(false) => {}
                Err(e) => warn!(error = %e, "leader election: cannot read or write the Lease; retrying"),
            }
            tokio::time::sleep(RETRY_EVERY).await;
        }
    }

    /// Renews the lease until it is lost; returns why.
    pub async fn hold(&self) -> Error {
        let mut last_renewed = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(RENEW_EVERY).await;
            // An attempt that hangs is cut off at the deadline: a slow API server must
            // not keep this process leading past it.
            let left = RENEW_DEADLINE.saturating_sub(last_renewed.elapsed());
            match tokio::time::timeout(left, self.try_take()).await {
                Ok(Ok(true)) => last_renewed = tokio::time::Instant::now(),
                Ok(Ok(false)) => return Error::LeadershipLost { lease: self.name.clone() },
                Ok(Err(e)) => warn!(error = %e, "leader election: renewal failed; retrying"),
                Err(_) => warn!(lease = %self.name, "leader election: renewal timed out"),
            }
            if last_renewed.elapsed() >= RENEW_DEADLINE {
                return Error::LeadershipLost { lease: self.name.clone() };
            }
        }
    }

    /// Gives the lease up if this process holds it, so a follower takes it at its next
    /// try instead of waiting out the lease (a rolling update, a drained node).
    pub async fn release(&self) {
        let result = async {
            let Some(mut lease) = self.api.get_opt(&self.name).await? else { return Ok(false) };
            let mut spec = lease.spec.clone().unwrap_or_default();
            if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
                return Ok(false);
            }
            spec.holder_identity = None;
            spec.renew_time = None;
            spec.acquire_time = None;
            lease.spec = Some(spec);
            // With the resourceVersion read above: never clears a lease someone else took.
            self.api.replace(&self.name, &PostParams::default(), &lease).await.map(|_| true)
        };
        match result.await {
            Ok(true) => info!(lease = %self.name, "leader lease released"),
            Ok(false) => {}
            Err(e) => warn!(error = %e, lease = %self.name, "could not release the leader lease; it expires by itself"),
        }
    }

    /// Takes (or renews) the lease if it is free, expired or ours. `Ok(false)`: held by another.
    async fn try_take(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let fresh = |acquired: Option<MicroTime>, transitions: i32| LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
            acquire_time: acquired.or(Some(MicroTime(now))),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..Default::default()
        };
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.name.clone()), ..Default::default() },
                spec: Some(fresh(None, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let ours = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        let duration = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(15).max(1) as u64);
        let expired = spec.holder_identity.is_none() || self.unchanged_for(&lease) >= duration;
        if !ours && !expired && spec.holder_identity.is_some() {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!ours);
        lease.spec = Some(fresh(if ours { spec.acquire_time } else { None }, transitions));
        // `replace` carries the resourceVersion read above: a concurrent taker gets 409.
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }
}
