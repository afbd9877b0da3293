//! A cap on the admission webhook's open connections, in all and from one address. Its
//! port is reachable from the pod network: without a cap, clients that open connections
//! and send nothing (or send a request's headers a byte at a time) hold sockets and
//! memory as long as they like; with only a total cap, one pod could take them all and
//! shut the API server out. A connection beyond either cap is closed at once.

use std::{
    collections::HashMap,
    io,
    net::IpAddr,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use axum_server::accept::Accept;
use futures::future::BoxFuture;
use tokio::net::TcpStream;

/// An acceptor that admits at most `total` connections at once, `per_source` of them
/// from one address.
#[derive(Clone)]
pub struct Capped<A> {
    inner: A,
    open: Arc<Open>,
}

struct Open {
    total: usize,
    per_source: usize,
    by_source: Mutex<HashMap<IpAddr, usize>>,
}

impl Open {
    /// A place for a connection from `source`, if both caps allow one.
    fn take(self: &Arc<Self>, source: IpAddr) -> Option<Place> {
        let mut by_source = self.by_source.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let all: usize = by_source.values().sum();
        let mine = by_source.entry(source).or_default();
        if all >= self.total || *mine >= self.per_source {
            if *mine == 0 {
                by_source.remove(&source);
            }
            return None;
        }
        *mine += 1;
        Some(Place { open: self.clone(), source })
    }
}

/// One connection's place under the caps, given back when dropped.
struct Place {
    open: Arc<Open>,
    source: IpAddr,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut by_source = self.open.by_source.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = by_source.get_mut(&self.source) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                by_source.remove(&self.source);
            }
        }
    }
}

impl<A> Capped<A> {
    pub fn new(inner: A, total: usize, per_source: usize) -> Self {
        Self { inner, open: Arc::new(Open { total, per_source, by_source: Mutex::default() }) }
    }
}

impl<S, A> Accept<TcpStream, S> for Capped<A>
where
    A: Accept<TcpStream, S>,
    A::Future: Send + 'static,
    A::Stream: Send + 'static,
    A::Service: Send + 'static,
{
    type Stream = A::Stream;
    type Service = Held<A::Service>;
    type Future = BoxFuture<'static, io::Result<(Self::Stream, Self::Service)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        // Taken before the TLS handshake: a handshake is work too.
        let place = stream.peer_addr().ok().and_then(|peer| self.open.take(peer.ip()));
        let accepted = self.inner.accept(stream, service);
        Box::pin(async move {
            let place = place.ok_or_else(|| io::Error::other("too many open connections to the webhook"))?;
            let (stream, service) = accepted.await?;
            Ok((stream, Held { inner: service, _place: Arc::new(place) }))
        })
    }
}

/// A connection's service, holding its place under the caps until the connection
/// (every clone of its service) is gone.
#[derive(Clone)]
pub struct Held<S> {
    inner: S,
    _place: Arc<Place>,
}

impl<S, R> tower_service::Service<R> for Held<S>
where
    S: tower_service::Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_source_cannot_take_every_place_and_places_come_back() {
        let open = Arc::new(Open { total: 4, per_source: 2, by_source: Mutex::default() });
        let (a, b, c): (IpAddr, IpAddr, IpAddr) =
            ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap(), "10.0.0.3".parse().unwrap());
        let mut held: Vec<Place> = (0..2).filter_map(|_| open.take(a)).collect();
        assert_eq!(held.len(), 2);
        assert!(open.take(a).is_none(), "a source's cap");
        held.extend((0..2).filter_map(|_| open.take(b)));
        assert_eq!(held.len(), 4);
        assert!(open.take(c).is_none(), "the total cap");
        held.pop();
        assert!(open.take(c).is_some(), "a place given back is free again");
        drop(held);
        assert!(open.by_source.lock().unwrap().is_empty(), "nothing kept for sources gone");
    }
}
