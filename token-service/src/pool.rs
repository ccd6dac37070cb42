//! The argon2 pool: where every client secret presented to the HTTPS endpoints is
//! checked, a fixed number of threads at a time, with a bounded queue.
//!
//! An argon2id check of a stored hash (m = 19 MiB, t = 2) takes tens of milliseconds
//! of one core and 19 MiB of memory. Run on tokio's blocking pool, as before, nothing
//! bounded how many ran at once: 400 concurrent wrong secrets took the all-in-one from
//! 116 MB to 4.5 GB (and the allocator kept 7.6 GB). Here:
//!
//! - `workers` dedicated threads (`argon2-<n>`) run the checks; each owns one memory
//!   buffer, allocated on its first check and reused by every later one (argon2's
//!   `hash_password_into_with_memory`), so the pool's memory is `workers × m` — 38 MiB
//!   on two cores — whatever the load, and never returns to the allocator's whims;
//! - at most `queue` more checks wait for a thread; a check past both is refused at
//!   once ([`Busy`]: the endpoint answers 503 `temporarily_unavailable` with
//!   `Retry-After: 1`) instead of waiting without bound;
//! - a check whose caller has gone (connection closed while it waited) is skipped
//!   when its turn comes.
//!
//! Hashing *new* secrets (key generation, the admin bootstrap) stays on tokio's
//! blocking pool: only authenticated admins cause it.
//!
//! # Shared state
//!
//! [`Argon2Pool`] is a cheap handle (an `Arc`), cloned into whatever checks secrets.
//! Admission is a `tokio::sync::Semaphore` of `workers + queue` permits, taken with
//! `try_acquire` (never awaited: a full pool refuses, it does not make callers queue
//! for the queue); the permit travels with the job and is released when its check is
//! done, so "admitted" and "computing or waiting" are the same set. Jobs go to the
//! threads through one `std::sync::mpsc` channel whose receiver the threads share
//! behind a `std::sync::Mutex` (held only while taking the next job).

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use argon2::password_hash::phc::{Output, PasswordHash};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::{Semaphore, oneshot};

/// The largest argon2 memory cost a stored hash may ask for, in KiB: a hash asking more
/// (none this service writes: it uses 19 MiB) does not verify rather than make a worker
/// allocate it.
pub const MAX_M_COST_KIB: u32 = 256 * 1024;

/// Every worker is busy and the queue is full: retry shortly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("every argon2 worker is busy and the queue is full")]
pub struct Busy;

/// One check, run on a worker with its memory buffer.
type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

struct Inner {
    admission: Arc<Semaphore>,
    jobs: Mutex<mpsc::Sender<Job>>,
    workers: usize,
    queue: usize,
}

/// A bounded pool of argon2 threads (see the module documentation).
#[derive(Clone)]
pub struct Argon2Pool {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Argon2Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Argon2Pool")
            .field("workers", &self.inner.workers)
            .field("queue", &self.inner.queue)
            .field("available", &self.inner.admission.available_permits())
            .finish()
    }
}

impl Argon2Pool {
    /// Starts `workers` threads (at least one) with room for `queue` waiting checks.
    /// The threads end when the last handle is dropped.
    pub fn new(workers: usize, queue: usize) -> Argon2Pool {
        let workers = workers.max(1);
        let (sender, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        for n in 0..workers {
            let receiver = receiver.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{n}"))
                .spawn(move || work(&receiver))
                .expect("cannot start an argon2 worker thread");
        }
        Argon2Pool {
            inner: Arc::new(Inner {
                admission: Arc::new(Semaphore::new(workers + queue)),
                jobs: Mutex::new(sender),
                workers,
                queue,
            }),
        }
    }

    pub fn workers(&self) -> usize {
        self.inner.workers
    }

    pub fn queue(&self) -> usize {
        self.inner.queue
    }

    /// Checks admitted and not finished (computing or waiting).
    pub fn in_use(&self) -> usize {
        self.inner.workers + self.inner.queue - self.inner.admission.available_permits()
    }

    /// Whether `secret` matches the argon2 PHC string `phc` (argon2's constant-time
    /// comparison), computed on a worker; [`Busy`] at once if the pool and its queue
    /// are full.
    pub async fn verify(&self, secret: &str, phc: &str) -> Result<bool, Busy> {
        let permit = self
            .inner
            .admission
            .clone()
            .try_acquire_owned()
            .map_err(|_| Busy)?;
        let (secret, phc) = (secret.to_string(), phc.to_string());
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |memory| {
            // Nobody waits for it any more: spare the worker.
            let verified =
                (!reply.is_closed()).then(|| verify_with(secret.as_bytes(), &phc, memory));
            // The place is free before the caller hears the answer.
            drop(permit);
            if let Some(verified) = verified {
                let _ = reply.send(verified);
            }
        });
        {
            let jobs = self.inner.jobs.lock().unwrap_or_else(|e| e.into_inner());
            // The receiver lives as long as the workers, which live as long as the
            // sender.
            let _ = jobs.send(job);
        }
        // A check that panicked counts as a mismatch.
        Ok(answer.await.unwrap_or(false))
    }
}

/// A worker's loop: takes jobs until every sender is gone, a panic in one job not
/// ending the thread.
fn work(receiver: &Mutex<mpsc::Receiver<Job>>) {
    let mut memory: Vec<Block> = Vec::new();
    loop {
        let job = {
            let receiver = receiver.lock().unwrap_or_else(|e| e.into_inner());
            receiver.recv()
        };
        let Ok(job) = job else { return };
        if std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut memory))).is_err() {
            tracing::error!("an argon2 check panicked");
        }
    }
}

/// argon2's own verification of `secret` against `phc` (algorithm, version, parameters
/// and salt from the PHC string), in `memory` (grown to the hash's memory cost if
/// needed, never shrunk).
pub fn verify_with(secret: &[u8], phc: &str, memory: &mut Vec<Block>) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&hash.salt, &hash.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(hash.algorithm.as_str()) else {
        return false;
    };
    let version = match hash.version.map(Version::try_from).transpose() {
        Ok(version) => version.unwrap_or_default(),
        Err(_) => return false,
    };
    let Ok(params) = Params::try_from(&hash) else {
        return false;
    };
    if params.m_cost() > MAX_M_COST_KIB {
        return false;
    }
    let blocks = params.block_count();
    if memory.len() < blocks {
        memory.resize(blocks, Block::default());
    }
    let mut computed = [0u8; Output::MAX_LENGTH];
    let Some(computed) = computed.get_mut(..expected.len()) else {
        return false;
    };
    if Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(secret, salt.as_ref(), computed, &mut memory[..])
        .is_err()
    {
        return false;
    }
    // `Output`'s equality is constant time.
    Output::new(computed).is_ok_and(|computed| &computed == expected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::{hash_secret, verify_secret};

    #[test]
    fn the_reused_buffer_verifies_exactly_like_argon2() {
        let mut memory = Vec::new();
        let phc = hash_secret("right").unwrap();
        let other = hash_secret("other").unwrap();
        for _ in 0..2 {
            for (secret, hash) in [
                ("right", &phc),
                ("wrong", &phc),
                ("other", &other),
                ("right", &other),
            ] {
                assert_eq!(
                    verify_with(secret.as_bytes(), hash, &mut memory),
                    verify_secret(secret, hash),
                    "{secret}"
                );
            }
        }
        assert_eq!(memory.len(), 19 * 1024, "one 19 MiB buffer, reused");
        assert!(!verify_with(b"right", "not a phc string", &mut memory));
        assert!(!verify_with(
            b"right",
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ",
            &mut memory
        ));
        let greedy = "$argon2id$v=19$m=4194304,t=1,p=1$c2FsdHNhbHRzYWx0$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        assert!(!verify_with(b"right", greedy, &mut memory));
        assert_eq!(memory.len(), 19 * 1024, "a greedy hash allocates nothing");
    }

    #[tokio::test]
    async fn a_full_pool_refuses_at_once_and_frees_its_permits() {
        let pool = Argon2Pool::new(1, 1);
        let phc = hash_secret("right").unwrap();
        assert_eq!(pool.verify("right", &phc).await, Ok(true));
        assert_eq!(pool.verify("wrong", &phc).await, Ok(false));
        // One computing, one waiting, the third refused.
        let (a, b, c) = tokio::join!(
            pool.verify("right", &phc),
            pool.verify("right", &phc),
            async {
                tokio::task::yield_now().await;
                pool.verify("right", &phc).await
            }
        );
        assert_eq!((a, b, c), (Ok(true), Ok(true), Err(Busy)));
        assert_eq!(pool.in_use(), 0);
    }

    #[tokio::test]
    async fn an_abandoned_check_releases_its_place() {
        let pool = Argon2Pool::new(1, 0);
        let phc = hash_secret("right").unwrap();
        let abandoned = tokio::time::timeout(
            std::time::Duration::from_micros(1),
            pool.verify("right", &phc),
        )
        .await;
        assert!(abandoned.is_err());
        gatehouse_testkit::eventually_async(
            "the abandoned check to release its permit",
            || async { pool.in_use() == 0 },
        )
        .await;
        assert_eq!(pool.verify("right", &phc).await, Ok(true));
    }
}
