//! The response cache: opt-in per API (`ApiDefinition.cache`), with the API's TTL.
//!
//! Only `GET` calls are cached, and only `200` answers without `Set-Cookie` or a
//! `Cache-Control` of `no-store` / `private`. The key is the API, the method, the path
//! and query as sent, and who asks: the application and the token's scopes (an
//! unauthenticated resource has an empty caller), so one application never gets a
//! response fetched for another. A hit answers from memory with `X-Cache: HIT`;
//! the backend is not called.
//!
//! A miss streams the backend's body to the client as usual while a [`CacheCopy`]
//! keeps a copy of the frames (`Bytes` clones: no copy of the data); when the body ends
//! within [`MAX_CACHED_BODY`] bytes, the response is stored. A larger body stops being
//! copied and is not cached.
//!
//! # Shared state
//!
//! A [`ShardedMap`] of 16 shards, key → `Arc<CachedResponse>`: a lookup takes one read
//! lock and clones an `Arc` (the write lock only to drop an entry found expired), a
//! store takes one write lock. Keys are the exact strings (no hash-only keys: a
//! collision must never serve one caller another's response). Each shard holds at most
//! [`MAX_ENTRIES_PER_SHARD`] entries; when full, expired entries go first, then the
//! whole shard (a cache may forget).

use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body::Frame;
use hyper::body::Incoming;

use crate::body::GatewayBody;
use crate::shards::ShardedMap;

const SHARDS: usize = 16;

/// Largest body the cache keeps.
pub const MAX_CACHED_BODY: usize = 1024 * 1024;

/// Entries per shard (16 shards).
pub const MAX_ENTRIES_PER_SHARD: usize = 1024;

/// A stored response.
#[derive(Debug)]
pub struct CachedResponse {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    expires: Instant,
}

/// The response cache of one gateway.
pub struct ResponseCache {
    entries: ShardedMap<Box<str>, Arc<CachedResponse>>,
}

impl Default for ResponseCache {
    fn default() -> Self {
        ResponseCache {
            entries: ShardedMap::new(SHARDS),
        }
    }
}

impl ResponseCache {
    /// The cache key of a call.
    pub fn key(api_id: &str, method: &str, path_and_query: &str, caller: &str) -> String {
        format!("{api_id}\n{method}\n{path_and_query}\n{caller}")
    }

    /// The stored response for `key`, if fresh.
    pub fn lookup(&self, key: &str) -> Option<Response<GatewayBody>> {
        let entry = self.entries.read(key, |entry| entry.cloned())?;
        if entry.expires <= Instant::now() {
            self.entries.remove_if(key, |e| e.expires <= Instant::now());
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

    fn store(&self, key: Box<str>, response: CachedResponse) {
        let now = Instant::now();
        self.entries
            .insert_bounded(key, Arc::new(response), MAX_ENTRIES_PER_SHARD, |_, e| {
                e.expires > now
            });
    }

    /// Whether a backend response may be stored.
    pub fn cacheable(status: StatusCode, headers: &HeaderMap) -> bool {
        if status != StatusCode::OK || headers.contains_key(header::SET_COOKIE) {
            return false;
        }
        !headers
            .get_all(header::CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                let v = v.to_ascii_lowercase();
                v.contains("no-store") || v.contains("private")
            })
    }

    /// Wraps a backend response so that its body is stored once it has been streamed.
    pub fn tee(
        self: &Arc<Self>,
        key: String,
        ttl: Duration,
        response: Response<Incoming>,
    ) -> Response<GatewayBody> {
        let (parts, body) = response.into_parts();
        let mut headers = parts.headers.clone();
        headers.remove(header::DATE);
        let copy = CacheCopy {
            cache: self.clone(),
            key: key.into_boxed_str(),
            status: parts.status,
            headers,
            ttl,
            chunks: Vec::new(),
            size: 0,
        };
        Response::from_parts(
            parts,
            GatewayBody::Caching {
                body,
                copy: Some(copy),
            },
        )
    }

    /// Number of stored responses (fresh or not).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Drops expired responses (called periodically).
    pub fn sweep(&self) {
        let now = Instant::now();
        self.entries.retain(|_, e| e.expires > now);
    }
}

/// The copy of a backend response being streamed to the client, stored in the cache
/// once its body has ended (owned by the response body: see [`GatewayBody::Caching`]).
pub struct CacheCopy {
    cache: Arc<ResponseCache>,
    key: Box<str>,
    status: StatusCode,
    headers: HeaderMap,
    ttl: Duration,
    chunks: Vec<Bytes>,
    size: usize,
}

impl CacheCopy {
    /// Follows one poll of the body being copied: keeps a data frame, stores the copy
    /// when the body has ended (`ended`, or a final `None`), gives it up on an error or
    /// past [`MAX_CACHED_BODY`].
    pub(crate) fn observe(
        slot: &mut Option<CacheCopy>,
        polled: &Poll<Option<Result<Frame<Bytes>, hyper::Error>>>,
        ended: bool,
    ) {
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref()
                    && let Some(copy) = slot.as_mut()
                {
                    copy.size += data.len();
                    if copy.size > MAX_CACHED_BODY {
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
        self.cache.store(
            self.key,
            CachedResponse {
                status: self.status,
                headers: self.headers,
                body,
                expires: Instant::now() + self.ttl,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_200s_are_cacheable() {
        let mut h = HeaderMap::new();
        assert!(ResponseCache::cacheable(StatusCode::OK, &h));
        assert!(!ResponseCache::cacheable(StatusCode::CREATED, &h));
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("private, max-age=1"),
        );
        assert!(!ResponseCache::cacheable(StatusCode::OK, &h));
        let mut h = HeaderMap::new();
        h.insert(header::SET_COOKIE, HeaderValue::from_static("a=b"));
        assert!(!ResponseCache::cacheable(StatusCode::OK, &h));
    }

    #[test]
    fn stored_responses_expire() {
        let cache = ResponseCache::default();
        let key = ResponseCache::key("api", "GET", "/x?a=1", "app default");
        cache.store(
            key.clone().into_boxed_str(),
            CachedResponse {
                status: StatusCode::OK,
                headers: HeaderMap::new(),
                body: Bytes::from_static(b"hello"),
                expires: Instant::now() + Duration::from_secs(60),
            },
        );
        let hit = cache.lookup(&key).expect("fresh entry");
        assert_eq!(hit.headers()["x-cache"], "HIT");
        assert!(
            cache
                .lookup(&ResponseCache::key("api", "GET", "/x?a=1", "other app"))
                .is_none()
        );
        cache.store(
            key.clone().into_boxed_str(),
            CachedResponse {
                status: StatusCode::OK,
                headers: HeaderMap::new(),
                body: Bytes::new(),
                expires: Instant::now(),
            },
        );
        assert!(cache.lookup(&key).is_none());
        assert!(cache.is_empty(), "an expired entry is dropped on lookup");
    }
}
