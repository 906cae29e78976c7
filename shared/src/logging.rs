//! Log setup shared by every binary: JSON without ANSI colours or
//! timestamps in Lambda (CloudWatch adds the time), readable text locally.

use tracing_subscriber::EnvFilter;

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines (the CLI and `sundial dev`).
    #[default]
    Text,
    /// One JSON object per line, with the time.
    Json,
    /// JSON for Lambda: no time (Lambda adds it), no ANSI.
    Lambda,
}

/// Installs the global subscriber; `RUST_LOG` overrides the default level
/// (`info`). Calling it twice is harmless.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,sqlx=warn,aws_config=warn,aws_smithy_runtime=warn,hyper=warn")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // Colours only for a terminal (and never with NO_COLOR set).
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let _ = match format {
        LogFormat::Text => builder.with_target(false).with_ansi(colour).try_init(),
        LogFormat::Json => builder
            .json()
            .with_ansi(false)
            .with_current_span(true)
            .try_init(),
        LogFormat::Lambda => builder
            .json()
            .with_ansi(false)
            .without_time()
            .with_current_span(true)
            .with_writer(std::io::stdout)
            .try_init(),
    };
}

/// The function name for metrics: Lambda's own, or `fallback` elsewhere.
pub fn function_name(fallback: &str) -> String {
    std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| fallback.to_string())
}
