//! The local stack's scorecard stand-in as a process, for `dev/run`: plays recorded scorecard
//! outputs back on the KWOK pods of one namespace until SIGTERM/SIGINT.

use anyhow::Context as _;
use fleet_tests::{kube_support, sim::Simulator};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let namespace = std::env::args()
        .nth(1)
        .context("usage: scorecard-sim NAMESPACE")?;
    let shutdown = fleet_runtime::shutdown::on_signal()?;
    let _sim = Simulator::start(kube_support::admin().await, &namespace);
    eprintln!("scorecard-sim: playing back recorded scorecard outputs in namespace {namespace}");
    shutdown.cancelled().await;
    Ok(())
}
