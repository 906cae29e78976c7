//! `sundial`: the command line. Runs the whole system locally (`dev`),
//! applies migrations, previews schedules, runs the scanner or an SQS
//! consumer outside Lambda, manages tasks and flows over the admin API,
//! explains what became of an occurrence (`why`), and benchmarks.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod admin;
mod backfill;
mod dev;
mod flows;
mod pipeline;
mod runtime;
mod schedule_cmd;
mod status;
mod tasks;
mod why;

#[derive(Debug, Parser)]
#[command(name = "sundial", version, about = "Fires HTTP endpoints on schedules")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run everything in one process: admin API, scanner loop, processor.
    Dev(dev::DevArgs),
    /// Serve the admin API and the console alone (no scanner, no processor).
    Admin(admin::AdminArgs),
    /// Apply database migrations (DATABASE_URL).
    Migrate,
    /// Work with schedule expressions.
    #[command(subcommand)]
    Schedule(schedule_cmd::ScheduleCmd),
    /// Run the scanner against SUNDIAL_QUEUE_URL (once, or in a loop).
    Scan(runtime::ScanArgs),
    /// Consume the SQS dispatch queue and fire endpoints (like the Lambda).
    Process(runtime::ProcessArgs),
    /// Manage tasks through the admin API.
    #[command(subcommand)]
    Tasks(tasks::TasksCmd),
    /// Set and inspect the limits per target (flows) through the admin API.
    #[command(subcommand)]
    Flows(flows::FlowsCmd),
    /// Show pipeline health, scanner heartbeat, backlog, recent runs, fire lag
    /// and open flows from the admin API.
    Status(status::StatusArgs),
    /// Say what became of a task's occurrence: fired, skipped, paused, missed.
    Why(why::WhyArgs),
    /// Measure throughput, lag, memory and scan speed.
    Bench(sundial_bench::BenchArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Dev(args) => dev::run(args).await,
        Command::Admin(args) => admin::run(args).await,
        Command::Migrate => runtime::migrate().await,
        Command::Schedule(cmd) => schedule_cmd::run(cmd),
        Command::Scan(args) => runtime::scan(args).await,
        Command::Process(args) => runtime::process(args).await,
        Command::Tasks(cmd) => tasks::run(cmd).await,
        Command::Flows(cmd) => flows::run(cmd).await,
        Command::Status(args) => status::status(args).await,
        Command::Why(args) => why::run(args).await,
        Command::Bench(args) => sundial_bench::run(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
