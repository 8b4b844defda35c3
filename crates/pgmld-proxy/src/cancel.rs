//! Cancel requests: clients get the upstream backend's real pid (so `pg_backend_pid()`,
//! NOTIFY pids and `pg_terminate_backend` agree with what the driver was told) with a
//! secret key of pgmld's own. A CancelRequest must carry both; it is then sent on to the
//! upstream backend with the upstream's own key, and stops any pgml call the session runs.
//! A client that knows another session's pid (it is visible in `pg_stat_activity`) still
//! cannot cancel that session's query without its secret.

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
    /// Registers a session; returns the (pid, key) to give the client: the upstream
    /// backend's pid and a fresh secret as long as the upstream's key, so protocol 3.2
    /// clients see the length they negotiated (at least 4 bytes, protocol 3.0's length).
    pub fn register(&self, target: CancelTarget) -> (i32, Vec<u8>) {
        let mut rng = rand::rng();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let pid = target.pid;
        loop {
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// A target whose upstream is a local listener standing in for Postgres.
    async fn target(key_len: usize) -> (CancelTarget, tokio::net::TcpListener) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let url = format!("postgres://u@127.0.0.1:{port}/db?sslmode=disable");
        let upstream =
            pgmld_upstream::Upstream::new(&url, None, &pgmld_upstream::Env::default()).unwrap();
        let t = CancelTarget {
            upstream,
            pid: 4242,
            key: (0..key_len).map(|i| i as u8).collect(),
            pgml_cancel: Arc::new(AtomicBool::new(false)),
            local_call: Arc::new(AtomicBool::new(false)),
        };
        (t, listener)
    }

    #[tokio::test]
    async fn clients_get_the_upstream_pid_and_a_secret_of_the_upstream_key_length() {
        let registry = CancelRegistry::default();
        for key_len in [4, 32, 256] {
            let (t, _l) = target(key_len).await;
            let upstream_key = t.key.clone();
            let (pid, key) = registry.register(t);
            assert_eq!((pid, key.len()), (4242, key_len));
            assert_ne!(key, upstream_key, "the upstream's secret never reaches the client");
        }
    }

    #[tokio::test]
    async fn a_cancel_needs_pid_and_secret_and_goes_upstream_with_the_upstream_key() {
        let registry = CancelRegistry::default();
        let (t, listener) = target(32).await;
        let flag = t.pgml_cancel.clone();
        let (pid, key) = registry.register(t);
        let mut wrong = key.clone();
        wrong[0] ^= 1;
        registry.cancel(pid, &wrong).await;
        registry.cancel(pid, &key[..4]).await;
        assert!(!flag.load(Ordering::Relaxed), "a wrong secret cancels nothing");
        let accepted = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut packet = Vec::new();
            s.read_to_end(&mut packet).await.unwrap();
            packet
        });
        registry.cancel(pid, &key).await;
        assert!(flag.load(Ordering::Relaxed));
        let packet = accepted.await.unwrap();
        let mut want = (12u32 + 32).to_be_bytes().to_vec();
        want.extend_from_slice(&crate::wire::CANCEL_REQUEST.to_be_bytes());
        want.extend_from_slice(&4242i32.to_be_bytes());
        want.extend((0..32u8).collect::<Vec<_>>());
        assert_eq!(packet, want);
        registry.unregister(pid, &key);
        flag.store(false, Ordering::Relaxed);
        registry.cancel(pid, &key).await;
        assert!(!flag.load(Ordering::Relaxed), "an ended session's key is forgotten");
    }
}
