//! The JWT parser under arbitrary input, bounded so the suite stays fast: no string
//! makes verification panic or succeed without a valid signature, and no change to a
//! valid token yields other claims.

use gatehouse_testkit::world::claims;
use gatehouse_tokens::{AccessClaims, SigningKeyPair, VerificationKeys, Verifier};
use proptest::prelude::*;

fn setup() -> (
    SigningKeyPair,
    VerificationKeys,
    Verifier,
    String,
    AccessClaims,
) {
    let key = SigningKeyPair::generate("ES256").unwrap();
    let record = key.to_signing_key_record();
    let keys = VerificationKeys::new([&record]);
    let verifier = Verifier::new(
        gatehouse_tokens::DEFAULT_ISSUER,
        gatehouse_tokens::API_AUDIENCE,
    );
    let claims = claims("app", false, "read");
    let token = key.sign(&claims).unwrap();
    (key, keys, verifier, token, claims)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn no_string_verifies_without_the_key(token in ".{0,400}") {
        let (_, keys, verifier, _, _) = setup();
        prop_assert!(verifier.verify(&token, &keys).is_err());
    }

    #[test]
    fn three_arbitrary_segments_do_not_verify(
        a in "[A-Za-z0-9_-]{0,120}", b in "[A-Za-z0-9_-]{0,200}", c in "[A-Za-z0-9_-]{0,120}"
    ) {
        let (_, keys, verifier, _, _) = setup();
        let token = format!("{a}.{b}.{c}");
        prop_assert!(verifier.verify(&token, &keys).is_err());
    }

    #[test]
    fn no_change_to_a_valid_token_yields_other_claims(
        position in any::<prop::sample::Index>(),
        replacement in "[A-Za-z0-9_.=+/-]",
    ) {
        let (_, keys, verifier, token, claims) = setup();
        let mut bytes = token.clone().into_bytes();
        let i = position.index(bytes.len());
        bytes[i] = replacement.as_bytes()[0];
        let changed = String::from_utf8(bytes).unwrap();
        if let Ok(verified) = verifier.verify(&changed, &keys) {
            // Only a change the encoding ignores (an unused bit of base64) can verify.
            prop_assert_eq!(verified, claims);
        }
    }
}
