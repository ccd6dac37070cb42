//! The `gatehouse` binary's parts, as a library so tests can check them against the
//! documentation and compose.yml: its command line ([`cli`]), the all-in-one ([`up`]), the demo [`bootstrap`], the
//! Docker [`healthcheck`] probes, and the generated [`reference`](mod@reference) of every flag and
//! environment variable.

pub mod bootstrap;
pub mod ca;
pub mod cli;
pub mod gitops;
pub mod healthcheck;
mod insecure_https;
pub mod reference;
pub mod up;
