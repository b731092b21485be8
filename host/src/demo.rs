//! `glucoguard demo`: placeholder wiring replaced below once the simulator API is fixed.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {}
pub async fn run(_a: DemoArgs) -> anyhow::Result<()> { anyhow::bail!("demo not wired yet") }
