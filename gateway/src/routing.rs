//! Path lookup: the context prefixes of a path, and a segment trie (a radix tree keyed
//! by whole path segments) for resource templates.
//!
//! - [`context_prefixes`] yields the prefixes of a request path that could be a
//!   context, **longest first** (`/shop/orders` before `/shop` for
//!   `/shop/orders/1.0.0/items`), at most as many as the deepest context has segments:
//!   the routing table looks each up in its map of contexts, so the cost depends on the
//!   depth of the contexts, not on the number of APIs — 10,000 APIs route as fast as
//!   ten.
//! - [`PathTrie`] matches the path that remains against an API's resource templates:
//!   literal segments, `{param}` (exactly one non-empty segment) and a trailing `*` (the
//!   rest of the path, possibly nothing). When several templates match, a literal segment
//!   beats a parameter, which beats `*`, with backtracking (`/users/me` and `/users/{id}`
//!   both work).
//!
//! Why not `matchit` (axum's router)? It refuses some pairs of templates that WSO2 — and
//! our domain's validation — accept in one API, such as `/files/{id}` next to
//! `/files/*`, or `/a/{x}` next to `/a/{y}/b`; a segment trie with backtracking has no
//! such conflicts, and it is a few dozen lines.
//!
//! Paths are matched in the normal form [`crate::paths`] gives them before routing
//! (`//` merged, encoded unreserved characters decoded; `%2F`, `\`, `;` and dot segments
//! refused), and that same form is forwarded, so what matches is exactly what the
//! backend gets. [`has_dot_segments`] is a second guard for callers of the table
//! itself: `.` / `..` segments (also percent-encoded) never match, so
//! `/client/1.0.0/users/../admin` can never reach a backend path the API does not
//! expose.

use std::collections::HashMap;

/// Whether any segment of `path` is `.` or `..`, literally or percent-encoded
/// (`%2e`). Allocates nothing: it runs on every request.
pub fn has_dot_segments(path: &str) -> bool {
    path.split('/').any(|segment| {
        let bytes = segment.as_bytes();
        let mut dots = 0;
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'.' {
                i += 1;
            } else if bytes[i] == b'%'
                && bytes.get(i + 1) == Some(&b'2')
                && bytes
                    .get(i + 2)
                    .is_some_and(|b| b.eq_ignore_ascii_case(&b'e'))
            {
                i += 3;
            } else {
                return false;
            }
            dots += 1;
            if dots > 2 {
                return false;
            }
        }
        dots > 0
    })
}

/// The prefixes of `path` that a context could be, longest first, each with the rest
/// of the path after it (`""` or starting with `/`): whole segments, at most `depth` of
/// them. An empty segment (`//`) ends them, as no context has one. Allocates nothing:
/// it runs on every request.
pub fn context_prefixes(path: &str, depth: usize) -> impl Iterator<Item = (&str, &str)> {
    let mut end = 0;
    for _ in 0..depth {
        let Some(after) = path[end..].strip_prefix('/') else {
            break;
        };
        let segment = after.find('/').unwrap_or(after.len());
        if segment == 0 {
            break;
        }
        end += 1 + segment;
    }
    let mut next = Some(end);
    std::iter::from_fn(move || {
        let end = next.filter(|&e| e > 0)?;
        next = path[..end].rfind('/');
        Some((&path[..end], &path[end..]))
    })
}

/// Resource templates to values, with `{param}` and trailing `*`. Each node is itself a
/// trie: what matches the rest of a path from here.
#[derive(Debug)]
pub struct PathTrie<T> {
    /// Literal next segments.
    statics: HashMap<Box<str>, PathTrie<T>, foldhash::fast::FixedState>,
    /// A `{param}` next segment.
    param: Option<Box<PathTrie<T>>>,
    /// A template ending in `/*` at this node.
    rest: Option<T>,
    /// A template ending exactly here.
    value: Option<T>,
}

impl<T> Default for PathTrie<T> {
    fn default() -> Self {
        PathTrie {
            statics: HashMap::default(),
            param: None,
            rest: None,
            value: None,
        }
    }
}

impl<T> PathTrie<T> {
    /// The value stored for `template` (`/users/{id}`, `/files/*`, `/`), created by
    /// `make` if absent. Templates that differ only in parameter names are the same.
    pub fn entry(&mut self, template: &str, make: impl FnOnce() -> T) -> &mut T {
        let mut node = self;
        let segments: Vec<&str> = template.split('/').filter(|s| !s.is_empty()).collect();
        for (i, segment) in segments.iter().enumerate() {
            let last = i + 1 == segments.len();
            if *segment == "*" && last {
                return node.rest.get_or_insert_with(make);
            }
            node = if segment.starts_with('{') && segment.ends_with('}') {
                node.param.get_or_insert_with(Box::default)
            } else {
                node.statics.entry((*segment).into()).or_default()
            };
        }
        node.value.get_or_insert_with(make)
    }

    /// The value of the best template matching `path` (`/users/42`; a trailing `/` is
    /// ignored).
    pub fn at(&self, path: &str) -> Option<&T> {
        let path = path.strip_prefix('/').unwrap_or(path);
        let path = path.strip_suffix('/').unwrap_or(path);
        find(self, path)
    }
}

/// `path` has no leading `/`; `""` is the end.
fn find<'t, T>(node: &'t PathTrie<T>, path: &str) -> Option<&'t T> {
    if path.is_empty() {
        return node.value.as_ref().or(node.rest.as_ref());
    }
    let (segment, after) = match path.find('/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (path, ""),
    };
    // "a/" split gives after = "" which would end the match one segment early only if
    // the path had a trailing slash, which `at` strips; an inner "//" gives an empty
    // segment, which only `*` matches.
    if let Some(child) = node.statics.get(segment)
        && let Some(found) = find(child, after)
    {
        return Some(found);
    }
    if !segment.is_empty()
        && let Some(param) = node.param.as_deref()
        && let Some(found) = find(param, after)
    {
        return Some(found);
    }
    node.rest.as_ref()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trie(templates: &[&'static str]) -> PathTrie<&'static str> {
        let mut trie = PathTrie::default();
        for t in templates {
            trie.entry(t, || *t);
        }
        trie
    }

    #[test]
    fn literal_beats_param_beats_wildcard() {
        let t = trie(&["/users", "/users/{id}", "/users/me", "/users/*", "/"]);
        assert_eq!(t.at("/users"), Some(&"/users"));
        assert_eq!(t.at("/users/"), Some(&"/users"));
        assert_eq!(t.at("/users/me"), Some(&"/users/me"));
        assert_eq!(t.at("/users/42"), Some(&"/users/{id}"));
        assert_eq!(t.at("/users/42/orders"), Some(&"/users/*"));
        assert_eq!(t.at("/"), Some(&"/"));
        assert_eq!(t.at(""), Some(&"/"));
        assert_eq!(t.at("/other"), None);
    }

    #[test]
    fn backtracks_from_literal_to_param() {
        let t = trie(&["/a/b/c", "/a/{x}/d"]);
        assert_eq!(t.at("/a/b/d"), Some(&"/a/{x}/d"));
        assert_eq!(t.at("/a/b/c"), Some(&"/a/b/c"));
        assert_eq!(t.at("/a/b/e"), None);
    }

    #[test]
    fn param_and_wildcard_coexist_where_matchit_refuses() {
        let t = trie(&["/files/{id}", "/files/*", "/a/{x}", "/a/{y}/b"]);
        assert_eq!(t.at("/files/1"), Some(&"/files/{id}"));
        assert_eq!(t.at("/files"), Some(&"/files/*"));
        assert_eq!(t.at("/files/1/2"), Some(&"/files/*"));
        assert_eq!(t.at("/a/1"), Some(&"/a/{x}"));
        assert_eq!(t.at("/a/1/b"), Some(&"/a/{y}/b"));
    }

    #[test]
    fn templates_differing_only_in_parameter_names_are_one_entry() {
        let t = trie(&["/a/{x}", "/a/{y}"]);
        assert_eq!(
            t.at("/a/1"),
            Some(&"/a/{x}"),
            "the first one keeps the entry"
        );
    }

    #[test]
    fn params_match_one_nonempty_segment() {
        let t = trie(&["/users/{id}"]);
        assert_eq!(t.at("/users//"), None);
        assert_eq!(t.at("/users"), None);
        assert_eq!(t.at("/users/1/2"), None);
    }

    #[test]
    fn root_wildcard_matches_everything() {
        let t = trie(&["/*"]);
        assert_eq!(t.at("/"), Some(&"/*"));
        assert_eq!(t.at("/x/y/z"), Some(&"/*"));
    }

    /// The longest context that prefixes `path`, as the routing table finds it.
    fn longest<'p>(contexts: &[(&str, i32)], path: &'p str) -> Option<(i32, &'p str)> {
        let depth = contexts
            .iter()
            .map(|(c, _)| c.split('/').filter(|s| !s.is_empty()).count())
            .max()
            .unwrap_or(0);
        context_prefixes(path, depth).find_map(|(prefix, rest)| {
            let (_, value) = contexts.iter().find(|(c, _)| *c == prefix)?;
            Some((*value, rest))
        })
    }

    #[test]
    fn longest_context_wins() {
        let t = [("/shop", 1), ("/shop/orders", 2)];
        assert_eq!(
            longest(&t, "/shop/orders/1.0.0/items"),
            Some((2, "/1.0.0/items"))
        );
        assert_eq!(longest(&t, "/shop/1.0.0/x"), Some((1, "/1.0.0/x")));
        assert_eq!(longest(&t, "/shop/ordersX/1"), Some((1, "/ordersX/1")));
        assert_eq!(longest(&t, "/shop/orders"), Some((2, "")));
        assert_eq!(longest(&t, "/shop"), Some((1, "")));
        assert_eq!(longest(&t, "/shop/"), Some((1, "/")));
        assert_eq!(longest(&t, "/shop//orders"), Some((1, "//orders")));
        assert_eq!(longest(&t, "/sho"), None);
        assert_eq!(longest(&t, "/"), None);
        assert_eq!(longest(&[], "/shop"), None);
    }

    #[test]
    fn dot_segments_are_detected() {
        for path in [
            "/client/1.0.0/../x",
            "/client/1.0.0/%2E%2e/x",
            "/client/./x",
        ] {
            assert!(has_dot_segments(path), "{path}");
        }
        for path in [
            "/client/1.0.0/users",
            "/client/1.0.0/a..b",
            "/client/.../x",
            "/client/%2e%2e%2e",
            "/client/.x/%2",
            "",
        ] {
            assert!(!has_dot_segments(path), "{path}");
        }
    }
}
