//! The watch of one kind shared by every controller of a scope: one store, `N` streams
//! of its changes, what each cache keeps applied before an object is stored.

use std::{future::Future, sync::Arc};

use futures::StreamExt;
use kube::{
    Api, Resource, ResourceExt,
    runtime::{
        WatchStreamExt,
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use tracing::warn;

use super::{
    Synced,
    index::{Index, OwnerIndex},
};

/// Events each subscriber of a watch holds before the watch waits for it.
const SHARED_BUFFER: usize = 1024;

/// A changed object, as a watch delivered it, for a controller's trigger stream.
pub type Changes<K> = std::pin::Pin<Box<dyn futures::Stream<Item = Arc<K>> + Send>>;

/// A watch of `api` into a store, `N` streams of its changes for controllers, and the
/// future that drives them. `trim` drops what reconciles never read before an object is
/// stored (managed fields always): memory grows with the number of pods, not with them.
/// `index`, if given, is kept current with the store (for the kinds a release owns).
/// Each stream must be consumed, or the watch waits for it (`SHARED_BUFFER`).
///
/// A change is sent as the object the watch delivered, after the store holds it, so a
/// reconcile it triggers reads at least that state. kube's own shared streams
/// (`store_shared`, `ReflectHandle`) look each change up in the store instead, and when
/// the object is gone by then (a pod deleted right after its last update, as every
/// scale-down does) the handle returns `Pending` without a waker: that stream, and every
/// release's pod events with it, stopped for good. Found on the real node: a canary
/// whose model the pod refused stayed `Progressing` until a timer woke its release.
pub fn shared_reflector<K, const N: usize>(
    api: Api<K>,
    config: watcher::Config,
    trim: impl Fn(&mut K) + Send + Sync + 'static,
    index: Option<OwnerIndex>,
) -> (Store<K>, [Changes<K>; N], Synced, impl Future<Output = ()> + Send + 'static)
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let (senders, changes) = fan_out::<K, N>();
    let drive = watcher(api, config).default_backoff().modify(move |o| {
        o.managed_fields_mut().clear();
        trim(o);
    });
    let synced = Synced::default();
    let seen = synced.clone();
    // A (re-)list's objects reach the store together when it is done: send them then,
    // as the store holds them. Only their names are kept meanwhile: a copy of every
    // object here doubled the caches during a restart's initial lists (the peak RSS of
    // the 10,000-release benchmark).
    let mut listed: Vec<ObjectRef<K>> = Vec::new();
    let listed_from = store.clone();
    let mut listing = index.as_ref().map(|_| Index::default());
    let drive = drive.reflect(writer).for_each(move |event| {
        let changed = match event {
            Ok(watcher::Event::Init) => {
                listed.clear();
                listing = index.as_ref().map(|_| Index::default());
                Vec::new()
            }
            Ok(watcher::Event::InitApply(o)) => {
                if let Some(listing) = listing.as_mut() {
                    listing.apply(&o);
                }
                listed.push(ObjectRef::from_obj(&o));
                Vec::new()
            }
            Ok(watcher::Event::InitDone) => {
                if let (Some(index), Some(fresh)) = (&index, listing.take()) {
                    index.replace(fresh);
                }
                seen.store(true, std::sync::atomic::Ordering::Release);
                std::mem::take(&mut listed).iter().filter_map(|r| listed_from.get(r)).collect()
            }
            Ok(watcher::Event::Apply(o)) => {
                if let Some(index) = &index {
                    index.update(|i| i.apply(&o));
                }
                vec![Arc::new(o)]
            }
            Ok(watcher::Event::Delete(o)) => {
                if let Some(index) = &index {
                    index.update(|i| i.delete(&o));
                }
                vec![Arc::new(o)]
            }
            Err(e) => {
                warn!(error = %e, kind = %K::kind(&()), "watch failed; retrying (check the operator's RBAC)");
                Vec::new()
            }
        };
        let senders = senders.clone();
        async move {
            for object in changed {
                for tx in senders.iter() {
                    // A closed stream is a stopped controller: nothing to wake.
                    let _ = tx.send(object.clone()).await;
                }
            }
        }
    });
    (store, changes, synced, drive)
}

/// Where a watch sends its changes, one channel per stream.
type Senders<K> = Arc<Vec<tokio::sync::mpsc::Sender<Arc<K>>>>;

/// `N` bounded channels: the senders (shared by the watch) and their streams.
fn fan_out<K: Send + Sync + 'static, const N: usize>() -> (Senders<K>, [Changes<K>; N]) {
    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..N).map(|_| tokio::sync::mpsc::channel::<Arc<K>>(SHARED_BUFFER)).unzip();
    let mut receivers = receivers.into_iter();
    let changes = std::array::from_fn(|_| {
        let rx = receivers.next();
        let stream = futures::stream::unfold(rx, |rx| async move {
            let mut rx = rx?;
            let item = rx.recv().await?;
            Some((item, Some(rx)))
        });
        Box::pin(stream) as Changes<K>
    });
    (Arc::new(senders), changes)
}
