//! How modelgate connects to the API server: the operator and the kubectl plugin alike.

/// A client from the cluster's ServiceAccount or $KUBECONFIG that names itself in every
/// request, `modelgate/<version> (<component>)`: the API server's audit log then tells
/// modelgate's requests from anyone else's with the same credentials.
pub async fn client(component: &str) -> anyhow::Result<kube::Client> {
    client_from(kube::Config::infer().await?, component)
}

fn client_from(mut config: kube::Config, component: &str) -> anyhow::Result<kube::Client> {
    let agent = format!("modelgate/{} ({component})", env!("CARGO_PKG_VERSION"));
    config.headers.push((axum::http::header::USER_AGENT, axum::http::HeaderValue::from_str(&agent)?));
    Ok(kube::Client::try_from(config)?)
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn every_request_names_modelgate_as_its_user_agent() -> anyhow::Result<()> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await?;
            let mut request = vec![0_u8; 4096];
            let n = socket.read(&mut request).await?;
            let body = r#"{"major":"1","minor":"37","gitVersion":"v1.37.2","gitCommit":"","gitTreeState":"","buildDate":"","goVersion":"","compiler":"","platform":""}"#;
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            socket.write_all(response.as_bytes()).await?;
            request.truncate(n);
            anyhow::Ok(String::from_utf8_lossy(&request).to_lowercase())
        });
        let client = super::client_from(kube::Config::new(url.parse()?), "operator")?;
        client.apiserver_version().await?;
        let request = server.await??;
        let agent = format!("user-agent: modelgate/{} (operator)", env!("CARGO_PKG_VERSION"));
        assert!(request.contains(&agent), "{request}");
        Ok(())
    }
}
