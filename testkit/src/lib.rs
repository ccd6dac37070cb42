//! What Gatehouse's test suites share, defined once (dev-only: every crate lists it under
//! `[dev-dependencies]`, none in its own code).
//!
//! | module | what it offers |
//! |---|---|
//! | [`cli`] | a binary's `--help` flags against the clap definition they come from |
//! | [`ports`] | free loopback ports and addresses, a URL where nothing listens |
//! | [`poll`] | [`eventually`] (sync and async): wait for a condition, panic naming what was awaited |
//! | [`proxy`] | a TCP proxy a test cuts and heals (a node cut off from NATS) |
//! | [`process`] | one child-process wrapper: output to a log file, killed on drop, signals, restarts |
//! | [`chaos`] | writers appending through NATS failures, and the check that nothing acknowledged was lost |
//! | [`nats`] | a real `nats-server` with JetStream, alone or as a cluster of three |
//! | [`world`] | the admin side of a test: a log, a read model following it, commands, a published signing key |
//! | [`domain`] | "handle and apply": decide a command against a `State` and fold its events, no I/O |
//! | [`pki`] | a test cluster CA and node certificates (the product's own mutual TLS) |
//! | [`grpc`] | TLS targets, the bearer-token interceptor, an admin client, grpcurl |
//! | [`tls`] | an HTTP/1.1 + HTTP/2 client that accepts any certificate, and convergence polls on it |
//! | [`backend`] | backends served in-process: any router, the seed's two, an echo backend |
//! | [`service`] | what the backends' own tests check: in-process requests, OpenAPI, the real binary |
//! | [`snapshot`] | a node's snapshot reached past the node (read, damage, remove), a folding node's metrics |
//!
//! Every helper panics with a message saying what it was doing: a test has nothing
//! sensible to do with a failure to start nats-server, or with a condition that never
//! came true, but to fail and say why.

pub mod backend;
pub mod chaos;
pub mod cli;
pub mod domain;
pub mod grpc;
pub mod nats;
pub mod pki;
pub mod poll;
pub mod ports;
pub mod process;
pub mod proxy;
pub mod service;
pub mod snapshot;
pub mod tls;
pub mod world;

pub use poll::{eventually, eventually_async};
pub use ports::{free_addr, free_port};
pub use process::Process;
pub use world::{World, now};
