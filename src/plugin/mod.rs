//! Everything spire-server sees: the go-plugin handshake and unix socket, the grpcio server, and
//! the go-plugin, Init, Config and KeyManager services. The real work is behind `PluginCore`.

pub(crate) mod handshake;
pub(crate) mod metrics;
pub(crate) mod pool;
pub mod proto;
pub(crate) mod server;
pub(crate) mod services;

use crate::error::PluginError;
use proto::config::CoreConfiguration;
use proto::keymanager::{HashAlgorithm, KeyType, PublicKey};

/// Signer options of a SignData request, after the transport's argument checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignerOpts {
    /// PKCS#1 v1.5 for RSA, ECDSA for EC.
    Hash(HashAlgorithm),
    /// RSA-PSS. Key Vault always uses a salt as long as the hash, so the length is ignored.
    Pss {
        hash: HashAlgorithm,
        salt_length: i32,
    },
}

/// A signature and the fingerprint of the key that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub signature: Vec<u8>,
    pub key_fingerprint: String,
}

/// The key manager as the transport sees it. Implementations are thread-safe; methods may
/// block on the network (the transport runs them on worker threads).
pub trait PluginCore: Send + Sync + 'static {
    fn configure(&self, core: Option<&CoreConfiguration>, hcl: &str) -> Result<(), PluginError>;
    /// `(valid, notes)`: no notes for a valid configuration.
    fn validate(&self, core: Option<&CoreConfiguration>, hcl: &str) -> (bool, Vec<String>);
    fn generate_key(&self, key_id: &str, key_type: KeyType) -> Result<PublicKey, PluginError>;
    /// NotFound `key "<id>" not found` when the id is unknown. Never touches the network.
    fn get_public_key(&self, key_id: &str) -> Result<PublicKey, PluginError>;
    /// Never touches the network.
    fn get_public_keys(&self) -> Result<Vec<PublicKey>, PluginError>;
    fn sign_data(
        &self,
        key_id: &str,
        data: &[u8],
        opts: SignerOpts,
    ) -> Result<Signature, PluginError>;
    /// Stops background work (Deinit, Shutdown).
    fn deinit(&self);
}
