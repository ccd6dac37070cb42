//! The form parser under arbitrary input, bounded so the suite stays fast (a few
//! hundred cases of at most a few KiB each, well under a second in debug builds): no
//! bytes make it panic or exceed its cap, it agrees with `form_urlencoded`'s own
//! decoding, it round-trips what `form_urlencoded` serialises, and it finds every
//! repeated name.

use std::collections::HashMap;

use gatehouse_token_service::form::{FormError, parse};
use proptest::prelude::*;

/// Distinct parameter names (any Unicode, empty included) with any values.
fn distinct_pairs(max: usize) -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::hash_map(".{0,12}", ".{0,24}", 0..max)
        .prop_map(|map| map.into_iter().collect())
        .prop_shuffle()
}

fn serialise(pairs: &[(String, String)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn no_bytes_make_it_panic_or_exceed_its_cap(
        body in prop::collection::vec(any::<u8>(), 0..2048),
        cap in 0usize..48,
    ) {
        if let Ok(params) = parse(&body, cap) {
            prop_assert!(params.len() <= cap);
        }
    }

    #[test]
    fn form_like_bytes_decode_as_form_urlencoded_decodes_them(
        body in "([a-z%+=&]|%[0-9A-Fa-f]{2}){0,300}",
    ) {
        let reference: Vec<(String, String)> = form_urlencoded::parse(body.as_bytes())
            .map(|(n, v)| (n.into_owned(), v.into_owned()))
            .collect();
        let mut first: HashMap<&str, &str> = HashMap::new();
        let repeated = reference
            .iter()
            .find(|(n, v)| first.insert(n.as_str(), v.as_str()).is_some())
            .map(|(n, _)| n.clone());
        match parse(body.as_bytes(), usize::MAX) {
            Ok(params) => {
                prop_assert!(repeated.is_none());
                prop_assert_eq!(params.len(), first.len());
                for (name, value) in &first {
                    prop_assert_eq!(params.raw(name), Some(*value));
                }
            }
            Err(FormError::Repeated { name }) => prop_assert_eq!(Some(name), repeated),
            Err(other) => prop_assert!(false, "unexpected {other:?}"),
        }
    }

    #[test]
    fn it_round_trips_what_form_urlencoded_serialises(pairs in distinct_pairs(40)) {
        let params = parse(serialise(&pairs).as_bytes(), 64).unwrap();
        prop_assert_eq!(params.len(), pairs.len());
        for (name, value) in &pairs {
            prop_assert_eq!(params.raw(name), Some(value.as_str()));
            prop_assert_eq!(params.get(name), (!value.is_empty()).then_some(value.as_str()));
        }
    }

    #[test]
    fn the_cap_is_exact_and_parsing_stops_there(pairs in distinct_pairs(40), cap in 0usize..40) {
        let body = serialise(&pairs);
        match parse(body.as_bytes(), cap) {
            Ok(params) => prop_assert!(pairs.len() <= cap && params.len() == pairs.len()),
            Err(error) => {
                prop_assert!(pairs.len() > cap);
                prop_assert_eq!(error, FormError::TooManyParameters { max: cap });
            }
        }
        // Garbage after the cap's worth of pairs is never looked at: the same error.
        if pairs.len() > cap {
            let tail = format!("{body}&{}", "%ZZ=&".repeat(1000));
            prop_assert_eq!(
                parse(tail.as_bytes(), cap),
                Err(FormError::TooManyParameters { max: cap })
            );
        }
    }

    #[test]
    fn every_repeated_name_is_found(
        pairs in distinct_pairs(30).prop_filter("one pair at least", |p| !p.is_empty()),
        pick in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        value in ".{0,8}",
    ) {
        let (name, _) = pick.get(&pairs).clone();
        let mut repeated = pairs.clone();
        let position = at.index(repeated.len() + 1);
        repeated.insert(position, (name.clone(), value));
        prop_assert_eq!(
            parse(serialise(&repeated).as_bytes(), 64),
            Err(FormError::Repeated { name })
        );
    }
}
