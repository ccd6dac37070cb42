//! Waiting for something that must happen: a replica catching up, a process printing
//! its ready line, a span being exported.
//!
//! Tests assert convergence, never speed: [`eventually`] calls a condition until it
//! holds, every few milliseconds, and panics if it still does not hold at the deadline,
//! with a message naming what was awaited and why the last attempt failed.
//!
//! ```no_run
//! use gatehouse_testkit::poll::{Poll, eventually};
//! # fn ready() -> bool { true }
//! # fn status() -> u16 { 200 }
//! eventually("the server to be ready", ready);
//! // A `Result`'s error says why the last attempt failed.
//! eventually("a 200", || match status() {
//!     200 => Ok(()),
//!     other => Err(format!("answers {other}")),
//! });
//! // An `Option`'s value is returned once there is one.
//! let port: u16 = Poll::new("a port").timeout(std::time::Duration::from_secs(5))
//!     .until(|| Some(4222));
//! ```
//!
//! A condition returns a [`Check`]: `bool`, `Option<T>` (done with the value) or
//! `Result<T, E>` (done with the value; the error is the reason it is not done yet).
//! [`Poll`] sets the deadline and the interval, adds context to the panic message (a
//! process's output) and can stop early (a process that exited will not become ready).
//! The async variants sleep with Tokio instead of blocking the thread.
//!
//! # Shared state
//!
//! None.

use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, Instant};

/// How long [`eventually`] waits by default.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// How long a test waits for a replica to serve a change, a process to start: longer
/// than [`TIMEOUT`], for real processes on a loaded machine.
pub const CONVERGE: Duration = Duration::from_secs(60);

/// How often a condition is tried by default.
pub const INTERVAL: Duration = Duration::from_millis(20);

/// What a condition returns: whether it holds, with a value, or why not yet.
pub trait Check {
    /// What the wait returns once the condition holds.
    type Output;
    /// `Ok(output)` when done; `Err(reason)` (possibly empty) when not yet.
    fn check(self) -> Result<Self::Output, String>;
}

impl Check for bool {
    type Output = ();
    fn check(self) -> Result<(), String> {
        if self { Ok(()) } else { Err(String::new()) }
    }
}

impl<T> Check for Option<T> {
    type Output = T;
    fn check(self) -> Result<T, String> {
        self.ok_or_else(String::new)
    }
}

impl<T, E: Display> Check for Result<T, E> {
    type Output = T;
    fn check(self) -> Result<T, String> {
        self.map_err(|e| e.to_string())
    }
}

type Context<'a> = Box<dyn FnOnce() -> String + Send + 'a>;
type Abort<'a> = Box<dyn FnMut() -> Option<String> + Send + 'a>;

/// A wait: what is awaited, the deadline, the interval, and what to add to the panic.
#[must_use = "a Poll does nothing until `until` or `until_async`"]
pub struct Poll<'a> {
    what: String,
    timeout: Duration,
    interval: Duration,
    context: Option<Context<'a>>,
    abort: Option<Abort<'a>>,
}

impl<'a> Poll<'a> {
    /// A wait for `what` (said in the panic message: "timed out waiting for {what}"),
    /// [`TIMEOUT`] long, trying every [`INTERVAL`].
    pub fn new(what: impl Into<String>) -> Self {
        Poll {
            what: what.into(),
            timeout: TIMEOUT,
            interval: INTERVAL,
            context: None,
            abort: None,
        }
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn every(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Text added to the panic message, computed only on failure (a process's output).
    pub fn context(mut self, context: impl FnOnce() -> String + Send + 'a) -> Self {
        self.context = Some(Box::new(context));
        self
    }

    /// Checked before each attempt: `Some(reason)` ends the wait at once with a panic
    /// (a process that exited will never print its ready line).
    pub fn abort_if(mut self, abort: impl FnMut() -> Option<String> + Send + 'a) -> Self {
        self.abort = Some(Box::new(abort));
        self
    }

    /// Tries `condition` until it holds; returns its output.
    ///
    /// # Panics
    ///
    /// At the deadline, or when [`abort_if`](Self::abort_if) says so.
    pub fn until<C: Check>(mut self, mut condition: impl FnMut() -> C) -> C::Output {
        let deadline = Instant::now() + self.timeout;
        loop {
            self.check_abort();
            match condition().check() {
                Ok(output) => return output,
                Err(reason) => self.give_up_after(deadline, reason),
            }
            std::thread::sleep(self.interval);
        }
    }

    /// [`until`](Self::until) for an async condition, sleeping with Tokio between
    /// attempts.
    pub async fn until_async<C, F>(mut self, mut condition: impl FnMut() -> F) -> C::Output
    where
        C: Check,
        F: Future<Output = C>,
    {
        let deadline = Instant::now() + self.timeout;
        loop {
            self.check_abort();
            match condition().await.check() {
                Ok(output) => return output,
                Err(reason) => self.give_up_after(deadline, reason),
            }
            tokio::time::sleep(self.interval).await;
        }
    }

    fn check_abort(&mut self) {
        if let Some(reason) = self.abort.as_mut().and_then(|abort| abort()) {
            let context = self.take_context();
            panic!("{reason} while waiting for {}{context}", self.what);
        }
    }

    /// Panics if the deadline has passed.
    fn give_up_after(&mut self, deadline: Instant, reason: String) {
        if Instant::now() < deadline {
            return;
        }
        let last = if reason.is_empty() {
            String::new()
        } else {
            format!("; last: {reason}")
        };
        let context = self.take_context();
        panic!(
            "timed out after {:?} waiting for {}{last}{context}",
            self.timeout, self.what
        );
    }

    fn take_context(&mut self) -> String {
        match self.context.take() {
            Some(context) => format!("\n{}", context()),
            None => String::new(),
        }
    }
}

/// Tries `condition` every [`INTERVAL`] until it holds, for at most [`TIMEOUT`];
/// returns its output.
///
/// # Panics
///
/// At the deadline, naming `what` and the last reason the condition gave.
pub fn eventually<C: Check>(what: impl Into<String>, condition: impl FnMut() -> C) -> C::Output {
    Poll::new(what).until(condition)
}

/// [`eventually`] for an async condition.
pub async fn eventually_async<C, F>(
    what: impl Into<String>,
    condition: impl FnMut() -> F,
) -> C::Output
where
    C: Check,
    F: Future<Output = C>,
{
    Poll::new(what).until_async(condition).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_value_once_the_condition_holds() {
        let mut tries = 0;
        let value = eventually("three tries", || {
            tries += 1;
            (tries == 3).then_some(tries)
        });
        assert_eq!(value, 3);
    }

    #[test]
    fn panics_naming_what_was_awaited_and_the_last_reason() {
        let panic = std::panic::catch_unwind(|| {
            Poll::new("the impossible")
                .timeout(Duration::from_millis(30))
                .context(|| "the context".to_string())
                .until(|| Err::<(), _>("not yet"))
        })
        .unwrap_err();
        let message = panic.downcast_ref::<String>().unwrap();
        assert!(message.contains("waiting for the impossible"), "{message}");
        assert!(message.contains("last: not yet"), "{message}");
        assert!(message.contains("the context"), "{message}");
    }

    #[test]
    fn an_abort_ends_the_wait_at_once() {
        let started = Instant::now();
        let panic = std::panic::catch_unwind(|| {
            Poll::new("something")
                .abort_if(|| Some("it exited".into()))
                .until(|| false)
        })
        .unwrap_err();
        assert!(started.elapsed() < TIMEOUT);
        let message = panic.downcast_ref::<String>().unwrap();
        assert!(message.starts_with("it exited while waiting for something"));
    }

    #[tokio::test]
    async fn the_async_variant_polls_an_async_condition() {
        let mut tries = 0;
        let value = eventually_async("two tries", || {
            tries += 1;
            let done = tries == 2;
            async move { if done { Ok(7) } else { Err("once more") } }
        })
        .await;
        assert_eq!(value, 7);
    }
}
