//! The last configuration, kept on the gateway's own disk for starts when neither control
//! nor the log answers.
//!
//! One file, `<data dir>/snapshot.bin`: the magic line `GHSNAP1\n`, the CRC-32 (little
//! endian) and length (u64, little endian) of the payload, then the payload, an encoded
//! `gatehouse.events.v1.Snapshot` (state + the sequence it covers; never secret
//! hashes). It is written to a temporary file, flushed to disk and renamed over the old
//! one, so a crash leaves either the previous snapshot or the new one, never half of
//! one; a file that fails its checksum is ignored.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use gatehouse_proto::events::Snapshot;
use prost::Message;

const MAGIC: &[u8; 8] = b"GHSNAP1\n";

/// Where the snapshot lives.
#[derive(Debug, Clone)]
pub struct DiskSnapshot {
    path: PathBuf,
}

impl DiskSnapshot {
    pub fn new(data_dir: &Path) -> Self {
        DiskSnapshot {
            path: data_dir.join("snapshot.bin"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `snapshot` atomically (blocking I/O: call from a blocking task).
    pub fn save(&self, snapshot: &Snapshot) -> anyhow::Result<()> {
        let payload = snapshot.encode_to_vec();
        let dir = self
            .path
            .parent()
            .context("the snapshot path has no directory")?;
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let tmp = self.path.with_extension("bin.tmp");
        {
            let mut file = std::fs::File::create(&tmp)
                .with_context(|| format!("cannot write {}", tmp.display()))?;
            file.write_all(MAGIC)?;
            file.write_all(&crc32fast::hash(&payload).to_le_bytes())?;
            file.write_all(&(payload.len() as u64).to_le_bytes())?;
            file.write_all(&payload)?;
            file.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)
            .with_context(|| format!("cannot move {} into place", tmp.display()))?;
        if let Ok(dir) = std::fs::File::open(dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    }

    /// The saved snapshot; `Ok(None)` when there is none.
    pub fn load(&self) -> anyhow::Result<Option<Snapshot>> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read {}", self.path.display()));
            }
        };
        let header = MAGIC.len() + 4 + 8;
        anyhow::ensure!(
            bytes.len() >= header && &bytes[..MAGIC.len()] == MAGIC,
            "{} is not a gateway snapshot",
            self.path.display()
        );
        let crc = u32::from_le_bytes(bytes[8..12].try_into()?);
        let len = u64::from_le_bytes(bytes[12..20].try_into()?) as usize;
        let payload = &bytes[header..];
        anyhow::ensure!(
            payload.len() == len && crc32fast::hash(payload) == crc,
            "{} is damaged (length or checksum)",
            self.path.display()
        );
        Ok(Some(Snapshot::decode(payload)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_damage() {
        let dir = tempfile::tempdir().unwrap();
        let disk = DiskSnapshot::new(dir.path());
        assert!(disk.load().unwrap().is_none());
        let snapshot = Snapshot {
            sequence: 42,
            ..Default::default()
        };
        disk.save(&snapshot).unwrap();
        assert_eq!(disk.load().unwrap().unwrap().sequence, 42);
        let mut bytes = std::fs::read(disk.path()).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(disk.path(), bytes).unwrap();
        assert!(disk.load().is_err());
    }
}
