//! Support for the integration tests: finding the local stack and simulating scorecard runs.
//!
//! - [`stack`]: the addresses of the stack `dev/stack up` started; a missing stack is a loud failure.
//! - [`kube_support`]: Kubernetes clients (admin, or a ServiceAccount's token) and small waits.
//! - [`sim`]: the scorecard stand-in: gives a KWOK pod a recorded output as its log and an exit code.
//! - [`nats_server`]: a private nats-server a fault test may stop and start.
//! - [`nats_cluster`]: a private three-server JetStream cluster whose servers a test may kill,
//!   pause and restart.
//! - [`pg`]: a private PostgreSQL a fault test may stop and start.
//! - [`pgbouncer`]: Debian's PgBouncer in transaction pooling mode in front of the stack's
//!   PostgreSQL.
//! - [`report`]: the benchmark programs' rows, table numbers and JSON.
//! - [`results`]: many distinct fixture-shaped `ScoreResult`s.
//! - [`fleet`]: the real binaries as a running fleet, and the end-to-end invariant.
//! - [`fixtures`]: the recorded scorecard outputs in `../shared/fixtures/`.
//! - [`proxy`]: a TCP proxy a test can cut, for network outages; one that counts PostgreSQL
//!   round trips.
//! - [`book`]: the book's generated pages: the configuration reference (from the binaries' clap
//!   definitions) and the API reference (from the OpenAPI document).
//! - [`probe`]: a service's `/readyz` over a socket, and plain HTTP requests.
//! - [`api_server`]: the api binary running on loopback, as its read-only login.
//! - [`browser`]: pages as a real headless Chromium renders them, with screenshots.

pub mod api_server;
pub mod book;
pub mod browser;
pub mod fixtures;
pub mod fleet;
pub mod kube_support;
pub mod nats_cluster;
pub mod nats_server;
pub mod pg;
pub mod pgbouncer;
pub mod probe;
pub mod proxy;
pub mod quota;
pub mod report;
pub mod results;
pub mod scratch;
pub mod sim;
pub mod stack;
