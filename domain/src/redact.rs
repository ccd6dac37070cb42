//! Secret hashes leave the log for token-service alone.
//!
//! Consumer secrets are stored as argon2 hashes on the log (in `ClientRegistered` and
//! `ClientSecretRegenerated` events, and so in the folded `OAuthClient` records): only
//! token-service needs them, to check a client's secret. Every other reader — a
//! gateway, an admin watching the history, a snapshot served over gRPC — gets them
//! cleared by these functions, so a hash never crosses a plane where it is not needed.

use gatehouse_proto::events::{EventEnvelope, Snapshot, event_envelope::Event};

/// Clears the secret hash an event carries, if any.
pub fn redact_event(envelope: &mut EventEnvelope) {
    match envelope.event.as_mut() {
        Some(Event::ClientRegistered(e)) => {
            if let Some(client) = e.client.as_mut() {
                client.secret_hash.clear();
            }
        }
        Some(Event::ClientSecretRegenerated(e)) => e.secret_hash.clear(),
        _ => {}
    }
}

/// Clears every client's secret hash in a snapshot.
pub fn redact_snapshot(snapshot: &mut Snapshot) {
    for client in &mut snapshot.clients {
        client.secret_hash.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_proto::events::{ClientRegistered, ClientSecretRegenerated, OAuthClient};
    use prost::Message;

    #[test]
    fn no_hash_survives() {
        let hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA";
        let mut events = [
            Event::ClientRegistered(ClientRegistered {
                client: Some(OAuthClient {
                    client_id: "c".into(),
                    secret_hash: hash.into(),
                    ..Default::default()
                }),
            }),
            Event::ClientSecretRegenerated(ClientSecretRegenerated {
                secret_hash: hash.into(),
            }),
        ]
        .map(|event| EventEnvelope {
            event: Some(event),
            ..Default::default()
        });
        for envelope in &mut events {
            redact_event(envelope);
            let bytes = envelope.encode_to_vec();
            assert!(!bytes.windows(7).any(|w| w == b"$argon2"));
        }
        let mut snapshot = Snapshot {
            clients: vec![OAuthClient {
                secret_hash: hash.into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        redact_snapshot(&mut snapshot);
        assert!(snapshot.clients[0].secret_hash.is_empty());
    }
}
