//! `sundial tasks` and `sundial status` (being built).
use anyhow::Result;
use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum TasksCmd {
    /// List tasks.
    List,
}

#[derive(Debug, Args)]
pub struct StatusArgs {}

pub async fn run(_cmd: TasksCmd) -> Result<()> {
    anyhow::bail!("`sundial tasks` is not built yet")
}

pub async fn status(_args: StatusArgs) -> Result<()> {
    anyhow::bail!("`sundial status` is not built yet")
}
