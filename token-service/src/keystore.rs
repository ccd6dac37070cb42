//! token-service's own key store: the private signing keys, in `<data-dir>/keys/`.
//!
//! One file per key, `<kid>.<alg>.pem` (PKCS#8 PEM), mode 0600 in a directory of mode
//! 0700. A key is written (and synced) *before* its public half is published on the
//! log, so a published key that this node made always has its private half here. The
//! private keys never go anywhere else: not on the log, not in a response.
//!
//! # Shared state
//!
//! [`KeyStore`] is shared by the token endpoint (which signs with the active key) and
//! the rotation RPC (which adds a key). The keys are in a `std::sync::RwLock<HashMap>`
//! of `Arc<SigningKeyPair>`: signing takes the read lock just long enough to clone an
//! `Arc`, so a rotation never waits for a signature and vice versa.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use gatehouse_node::pki::write_private;
use gatehouse_tokens::{KeyError, SigningKeyPair};

/// What can go wrong with the key store.
#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    #[error("key store {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Key(#[from] KeyError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyStoreError + '_ {
    move |source| KeyStoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The private signing keys of this node, by kid.
pub struct KeyStore {
    dir: PathBuf,
    keys: RwLock<HashMap<String, Arc<SigningKeyPair>>>,
}

impl KeyStore {
    /// Opens (creating it if needed) the store in `dir` and loads every key in it. A
    /// file that is not a key of ours is skipped with a warning.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, KeyStoreError> {
        let dir = dir.into();
        create_private_dir(&dir)?;
        let mut keys = HashMap::new();
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let path = entry.map_err(io(&dir))?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let Some((kid, alg)) = name
                .strip_suffix(".pem")
                .and_then(|stem| stem.rsplit_once('.'))
            else {
                continue;
            };
            let pem = std::fs::read_to_string(&path).map_err(io(&path))?;
            match SigningKeyPair::from_pem(kid, alg, &pem) {
                Ok(key) => {
                    keys.insert(kid.to_string(), Arc::new(key));
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "skipping unreadable key file")
                }
            }
        }
        Ok(KeyStore {
            dir,
            keys: RwLock::new(keys),
        })
    }

    /// The file of key `kid`.
    pub fn path_of(&self, kid: &str, alg: &str) -> PathBuf {
        self.dir.join(format!("{kid}.{alg}.pem"))
    }

    /// The key `kid`, if this store holds it.
    pub fn get(&self, kid: &str) -> Option<Arc<SigningKeyPair>> {
        self.keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(kid)
            .cloned()
    }

    pub fn len(&self) -> usize {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes `key` durably (mode 0600, synced, renamed into place) and keeps it.
    pub fn insert(&self, key: SigningKeyPair) -> Result<Arc<SigningKeyPair>, KeyStoreError> {
        let pem = key.to_pem()?;
        let path = self.path_of(key.kid(), key.alg());
        let tmp = self.dir.join(format!(".{}.tmp", key.kid()));
        let _ = std::fs::remove_file(&tmp);
        write_private(&tmp, pem.as_bytes()).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        if let Ok(dir) = std::fs::File::open(&self.dir) {
            let _ = dir.sync_all();
        }
        let key = Arc::new(key);
        self.keys
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.kid().to_string(), key.clone());
        Ok(key)
    }

    /// Forgets key `kid` and deletes its file (a key that could not be published).
    pub fn remove(&self, kid: &str) {
        if let Some(key) = self
            .keys
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(kid)
        {
            let _ = std::fs::remove_file(self.path_of(kid, key.alg()));
        }
    }
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> Result<(), KeyStoreError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io(dir))
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> Result<(), KeyStoreError> {
    std::fs::create_dir_all(dir).map_err(io(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_survive_reopening_with_private_modes() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path().join("keys")).unwrap();
        assert!(store.is_empty());
        let key = store
            .insert(SigningKeyPair::generate("ES256").unwrap())
            .unwrap();
        let path = store.path_of(key.kid(), "ES256");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            let mode = std::fs::metadata(dir.path().join("keys"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o700);
        }
        std::fs::write(dir.path().join("keys/README"), "not a key").unwrap();
        let reopened = KeyStore::open(dir.path().join("keys")).unwrap();
        assert_eq!(reopened.len(), 1);
        assert_eq!(
            reopened.get(key.kid()).unwrap().public_jwk(),
            key.public_jwk()
        );
        reopened.remove(key.kid());
        assert!(!path.exists());
    }
}
