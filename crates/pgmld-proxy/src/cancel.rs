//! Cancel requests: clients get pgmld's own backend keys; a CancelRequest carrying one is
//! sent on to the upstream backend behind that session, and stops any pgml call it runs.

use rand::Rng;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Where a session's cancel goes.
#[derive(Clone)]
pub struct CancelTarget {
    /// The upstream (a cancel goes over a fresh connection, TLS as for sessions).
    pub upstream: pgmld_upstream::Upstream,
    /// Upstream backend pid.
    pub pid: i32,
    /// Upstream secret key bytes (4 in protocol 3.0).
    pub key: Vec<u8>,
    /// Set to stop the pgml call the session runs.
    pub pgml_cancel: Arc<AtomicBool>,
    /// Set while a pgml call runs inside pgmld with nothing of the client's running
    /// upstream: the cancel then stops the call only. Forwarded, it could reach the
    /// upstream backend late and cancel the client's next statement instead.
    pub local_call: Arc<AtomicBool>,
}

/// The keys handed to clients, process-wide.
#[derive(Default)]
pub struct CancelRegistry {
    map: Mutex<HashMap<(i32, Vec<u8>), CancelTarget>>,
}

impl CancelRegistry {
    /// Registers a session; returns the (pid, key) to give the client, key as long as the
    /// upstream's so protocol 3.2 clients see the length they negotiated.
    pub fn register(&self, target: CancelTarget) -> (i32, Vec<u8>) {
        let mut rng = rand::rng();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let pid = rng.random_range(1..i32::MAX);
            let key: Vec<u8> = (0..target.key.len().max(4)).map(|_| rng.random()).collect();
            if let std::collections::hash_map::Entry::Vacant(v) = map.entry((pid, key.clone())) {
                v.insert(target);
                return (pid, key);
            }
        }
    }

    /// Forgets a session's key.
    pub fn unregister(&self, pid: i32, key: &[u8]) {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).remove(&(pid, key.to_vec()));
    }

    /// Handles a CancelRequest: unknown keys are ignored, as Postgres does.
    pub async fn cancel(&self, pid: i32, key: &[u8]) {
        let target =
            self.map.lock().unwrap_or_else(|p| p.into_inner()).get(&(pid, key.to_vec())).cloned();
        let Some(t) = target else {
            tracing::debug!(pid, "cancel request with unknown key ignored");
            return;
        };
        t.pgml_cancel.store(true, Ordering::Relaxed);
        if t.local_call.load(Ordering::SeqCst) {
            return;
        }
        let mut packet = Vec::with_capacity(12 + t.key.len());
        packet.extend_from_slice(&((12 + t.key.len()) as u32).to_be_bytes());
        packet.extend_from_slice(&crate::wire::CANCEL_REQUEST.to_be_bytes());
        packet.extend_from_slice(&t.pid.to_be_bytes());
        packet.extend_from_slice(&t.key);
        if let Err(e) = t.upstream.send_cancel(&packet).await {
            tracing::warn!("forwarding cancel to {} failed: {e}", t.upstream.addr());
        }
    }
}
