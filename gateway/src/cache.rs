//! The response cache: opt-in per API (`ApiDefinition.cache`), with the API's TTL.
//!
//! **What is stored** ([`ResponseCache::storable`]): only answers to `GET`, only `200`s,
//! and never one that says it must not be: `Set-Cookie`, `Cache-Control` `no-store`,
//! `no-cache` (the gateway does not revalidate, so it does not keep what must be) or
//! `private`, `Pragma: no-cache`, or `Vary: *`. Directives are parsed as tokens
//! (`private="x"` counts as `private`), not matched as substrings.
//!
//! **The key** ([`ResponseCache::key`]) is the API, the method, the `Host` the client
//! called (HTTP/2 `:authority`, lower-cased), the normalised path and the query, and
//! who asks: the application, key type and scopes (an unauthenticated resource has an
//! empty caller), so one application never gets a response fetched for another, and a
//! forged `Host` can only ever be served back to requests that forge the same. An
//! answer that names request headers in `Vary` is stored with the values those headers
//! had in the request it answered (a [`Vary`] list); a later request is a hit
//! only if its values are the same. One variant is kept per key: another variant
//! replaces it.
//!
//! A hit answers from memory with `X-Cache: HIT`; the backend is not called.
//!
//! **Memory** is bounded in bytes, not entries: each stored answer weighs its body,
//! headers and key plus a fixed overhead, and may weigh at most the per-entry budget
//! (`--cache-max-entry-bytes`). A miss streams the backend's body to the client as
//! usual while a [`CacheCopy`] keeps a copy of the frames (`Bytes` clones: no copy of
//! the data); when the body ends within the entry budget, the response is stored. A
//! larger body stops being copied and is not cached.
//!
//! # Shared state
//!
//! A weighted [`ShardedMap`] of 16 shards, key → `Arc<CachedResponse>`, each shard
//! within 1/16 of the total budget (`--cache-max-bytes`): when a store would not fit,
//! expired answers go first, then the oldest. A lookup takes one read lock and clones an
//! `Arc` (the write lock only to drop an entry found expired), a store takes one write
//! lock. Keys are the exact strings (no hash-only keys: a collision must never serve one
//! caller another's response).

use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, header};
use http_body::Frame;
use hyper::body::Incoming;

use crate::body::GatewayBody;
use crate::shards::ShardedMap;

const SHARDS: usize = 16;

/// What a stored answer weighs beyond its bytes (the entry, its `Arc`, the map slot).
const ENTRY_OVERHEAD: usize = 256;

/// What a header weighs beyond its name and value.
const HEADER_OVERHEAD: usize = 32;

/// A stored response.
#[derive(Debug)]
pub struct CachedResponse {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    stored: Instant,
    expires: Instant,
    /// The request headers the answer varies by (its `Vary`), with the values they had
    /// in the request it answered (`None`: absent).
    vary: Vary,
    /// Body, headers, key and overhead, in bytes.
    weight: usize,
}

/// Request headers and their values, as a `Vary`'d answer was fetched with.
pub type Vary = Box<[(HeaderName, Option<Bytes>)]>;

impl CachedResponse {
    /// Whether `request` has the values this answer was fetched with for every header
    /// it varies by.
    fn matches(&self, request: &HeaderMap) -> bool {
        self.vary
            .iter()
            .all(|(name, value)| header_value(request, name).as_ref() == value.as_ref())
    }
}

/// All the values of `name` in `headers`, joined by `,` (`None`: absent).
fn header_value(headers: &HeaderMap, name: &HeaderName) -> Option<Bytes> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    let mut joined = BytesMut::from(first.as_bytes());
    for value in values {
        joined.extend_from_slice(b",");
        joined.extend_from_slice(value.as_bytes());
    }
    Some(joined.freeze())
}

fn headers_weight(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + HEADER_OVERHEAD)
        .sum()
}

/// Why an answer is not stored (for tests and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    /// Not a `200`.
    Status,
    /// `Set-Cookie`: the answer belongs to one client.
    SetCookie,
    /// `Cache-Control: no-store`, `no-cache` or `private`, or `Pragma: no-cache`.
    Directive,
    /// `Vary: *`, or a `Vary` that does not parse.
    VaryAny,
}

/// The response cache of one gateway.
pub struct ResponseCache {
    entries: ShardedMap<Box<str>, Arc<CachedResponse>>,
    /// Budget of one shard, in bytes.
    max_shard_bytes: usize,
    /// Budget of one entry, in bytes.
    max_entry_bytes: usize,
}

impl ResponseCache {
    /// A cache of at most `max_bytes` in all, `max_entry_bytes` per stored answer.
    pub fn new(max_bytes: u64, max_entry_bytes: u64) -> ResponseCache {
        Self::with_shards(SHARDS, max_bytes, max_entry_bytes)
    }

    fn with_shards(shards: usize, max_bytes: u64, max_entry_bytes: u64) -> ResponseCache {
        let max_bytes = usize::try_from(max_bytes).unwrap_or(usize::MAX);
        let max_shard_bytes = max_bytes / shards;
        ResponseCache {
            entries: ShardedMap::weighted(shards, |e: &Arc<CachedResponse>| e.weight),
            max_shard_bytes,
            max_entry_bytes: usize::try_from(max_entry_bytes)
                .unwrap_or(usize::MAX)
                .min(max_shard_bytes),
        }
    }

    /// The cache key of a call: API, method, host (lower-cased), normalised path and
    /// query, caller.
    pub fn key(
        api_id: &str,
        method: &str,
        host: &str,
        path_and_query: &str,
        caller: &str,
    ) -> String {
        format!(
            "{api_id}\n{method}\n{}\n{path_and_query}\n{caller}",
            host.to_ascii_lowercase()
        )
    }

    /// The stored response for `key`, if fresh and fetched with the same values of the
    /// headers it varies by as `request` has.
    pub fn lookup(&self, key: &str, request: &HeaderMap) -> Option<Response<GatewayBody>> {
        let entry = self.entries.read(key, |entry| entry.cloned())?;
        if entry.expires <= Instant::now() {
            self.entries.remove_if(key, |e| e.expires <= Instant::now());
            return None;
        }
        if !entry.matches(request) {
            return None;
        }
        let mut response = Response::new(GatewayBody::full(entry.body.clone()));
        *response.status_mut() = entry.status;
        *response.headers_mut() = entry.headers.clone();
        response
            .headers_mut()
            .insert("x-cache", HeaderValue::from_static("HIT"));
        Some(response)
    }

    /// Stores `response` under `key`, within the budgets; whether it was stored.
    fn store(&self, key: Box<str>, mut response: CachedResponse) -> bool {
        response.weight =
            response.body.len() + headers_weight(&response.headers) + key.len() + ENTRY_OVERHEAD;
        if response.weight > self.max_entry_bytes {
            self.entries.remove_if(&*key, |_| true);
            return false;
        }
        let now = Instant::now();
        self.entries.insert_weighed(
            key,
            Arc::new(response),
            self.max_shard_bytes,
            |_, e| e.expires > now,
            |e| e.stored,
        )
    }

    /// Whether a backend's answer may be stored; if so, the request headers it varies
    /// by (its `Vary`, lower-cased, in order).
    pub fn storable(status: StatusCode, headers: &HeaderMap) -> Result<Vec<HeaderName>, NotStored> {
        if status != StatusCode::OK {
            return Err(NotStored::Status);
        }
        if headers.contains_key(header::SET_COOKIE) {
            return Err(NotStored::SetCookie);
        }
        let forbidding = |name: &HeaderName, forbidden: &[&str]| {
            directives(headers, name).any(|d| forbidden.iter().any(|f| d.eq_ignore_ascii_case(f)))
        };
        if forbidding(&header::CACHE_CONTROL, &["no-store", "no-cache", "private"])
            || forbidding(&header::PRAGMA, &["no-cache"])
        {
            return Err(NotStored::Directive);
        }
        let mut vary = Vec::new();
        for name in directives(headers, &header::VARY) {
            if name == "*" {
                return Err(NotStored::VaryAny);
            }
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| NotStored::VaryAny)?;
            if !vary.contains(&name) {
                vary.push(name);
            }
        }
        Ok(vary)
    }

    /// Wraps a backend response so that its body is stored once it has been streamed.
    /// `vary`: the headers it varies by ([`storable`](Self::storable)), with the values
    /// they have in `request`.
    pub fn tee(
        self: &Arc<Self>,
        key: String,
        ttl: Duration,
        vary: &[HeaderName],
        request: &HeaderMap,
        response: Response<Incoming>,
    ) -> Response<GatewayBody> {
        let (parts, body) = response.into_parts();
        let mut headers = parts.headers.clone();
        headers.remove(header::DATE);
        let vary: Vary = vary
            .iter()
            .map(|name| (name.clone(), header_value(request, name)))
            .collect();
        let head_bytes = headers_weight(&headers) + key.len() + ENTRY_OVERHEAD;
        let copy = (head_bytes <= self.max_entry_bytes).then(|| CacheCopy {
            cache: self.clone(),
            key: key.into_boxed_str(),
            status: parts.status,
            headers,
            vary,
            ttl,
            chunks: Vec::new(),
            size: 0,
            max_body: self.max_entry_bytes - head_bytes,
        });
        Response::from_parts(parts, GatewayBody::Caching { body, copy })
    }

    /// Number of stored responses (fresh or not).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes the stored responses weigh (bodies, headers, keys, overhead).
    pub fn bytes(&self) -> usize {
        self.entries.weight()
    }

    /// Drops expired responses (called periodically).
    pub fn sweep(&self) {
        let now = Instant::now();
        self.entries.retain(|_, e| e.expires > now);
    }
}

/// The comma-separated directives of every `name` header, trimmed, each without its
/// `=value` (`max-age=0` → `max-age`, `private="set-cookie"` → `private`).
fn directives<'h>(headers: &'h HeaderMap, name: &HeaderName) -> impl Iterator<Item = &'h str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|d| d.split('=').next().unwrap_or("").trim())
        .filter(|d| !d.is_empty())
}

/// The copy of a backend response being streamed to the client, stored in the cache
/// once its body has ended (owned by the response body: see [`GatewayBody::Caching`]).
pub struct CacheCopy {
    cache: Arc<ResponseCache>,
    key: Box<str>,
    status: StatusCode,
    headers: HeaderMap,
    vary: Vary,
    ttl: Duration,
    chunks: Vec<Bytes>,
    size: usize,
    /// The entry budget left for the body.
    max_body: usize,
}

impl CacheCopy {
    /// Follows one poll of the body being copied: keeps a data frame, stores the copy
    /// when the body has ended (`ended`, or a final `None`), gives it up on an error or
    /// past the entry budget.
    pub(crate) fn observe<E>(
        slot: &mut Option<CacheCopy>,
        polled: &Poll<Option<Result<Frame<Bytes>, E>>>,
        ended: bool,
    ) {
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref()
                    && let Some(copy) = slot.as_mut()
                {
                    copy.size += data.len();
                    if copy.size > copy.max_body {
                        *slot = None;
                    } else {
                        copy.chunks.push(data.clone());
                    }
                }
                // With a known length, the server stops polling once it has every byte:
                // the body is complete now, not at a final `None` that never comes.
                if ended && let Some(copy) = slot.take() {
                    copy.store();
                }
            }
            Poll::Ready(Some(Err(_))) => *slot = None,
            Poll::Ready(None) => {
                if let Some(copy) = slot.take() {
                    copy.store();
                }
            }
            Poll::Pending => {}
        }
    }

    fn store(self) {
        let body = if self.chunks.len() == 1 {
            self.chunks[0].clone()
        } else {
            let mut all = BytesMut::with_capacity(self.size);
            for chunk in &self.chunks {
                all.extend_from_slice(chunk);
            }
            all.freeze()
        };
        let now = Instant::now();
        self.cache.store(
            self.key,
            CachedResponse {
                status: self.status,
                headers: self.headers,
                body,
                stored: now,
                expires: now + self.ttl,
                vary: self.vary,
                weight: 0,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, HeaderValue::from_static(value));
        }
        h
    }

    fn answer(body: &'static [u8], ttl: Duration, vary: Vary) -> CachedResponse {
        let now = Instant::now();
        CachedResponse {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::from_static(body),
            stored: now,
            expires: now + ttl,
            vary,
            weight: 0,
        }
    }

    fn key(host: &str, caller: &str) -> String {
        ResponseCache::key("api", "GET", host, "/x?a=1", caller)
    }

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn only_plain_200s_are_stored() {
        let ok = |h: &[(&'static str, &'static str)]| {
            ResponseCache::storable(StatusCode::OK, &headers(h))
        };
        assert_eq!(ok(&[]), Ok(vec![]));
        assert_eq!(ok(&[("cache-control", "public, max-age=60")]), Ok(vec![]));
        assert_eq!(
            ResponseCache::storable(StatusCode::CREATED, &HeaderMap::new()),
            Err(NotStored::Status)
        );
        assert_eq!(ok(&[("set-cookie", "a=b")]), Err(NotStored::SetCookie));
        for refused in [
            "no-store",
            "No-Cache",
            "private, max-age=1",
            "max-age=60, private=\"set-cookie\"",
            "no-cache=\"x-token\"",
        ] {
            assert_eq!(
                ok(&[("cache-control", refused)]),
                Err(NotStored::Directive),
                "{refused}"
            );
        }
        assert_eq!(
            ok(&[("cache-control", "public"), ("cache-control", "no-store")]),
            Err(NotStored::Directive),
            "every Cache-Control header counts"
        );
        assert_eq!(ok(&[("pragma", "no-cache")]), Err(NotStored::Directive));
        assert_eq!(
            ok(&[("cache-control", "x-no-store-extension")]),
            Ok(vec![]),
            "tokens, not substrings"
        );
        assert_eq!(ok(&[("vary", "*")]), Err(NotStored::VaryAny));
        assert_eq!(ok(&[("vary", "Accept, *")]), Err(NotStored::VaryAny));
        assert_eq!(
            ok(&[("vary", "Accept-Encoding, accept"), ("vary", "X-Tenant")]),
            Ok(vec![
                HeaderName::from_static("accept-encoding"),
                HeaderName::from_static("accept"),
                HeaderName::from_static("x-tenant")
            ])
        );
    }

    #[test]
    fn stored_responses_expire() {
        let cache = ResponseCache::new(1 << 20, 1 << 16);
        let key = key("gw:8243", "app default");
        assert!(cache.store(key.clone().into(), answer(b"hello", MINUTE, Box::new([]))));
        let hit = cache.lookup(&key, &HeaderMap::new()).expect("fresh entry");
        assert_eq!(hit.headers()["x-cache"], "HIT");
        assert!(
            cache
                .lookup(&self::key("gw:8243", "other app"), &HeaderMap::new())
                .is_none()
        );
        cache.store(
            key.clone().into(),
            answer(b"", Duration::ZERO, Box::new([])),
        );
        assert!(cache.lookup(&key, &HeaderMap::new()).is_none());
        assert!(cache.is_empty(), "an expired entry is dropped on lookup");
    }

    /// A forged `Host` is part of the key: what it fetched is never served to a
    /// request with another host.
    #[test]
    fn the_key_includes_the_host() {
        let cache = ResponseCache::new(1 << 20, 1 << 16);
        let forged = key("evil.example", "");
        cache.store(
            forged.clone().into(),
            answer(b"evil links", MINUTE, Box::new([])),
        );
        assert!(
            cache
                .lookup(&key("gw.example:8243", ""), &HeaderMap::new())
                .is_none()
        );
        assert!(
            cache
                .lookup(&key("EVIL.example", ""), &HeaderMap::new())
                .is_some()
        );
    }

    #[test]
    fn a_varying_answer_is_served_only_for_the_same_header_values() {
        let cache = ResponseCache::new(1 << 20, 1 << 16);
        let key = key("gw:8243", "");
        let vary: Vary = Box::new([(
            HeaderName::from_static("accept-language"),
            Some(Bytes::from_static(b"fr")),
        )]);
        cache.store(key.clone().into(), answer(b"bonjour", MINUTE, vary));
        let fr = headers(&[("accept-language", "fr")]);
        let en = headers(&[("accept-language", "en")]);
        assert!(cache.lookup(&key, &fr).is_some());
        assert!(cache.lookup(&key, &en).is_none(), "another language");
        assert!(
            cache.lookup(&key, &HeaderMap::new()).is_none(),
            "none at all"
        );
        // An answer fetched without the header matches only requests without it.
        let absent: Vary = Box::new([(HeaderName::from_static("x-tenant"), None)]);
        cache.store(key.clone().into(), answer(b"plain", MINUTE, absent));
        assert!(cache.lookup(&key, &HeaderMap::new()).is_some());
        assert!(cache.lookup(&key, &headers(&[("x-tenant", "a")])).is_none());
    }

    #[test]
    fn the_cache_stays_within_its_byte_budgets() {
        // 16 shards of 4 KiB; entries of at most 2 KiB.
        let cache = ResponseCache::new(64 * 1024, 2048);
        let body: &'static [u8] = &[b'x'; 1500];
        for i in 0..500 {
            cache.store(
                key(&format!("h{i}"), "").into(),
                answer(body, MINUTE, Box::new([])),
            );
            assert!(cache.bytes() <= 64 * 1024, "{} after {i}", cache.bytes());
        }
        assert!(cache.len() >= 16, "the budget is used: {}", cache.len());
        // Over the entry budget: not stored.
        let big: &'static [u8] = &[b'x'; 4096];
        let k = key("big", "");
        assert!(!cache.store(k.clone().into(), answer(big, MINUTE, Box::new([]))));
        assert!(cache.lookup(&k, &HeaderMap::new()).is_none());
    }

    #[test]
    fn expired_answers_are_evicted_first_then_the_oldest() {
        // One shard of 4 KiB: four ~1 KiB answers fit.
        let cache = ResponseCache::with_shards(1, 4096, 2048);
        let body: &'static [u8] = &[b'x'; 700];
        let store = |name: &str, ttl| {
            let k = key(name, "");
            assert!(cache.store(k.into(), answer(body, ttl, Box::new([]))));
        };
        let fresh = |name: &str| cache.lookup(&key(name, ""), &HeaderMap::new()).is_some();
        for i in 0..4 {
            store(&format!("old{i}"), Duration::ZERO);
        }
        for i in 0..4 {
            store(&format!("new{i}"), MINUTE);
        }
        assert!(
            (0..4).all(|i| fresh(&format!("new{i}"))),
            "the expired ones made room"
        );
        assert_eq!(cache.len(), 4);
        // Full of fresh answers: the oldest go, until it is 7/8 full with the new one.
        store("new4", MINUTE);
        assert!(!fresh("new0") && !fresh("new1"), "the oldest went");
        assert!(fresh("new2") && fresh("new3") && fresh("new4"));
        assert!(cache.bytes() <= 4096 - 4096 / 8);
    }
}
