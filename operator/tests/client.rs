//! kube and tough in one binary must agree on one rustls crypto provider, or building
//! the first Client panics. This builds one (no cluster needed: nothing is sent).

#[tokio::test]
async fn a_kube_client_can_be_built_next_to_tough() {
    let config = kube::Config::new("https://127.0.0.1:1".parse().unwrap());
    let client = kube::Client::try_from(config);
    assert!(client.is_ok(), "{:?}", client.err());
    // tough is linked into the same binary: a TLS-using type from it must exist too.
    let _ = std::any::type_name::<tough::Repository>();
}
