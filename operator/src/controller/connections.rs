//! A cap on the admission webhook's open connections. Its port is reachable from the
//! pod network: without a cap, clients that open connections and send nothing (or send
//! a request's headers a byte at a time) hold sockets and memory as long as they like.
//! A connection beyond the cap is closed at once; the API server keeps a few pooled.

use std::{
    io,
    sync::Arc,
    task::{Context, Poll},
};

use axum_server::accept::Accept;
use futures::future::BoxFuture;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// An acceptor that admits at most `open` connections at once.
#[derive(Clone)]
pub struct Capped<A> {
    inner: A,
    open: Arc<Semaphore>,
}

impl<A> Capped<A> {
    pub fn new(inner: A, connections: usize) -> Self {
        Self { inner, open: Arc::new(Semaphore::new(connections)) }
    }
}

impl<I, S, A> Accept<I, S> for Capped<A>
where
    A: Accept<I, S>,
    A::Future: Send + 'static,
    A::Stream: Send + 'static,
    A::Service: Send + 'static,
{
    type Stream = A::Stream;
    type Service = Held<A::Service>;
    type Future = BoxFuture<'static, io::Result<(Self::Stream, Self::Service)>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        // Taken before the TLS handshake: a handshake is work too.
        let permit = self.open.clone().try_acquire_owned();
        let accepted = self.inner.accept(stream, service);
        Box::pin(async move {
            let permit = permit.map_err(|_| io::Error::other("too many open connections to the webhook"))?;
            let (stream, service) = accepted.await?;
            Ok((stream, Held { inner: service, _permit: Arc::new(permit) }))
        })
    }
}

/// A connection's service, holding its place under the cap until the connection (every
/// clone of its service) is gone.
#[derive(Clone)]
pub struct Held<S> {
    inner: S,
    _permit: Arc<OwnedSemaphorePermit>,
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
