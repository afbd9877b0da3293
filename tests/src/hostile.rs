//! Servers that misbehave on purpose, on 127.0.0.1, stopped when dropped: what a
//! tenant can point a gate at to try to hold the operator hostage.

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    task::JoinHandle,
};

/// Accepts connections and never says a word (a TLS handshake that never completes, an
/// HTTP request that is never answered).
pub struct Silent {
    pub port: u16,
    task: JoinHandle<()>,
}

impl Silent {
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        Ok(Self { port, task })
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Answers every HTTP request with `200 OK` and a body that never ends.
pub struct Endless {
    pub port: u16,
    task: JoinHandle<()>,
}

impl Endless {
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let task = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut request = [0u8; 4096];
                    let _ = socket.read(&mut request).await;
                    let head =
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
                    if socket.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, "[".repeat(64 * 1024));
                    while socket.write_all(chunk.as_bytes()).await.is_ok() {}
                });
            }
        });
        Ok(Self { port, task })
    }
}

impl Drop for Endless {
    fn drop(&mut self) {
        self.task.abort();
    }
}
