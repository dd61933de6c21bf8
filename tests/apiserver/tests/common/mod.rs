//! Shared setup of the API-server integration tests.

use corral_test_apiserver::TestApiServer;

/// A client of `server` built the way `corral-scheduler run` builds one:
/// from a kubeconfig file the server writes (removed again once the client
/// has read it).
pub async fn client(server: &TestApiServer) -> kube::Client {
    let dir = tempfile::tempdir().expect("tempdir");
    let kc = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kc).expect("kubeconfig");
    corral_scheduler::k8s::client(Some(&kc))
        .await
        .expect("client")
}
