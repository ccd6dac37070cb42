//! Private signing keys: token-service's side of the tokens.
//!
//! A [`SigningKeyPair`] is generated once (RSA-2048 for RS256, P-256 for ES256), stored
//! by token-service as a PKCS#8 PEM file in its own key store, and published on the log
//! as a [`SigningKey`] record that carries the public JWK only.
//!
//! Signing is AWS-LC's (through `aws-lc-rs`: RSA PKCS#1 v1.5 with SHA-256, ECDSA P-256
//! with SHA-256, fixed-size signatures; the same assembly as OpenSSL's and BoringSSL's,
//! so an RS256 token costs about what `openssl speed rsa2048` says a signature costs —
//! ring's RSA signs at about half that rate), on a key parsed once: a token costs its
//! JSON, two base64 encodings and the signature, nothing else. Key generation and the
//! PEM files stay with the RustCrypto crates.
//!
//! The key id is the key's RFC 7638 JWK thumbprint (SHA-256, base64url): it is derived
//! from the public key alone, so it is stable across restarts and the same on every
//! node, and it only holds letters, digits, `-` and `_` (a valid log subject token).

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, RSA_PKCS1_SHA256, RsaKeyPair,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gatehouse_proto::events::SigningKey;
use jsonwebtoken::Algorithm;
use p256::elliptic_curve::Generate;
use p256::elliptic_curve::sec1::ToSec1Point;
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use rsa::traits::PublicKeyParts;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::AccessClaims;

/// Modulus size of generated RSA keys.
const RSA_BITS: usize = 2048;

/// What can go wrong with a signing key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("unsupported signing algorithm {0:?}: use RS256 or ES256")]
    UnsupportedAlgorithm(String),
    #[error("cannot generate a {alg} key: {reason}")]
    Generate { alg: &'static str, reason: String },
    #[error("signing key {kid}: not a PKCS#8 PEM {alg} private key: {reason}")]
    Pem {
        kid: String,
        alg: &'static str,
        reason: String,
    },
    #[error("cannot sign with key {kid}: {reason}")]
    Sign { kid: String, reason: String },
}

/// The private half of a key, for PEM export and the public JWK.
enum Private {
    Rsa(Box<rsa::PrivateKey>),
    Ec(p256::SecretKey),
}

/// The key as AWS-LC signs with it, parsed once.
enum Signer {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

/// A private signing key with its id and algorithm.
///
/// Holds the private key ready to sign (AWS-LC's key pair and the token header, built
/// once). `Debug` shows the kid and algorithm only.
pub struct SigningKeyPair {
    kid: String,
    alg: Algorithm,
    private: Private,
    signer: Signer,
    /// The base64url of the JWT header (`alg`, `kid`, `typ`), the same for every token.
    header: String,
    rng: SystemRandom,
    public_jwk: String,
}

impl std::fmt::Debug for SigningKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeyPair")
            .field("kid", &self.kid)
            .field("alg", &self.alg())
            .finish_non_exhaustive()
    }
}

/// `RS256` or `ES256` as a jsonwebtoken algorithm.
pub(crate) fn parse_alg(alg: &str) -> Result<Algorithm, KeyError> {
    match alg {
        "RS256" => Ok(Algorithm::RS256),
        "ES256" => Ok(Algorithm::ES256),
        other => Err(KeyError::UnsupportedAlgorithm(other.to_string())),
    }
}

pub(crate) fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::ES256 => "ES256",
        _ => "RS256",
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

impl SigningKeyPair {
    /// A new key for `alg` (`RS256`: RSA-2048, `ES256`: P-256).
    pub fn generate(alg: &str) -> Result<Self, KeyError> {
        let alg = parse_alg(alg)?;
        let private = match alg {
            Algorithm::ES256 => Private::Ec(p256::SecretKey::generate_from_rng(&mut rand::rng())),
            _ => {
                let key = rsa::PrivateKey::new(&mut rand::rng(), RSA_BITS).map_err(|e| {
                    KeyError::Generate {
                        alg: "RS256",
                        reason: e.to_string(),
                    }
                })?;
                Private::Rsa(Box::new(key))
            }
        };
        Self::assemble(None, alg, private)
    }

    /// The key stored as [`to_pem`](Self::to_pem) wrote it. `alg` must match the key's
    /// type (an RSA key for RS256, a P-256 key for ES256).
    pub fn from_pem(kid: &str, alg: &str, pem: &str) -> Result<Self, KeyError> {
        let parsed = parse_alg(alg)?;
        let pem_error = |reason: String| KeyError::Pem {
            kid: kid.to_string(),
            alg: alg_name(parsed),
            reason,
        };
        let private = match parsed {
            Algorithm::ES256 => Private::Ec(
                p256::SecretKey::from_pkcs8_pem(pem).map_err(|e| pem_error(e.to_string()))?,
            ),
            _ => Private::Rsa(Box::new(
                rsa::PrivateKey::from_pkcs8_pem(pem).map_err(|e| pem_error(e.to_string()))?,
            )),
        };
        Self::assemble(Some(kid.to_string()), parsed, private)
    }

    fn assemble(kid: Option<String>, alg: Algorithm, private: Private) -> Result<Self, KeyError> {
        let generate_error = |reason: String| KeyError::Generate {
            alg: alg_name(alg),
            reason,
        };
        let rng = SystemRandom::new();
        // The RFC 7638 members of the public key, in lexicographic order.
        let (members, signer) = match &private {
            Private::Rsa(key) => {
                let der = key
                    .to_pkcs1_der()
                    .map_err(|e| generate_error(e.to_string()))?;
                let members = json!({
                    "e": b64(&key.e_bytes()),
                    "kty": "RSA",
                    "n": b64(&key.n_bytes()),
                });
                let signer = RsaKeyPair::from_der(der.as_bytes())
                    .map_err(|e| generate_error(format!("AWS-LC refuses the RSA key: {e}")))?;
                (members, Signer::Rsa(signer))
            }
            Private::Ec(key) => {
                // 0x04 || x (32 bytes) || y (32 bytes)
                let point = key.public_key().to_uncompressed_point();
                let point: &[u8] = point.as_ref();
                if point.len() != 65 {
                    return Err(generate_error("unexpected P-256 point encoding".into()));
                }
                let members = json!({
                    "crv": "P-256",
                    "kty": "EC",
                    "x": b64(&point[1..33]),
                    "y": b64(&point[33..65]),
                });
                let scalar = key.to_bytes();
                let signer = EcdsaKeyPair::from_private_key_and_public_key(
                    &ECDSA_P256_SHA256_FIXED_SIGNING,
                    scalar.as_ref(),
                    point,
                )
                .map_err(|e| generate_error(format!("AWS-LC refuses the P-256 key: {e}")))?;
                (members, Signer::Ec(signer))
            }
        };
        // serde_json's maps are sorted and `to_string` adds no whitespace: exactly the
        // RFC 7638 input.
        let thumbprint = b64(&Sha256::digest(members.to_string().as_bytes()));
        let kid = kid.unwrap_or(thumbprint);
        let mut jwk = members;
        let object = jwk.as_object_mut().expect("a JSON object");
        object.insert("kid".into(), kid.clone().into());
        object.insert("alg".into(), alg_name(alg).into());
        object.insert("use".into(), "sig".into());
        let header = b64(json!({"alg": alg_name(alg), "kid": kid, "typ": "JWT"})
            .to_string()
            .as_bytes());
        Ok(SigningKeyPair {
            kid,
            alg,
            private,
            signer,
            header,
            rng,
            public_jwk: jwk.to_string(),
        })
    }

    /// The key id (the `kid` of the tokens it signs).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// `RS256` or `ES256`.
    pub fn alg(&self) -> &'static str {
        alg_name(self.alg)
    }

    /// The private key as PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), for the key store.
    pub fn to_pem(&self) -> Result<String, KeyError> {
        let pem = match &self.private {
            Private::Rsa(key) => key.to_pkcs8_pem(LineEnding::LF),
            Private::Ec(key) => key.to_pkcs8_pem(LineEnding::LF),
        }
        .map_err(|e| KeyError::Pem {
            kid: self.kid.clone(),
            alg: self.alg(),
            reason: e.to_string(),
        })?;
        Ok(pem.to_string())
    }

    /// The public key as an RFC 7517 JWK: `kty`, `kid`, `alg`, `use: sig`, and `n`/`e`
    /// (RSA) or `crv`/`x`/`y` (EC).
    pub fn public_jwk(&self) -> String {
        self.public_jwk.clone()
    }

    /// The record published on the log: public material only.
    pub fn to_signing_key_record(&self) -> SigningKey {
        SigningKey {
            kid: self.kid.clone(),
            alg: self.alg().to_string(),
            public_jwk: self.public_jwk.clone(),
            active: true,
            ..Default::default()
        }
    }

    /// A signed JWT of `claims`, with `kid` and `alg` in its header (JWS compact
    /// serialisation, RFC 7515 §7.1).
    pub fn sign(&self, claims: &AccessClaims) -> Result<String, KeyError> {
        let error = |reason: String| KeyError::Sign {
            kid: self.kid.clone(),
            reason,
        };
        let payload = serde_json::to_vec(claims).map_err(|e| error(e.to_string()))?;
        let mut token = String::with_capacity(self.header.len() + payload.len() * 4 / 3 + 400);
        token.push_str(&self.header);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&payload, &mut token);
        let signature = match &self.signer {
            Signer::Rsa(key) => {
                let mut signature = vec![0; key.public_modulus_len()];
                key.sign(
                    &RSA_PKCS1_SHA256,
                    &self.rng,
                    token.as_bytes(),
                    &mut signature,
                )
                .map_err(|e| error(e.to_string()))?;
                signature
            }
            Signer::Ec(key) => key
                .sign(&self.rng, token.as_bytes())
                .map_err(|e| error(e.to_string()))?
                .as_ref()
                .to_vec(),
        };
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&signature, &mut token);
        Ok(token)
    }
}
