//! The config-center namespace as a source of live settings: each version
//! this instance is served (stable, or a canary's candidate when
//! `reload.client` is in it) is applied over the file's settings; an
//! invalid one is refused and the running settings stay.

use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// Follows `reload.namespace` until `stop`; returns at once without one.
pub async fn follow(state: AppState, stop: CancellationToken) {
    let Some(name) = state.config.reload.namespace.clone() else {
        return;
    };
    let center = &state.config_center;
    if !center.settings.enabled {
        tracing::warn!(namespace = %name, "reload.namespace is set but the config center is disabled");
        return;
    }
    let client = state.config.reload.client.clone();
    // The namespace may not exist yet: wait for it to appear.
    let mut created = center.registry.created();
    let snapshot = loop {
        if let Some(snapshot) = center.registry.get(&name) {
            break snapshot;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = created.changed() => if changed.is_err() { return },
        }
    };
    let mut changes = snapshot.subscribe();
    let mut current = snapshot.load_full();
    // The version last tried, applied or refused: a refused version is
    // not retried until the namespace moves on.
    let mut tried = None;
    loop {
        let (version, _canary) = current.value().view(client.as_deref());
        if tried != Some(version.version) {
            tried = Some(version.version);
            // Refusals are logged and counted by `apply_namespace`.
            let _ =
                state
                    .reload
                    .apply_namespace(&state, &name, version.version, version.content.get());
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            next = changes.changed() => current = next,
        }
    }
}

/// Re-reads the file on every SIGHUP until `stop` (Unix only).
pub async fn sighup(state: AppState, stop: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => hangups,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; reload with POST /v1/admin/reload");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                got = hangups.recv() => if got.is_none() { return },
            }
            tracing::info!("SIGHUP: reloading the config file");
            // Logged and counted inside, refused or applied.
            let _ = state.reload.reload_file(&state);
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (state, stop);
    }
}
