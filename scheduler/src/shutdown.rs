//! Termination signals for the long-running commands (`run`, `extender`).
//!
//! As PID 1 in a container, a process gets SIGTERM from the kubelet on every
//! rollout and the default handler does not apply to PID 1, so both SIGTERM and
//! SIGINT are handled explicitly.

use std::time::Duration;

/// Default bound on the drain after a signal (in-flight binds, open requests).
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);

/// Completes on the first SIGTERM or SIGINT and returns its name.
pub async fn signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    _ = int.recv() => "SIGINT",
                }
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!("cannot install the SIGTERM/SIGINT handlers: {e}");
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}
