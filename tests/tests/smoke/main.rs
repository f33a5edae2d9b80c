//! Smoke tests proving each service of the local stack is real and does what the fleet needs.
//! They need `dev/stack up`; without it they fail, loudly.

mod kubernetes;
mod nats;
mod postgres;
