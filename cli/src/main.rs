//! `sundial`: the command line. (Minimal wiring in the `admin` branch; the
//! full command set lives on main.)

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod tasks;

#[derive(Debug, Parser)]
#[command(name = "sundial", version, about = "Scheduled HTTP task dispatcher")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Manage tasks through the admin API.
    #[command(subcommand)]
    Tasks(tasks::TasksCmd),
    /// Backlog, lag and failures, from the admin API.
    Status(tasks::StatusArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Tasks(cmd) => tasks::run(cmd).await,
        Command::Status(args) => tasks::status(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
