//! The last configuration, kept on the gateway's own disk for starts when neither control
//! nor the log answers.
//!
//! One file, `<data dir>/snapshot.bin`: the magic line `GHSNAP1\n`, the CRC-32 (little
//! endian) and length (u64, little endian) of the payload, then the payload, an encoded
//! `gatehouse.events.v1.Snapshot` (state + the sequence it covers; never secret
//! hashes). It is written to a temporary file, flushed to disk and renamed over the old
//! one, so a crash leaves either the previous snapshot or the new one, never half of
//! one; a file that fails its checksum is ignored.
//!
//! The syncer saves its [`State`] itself ([`DiskSnapshot::save_state`]): the payload is
//! encoded record by record as it is written — the bytes `Snapshot::encode` would give —
//! so saving never holds a second copy of the configuration (a `Snapshot` message, or
//! its encoding) in memory; the checksum and length are written last, over the header's
//! placeholder.

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use gatehouse_domain::State;
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
        self.write(|out| out.write_all(&snapshot.encode_to_vec()))
    }

    /// Writes `state` as a snapshot, atomically, encoding one record at a time (blocking
    /// I/O: call from a blocking task).
    pub fn save_state(&self, state: &State) -> anyhow::Result<()> {
        self.write(|out| encode_state(state, out))
    }

    /// Writes the header and the payload `write` streams to a temporary file, then
    /// moves it into place.
    fn write(
        &self,
        write: impl FnOnce(&mut Payload<std::io::BufWriter<std::fs::File>>) -> std::io::Result<()>,
    ) -> anyhow::Result<()> {
        let dir = self
            .path
            .parent()
            .context("the snapshot path has no directory")?;
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let tmp = self.path.with_extension("bin.tmp");
        {
            let file = std::fs::File::create(&tmp)
                .with_context(|| format!("cannot write {}", tmp.display()))?;
            let mut out = std::io::BufWriter::new(file);
            out.write_all(MAGIC)?;
            out.write_all(&[0; 12])?;
            let mut payload = Payload {
                out,
                crc: crc32fast::Hasher::new(),
                len: 0,
            };
            write(&mut payload)?;
            let Payload { out, crc, len } = payload;
            let mut file = out.into_inner().map_err(|e| e.into_error())?;
            file.seek(SeekFrom::Start(MAGIC.len() as u64))?;
            file.write_all(&crc.finalize().to_le_bytes())?;
            file.write_all(&len.to_le_bytes())?;
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

/// The payload as it is written: its checksum and length so far.
struct Payload<W> {
    out: W,
    crc: crc32fast::Hasher,
    len: u64,
}

impl<W: Write> Write for Payload<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let written = self.out.write(bytes)?;
        self.crc.update(&bytes[..written]);
        self.len += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// `state` encoded as `gatehouse.events.v1.Snapshot`, field by field and record by
/// record (the field numbers are the message's).
fn encode_state(state: &State, out: &mut impl Write) -> std::io::Result<()> {
    use prost::encoding::{message, uint64};
    let mut buf = Vec::new();
    let mut record = |encode: &dyn Fn(&mut Vec<u8>)| {
        buf.clear();
        encode(&mut buf);
        out.write_all(&buf)
    };
    if state.sequence() != 0 {
        record(&|b| uint64::encode(1, &state.sequence(), b))?;
    }
    for api in state.apis() {
        record(&|b| message::encode(2, api, b))?;
    }
    for policy in state.policies() {
        record(&|b| message::encode(3, policy, b))?;
    }
    for application in state.applications() {
        record(&|b| message::encode(4, application, b))?;
    }
    for subscription in state.subscriptions() {
        record(&|b| message::encode(5, subscription, b))?;
    }
    for client in state.clients() {
        record(&|b| message::encode(6, client, b))?;
    }
    for key in state.signing_keys() {
        record(&|b| message::encode(7, key, b))?;
    }
    for token in state.revoked_tokens() {
        record(&|b| message::encode(8, token, b))?;
    }
    if state.config_hash_value() != 0 {
        record(&|b| uint64::encode(9, &state.config_hash_value(), b))?;
    }
    Ok(())
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

    #[test]
    fn a_state_is_saved_as_its_snapshot() {
        use gatehouse_domain::Command;
        use gatehouse_testkit::domain::run;
        let dir = tempfile::tempdir().unwrap();
        let disk = DiskSnapshot::new(dir.path());
        let mut state = State::new();
        run(
            &mut state,
            Command::CreateApplication {
                application_id: "app".into(),
                name: "App".into(),
                owner: "alice".into(),
                throttling_tier: String::new(),
                description: String::new(),
            },
        );
        run(
            &mut state,
            Command::RevokeToken {
                jti: "jti".into(),
                expires_at: Some(gatehouse_proto::Timestamp {
                    seconds: i64::MAX / 2,
                    nanos: 0,
                }),
                client_id: "c".into(),
            },
        );
        disk.save_state(&state).unwrap();
        let saved = disk.load().unwrap().unwrap();
        assert_eq!(saved, state.to_snapshot());
        assert_eq!(saved.encode_to_vec(), state.to_snapshot().encode_to_vec());
        assert_eq!(State::from_snapshot(saved), state);
    }
}
