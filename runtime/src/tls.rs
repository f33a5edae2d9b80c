//! The process's TLS crypto provider, chosen once at start-up.
//!
//! rustls picks its provider by itself only when exactly one is compiled in. The workspace
//! compiles two: `ring` (kube's client) and `aws-lc-rs` (object_store's cloud clients, in the
//! export), and cargo unifies features across binaries built together, so without an explicit
//! choice the first TLS client of any binary built beside the export panics.

/// Installs `ring` as the process-wide provider; a second call keeps the first choice.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
