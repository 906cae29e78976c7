//! `sundial dev` (being built).
use anyhow::Result;
use clap::Args;

#[derive(Debug, Args)]
pub struct DevArgs {}

pub async fn run(_args: DevArgs) -> Result<()> {
    anyhow::bail!("`sundial dev` is not built yet")
}
