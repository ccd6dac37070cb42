//! The path normaliser and the route matcher under generated paths (proptest, bounded
//! so the suite stays fast): no path makes the normaliser panic; a normal path holds
//! nothing a lenient backend would read differently (`//`, `%2F`, `\`, `;`, dot
//! segments, encoded letters) and is its own normal form; the path a route forwards is
//! the one it matched; and a backend that decodes, splits on `\`, cuts `;` parameters
//! and merges slashes reads, from what the gateway forwards, the very resource the
//! gateway authorised.

use std::borrow::Cow;
use std::sync::{Arc, LazyLock};

use gatehouse_domain::{Command, State};
use gatehouse_gateway::metrics::Metrics;
use gatehouse_gateway::paths::normalize;
use gatehouse_gateway::table::{RouteMatch, RoutingTable};
use gatehouse_proto::events::{
    ApiDefinition, EndpointGroup, Endpoints, Resource, lifecycle::State as Lifecycle,
};
use http::Method;
use proptest::prelude::*;

const PREFIX: &str = "/ctx/1.0.0";

/// `/ctx/1.0.0` with an open `/*` next to literal, parameter and wildcard templates.
static TABLE: LazyLock<RoutingTable> = LazyLock::new(|| {
    let mut state = State::new();
    let resources = [
        "/*",
        "/admin",
        "/admin/users",
        "/users/{id}",
        "/users/me",
        "/files/*",
    ]
    .into_iter()
    .map(|path| Resource {
        method: "GET".into(),
        path: path.into(),
        auth_disabled: path == "/*",
        ..Default::default()
    })
    .collect();
    let definition = ApiDefinition {
        name: "Ctx".into(),
        context: "/ctx".into(),
        version: "1.0.0".into(),
        resources,
        endpoints: Some(Endpoints {
            production: Some(EndpointGroup {
                urls: vec!["http://backend.invalid:8000".into()],
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    gatehouse_testkit::domain::run(
        &mut state,
        Command::CreateApi {
            api_id: "ctx".into(),
            definition,
        },
    );
    gatehouse_testkit::domain::run(
        &mut state,
        Command::ChangeLifecycle {
            api_id: "ctx".into(),
            target: Lifecycle::Published,
            expected_version: None,
        },
    );
    RoutingTable::build(&state, &Arc::new(Metrics::default()))
});

/// The template `path` matches, if any.
fn template(path: &str) -> Option<String> {
    match TABLE.route(&Method::GET, path) {
        RouteMatch::Matched(route) => Some(route.resource().template.to_string()),
        _ => None,
    }
}

/// What a lenient backend makes of a path: every `%XX` decoded once, `\` read as `/`,
/// `;` parameters cut off each segment, empty segments dropped, dot segments resolved.
fn lenient(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).and_then(|b| hex(*b)),
                bytes.get(i + 2).and_then(|b| hex(*b)),
            )
        {
            decoded.push((h * 16 + l) as u8);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    let decoded = String::from_utf8_lossy(&decoded).replace('\\', "/");
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded
        .split('/')
        .map(|s| s.split(';').next().unwrap_or(""))
    {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            segment => segments.push(segment),
        }
    }
    format!("/{}", segments.join("/"))
}

/// Segments that attacks are made of, and arbitrary ones.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "admin",
            "users",
            "me",
            "files",
            "x",
            "",
            ".",
            "..",
            "%2e",
            "%2E%2e",
            ".%2E",
            "%2F",
            "%2f",
            "%5C",
            "%5c",
            "\\",
            ";",
            "a;b",
            "admin;x",
            "admin%3Bx",
            "%61dmin",
            "%41DMIN",
            "ad%6Din",
            "%20",
            "%25",
            "%2561",
            "%00",
            "%",
            "%z",
            "%C3%A9",
            "~",
            "%7E",
            "-",
            "users%2Fme",
            "%2e%2e%2fadmin",
        ])
        .prop_map(str::to_string),
        "[a-zA-Z0-9%._~;\\\\-]{0,6}",
    ]
}

/// `/ctx/1.0.0`, written in one of the ways that mean it, then up to six segments.
fn path() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec![PREFIX, "//ctx/1.0.0", "/ctx//1.0.0", "/ct%78/%31.0.0"]),
        prop::collection::vec(segment(), 0..6),
        any::<bool>(),
    )
        .prop_map(|(prefix, segments, trailing)| {
            let mut path = prefix.to_string();
            for segment in segments {
                path.push('/');
                path.push_str(&segment);
            }
            if trailing {
                path.push('/');
            }
            path
        })
}

fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|s| s == "." || s == "..")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn no_string_makes_the_normaliser_panic(path in "\\PC{0,120}") {
        let _ = normalize(&path);
    }

    #[test]
    fn a_normal_path_holds_nothing_a_backend_could_read_otherwise(path in path()) {
        if let Ok(normal) = normalize(&path) {
            let upper = normal.to_ascii_uppercase();
            prop_assert!(!normal.contains("//"), "{normal}");
            prop_assert!(!normal.contains('\\') && !normal.contains(';'), "{normal}");
            for encoded in ["%2F", "%5C", "%3B", "%00", "%2E"] {
                prop_assert!(!upper.contains(encoded), "{normal}");
            }
            prop_assert!(!has_dot_segment(&normal), "{normal}");
            // Encoded unreserved characters are decoded; other encodings upper-case.
            let bytes = normal.as_bytes();
            for (i, _) in normal.match_indices('%') {
                let byte = u8::from_str_radix(&normal[i + 1..i + 3], 16).unwrap();
                prop_assert!(!(byte.is_ascii_alphanumeric() || b"-._~".contains(&byte)), "{normal}");
                prop_assert!(!bytes[i + 1].is_ascii_lowercase() && !bytes[i + 2].is_ascii_lowercase());
            }
        }
    }

    #[test]
    fn the_normal_form_is_a_fixed_point(path in path()) {
        if let Ok(normal) = normalize(&path) {
            let again = normalize(&normal);
            prop_assert!(matches!(&again, Ok(Cow::Borrowed(p)) if *p == normal), "{normal} -> {again:?}");
        }
    }

    #[test]
    fn a_route_forwards_the_path_it_matched(path in path()) {
        if let Ok(normal) = normalize(&path)
            && let RouteMatch::Matched(route) = TABLE.route(&Method::GET, &normal)
        {
            let forwarded = route.resource_path(&normal);
            prop_assert!(normal.ends_with(forwarded));
            prop_assert_eq!(
                template(&format!("{PREFIX}{forwarded}")),
                Some(route.resource().template.to_string()),
                "{} forwards {}", normal, forwarded
            );
        }
    }

    #[test]
    fn a_lenient_backend_reads_the_resource_the_gateway_matched(path in path()) {
        if let Ok(normal) = normalize(&path)
            && let RouteMatch::Matched(route) = TABLE.route(&Method::GET, &normal)
        {
            let forwarded = route.resource_path(&normal);
            let backend = lenient(forwarded);
            prop_assert_eq!(
                template(&format!("{PREFIX}{backend}")),
                Some(route.resource().template.to_string()),
                "{} (from {}) is {} to the backend", forwarded, path, backend
            );
        }
    }
}

/// The property above is the attack: without the normaliser, some generated path
/// reaches the backend as another resource than the gateway matched.
#[test]
fn without_normalising_a_lenient_backend_is_fooled() {
    for path in [
        "/ctx/1.0.0//admin",
        "/ctx/1.0.0/%61dmin",
        "/ctx/1.0.0/admin;x",
        "/ctx/1.0.0/x%2F..%2Fadmin",
    ] {
        let RouteMatch::Matched(route) = TABLE.route(&Method::GET, path) else {
            continue;
        };
        let raw = route.resource().template.to_string();
        let backend = template(&format!("{PREFIX}{}", lenient(route.resource_path(path))));
        assert_ne!(Some(raw.clone()), backend, "{path}: raw matching is fooled");
        assert_eq!(raw, "/*", "{path}");
        assert!(normalize(path).is_err() || template(&normalize(path).unwrap()) == backend);
    }
}
