//! Tokens signed per second on one thread, for each algorithm, beside nothing else:
//! what `bench/tokens.sh` compares with `openssl speed` (run it in release mode).
//!
//! ```text
//! cargo run --release -p gatehouse-tokens --example sign_rate [seconds per algorithm]
//! ```

use std::time::{Duration, Instant};

use gatehouse_tokens::{AccessClaims, SigningKeyPair};

fn main() {
    let seconds: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let claims = AccessClaims {
        iss: gatehouse_tokens::DEFAULT_ISSUER.into(),
        sub: "alice".into(),
        aud: gatehouse_tokens::API_AUDIENCE.into(),
        exp: 2_000_000_000,
        nbf: 1_700_000_000,
        iat: 1_700_000_000,
        jti: "0123456789abcdef0123456789abcdef".into(),
        scope: "default read:users".into(),
        client_id: "KzGh5Tk8qW_i-zouSORwq52U8q0".into(),
        application_id: "6f1c2e5a-7d2b-4a59-9a1e-3c4b5d6e7f80".into(),
        application_name: "MyPythonApp".into(),
        key_type: "PRODUCTION".into(),
        application_tier: "Unlimited".into(),
    };
    for alg in ["RS256", "ES256"] {
        let key = SigningKeyPair::generate(alg).expect("a key");
        let budget = Duration::from_secs_f64(seconds);
        let start = Instant::now();
        let mut signed = 0u64;
        while start.elapsed() < budget {
            std::hint::black_box(key.sign(&claims).expect("signed"));
            signed += 1;
        }
        let rate = signed as f64 / start.elapsed().as_secs_f64();
        println!("{alg}: {rate:.0} tokens/s on one thread");
    }
}
