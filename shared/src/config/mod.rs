//! Settings read from the environment, with every default in one place.
//!
//! The same names are used by the Lambda functions, the CLI and `sundial dev`
//! (see the configuration table in the README). Binaries call
//! [`Settings::from_env`] once at start and fail fast with a message that
//! names the missing or invalid variable.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::CertificateDer;

/// Documented defaults. The README's configuration table mirrors these.
pub mod defaults {
    /// Requests in flight per processor (`SUNDIAL_CONCURRENCY`).
    pub const CONCURRENCY: usize = 200;
    /// Requests in flight per target host (`SUNDIAL_PER_HOST_CONCURRENCY`).
    pub const PER_HOST_CONCURRENCY: usize = 50;
    /// Requests in flight a flow new to a processor starts from, in slow
    /// start (`SUNDIAL_FLOW_SLOW_START`; `off` starts at the cap).
    pub const FLOW_SLOW_START: usize = 4;
    /// How far ahead the scanner claims (`SUNDIAL_LOOKAHEAD_SECS`): one
    /// EventBridge tick plus a margin, so nothing due before the next tick
    /// waits for it.
    pub const LOOKAHEAD_SECS: u64 = 75;
    /// Rows claimed per page (`SUNDIAL_PAGE_SIZE`).
    pub const PAGE_SIZE: i64 = 500;
    /// `SendMessageBatch` calls in flight per scanner (`SUNDIAL_SEND_CONCURRENCY`).
    pub const SEND_CONCURRENCY: usize = 8;
    /// How long one scan may keep claiming pages (`SUNDIAL_SCAN_BUDGET_SECS`).
    pub const SCAN_BUDGET_SECS: u64 = 50;
    /// Lease kept on a dispatched occurrence beyond its due time and its
    /// timeout (`SUNDIAL_LEASE_SECS`); after it lapses the scanner
    /// dispatches the occurrence again, so this is the crash-recovery time.
    pub const LEASE_SECS: u64 = 300;
    /// Postgres connections per process (`SUNDIAL_DB_POOL_SIZE`).
    pub const DB_POOL_SIZE: u32 = 5;
    /// Time kept free before the Lambda deadline (`SUNDIAL_DEADLINE_MARGIN_MS`).
    pub const DEADLINE_MARGIN_MS: u64 = 2_000;
    /// Run history kept (`SUNDIAL_RUN_RETENTION_DAYS`).
    pub const RUN_RETENTION_DAYS: u32 = 30;
    /// How much earlier than its fire instant an SQS message is made due
    /// (`SUNDIAL_DELIVERY_LEAD_MS`): a delayed message becomes receivable a
    /// little after its delay, so it is aimed early and held by the
    /// processor until its instant. 0 saves the hold (processor wall time)
    /// at the price of firing as late as the queue delivers.
    pub const DELIVERY_LEAD_MS: u64 = 1_000;
    /// How long past its time an occurrence nobody holds counts as missed
    /// (`SUNDIAL_MISSED_GRACE_SECS`): the scanner's `MissedOccurrences`,
    /// the ledger's `missed` state and `sundial why`.
    pub const MISSED_GRACE_SECS: u64 = 120;
    /// How long without a scanner tick before `GET /v1/status` calls the
    /// pipeline unhealthy (`SUNDIAL_SCANNER_STALE_SECS`): three missed
    /// one-minute EventBridge ticks, as the heartbeat alarm.
    pub const SCANNER_STALE_SECS: u64 = 180;
    /// [`DELIVERY_LEAD_MS`] as a duration.
    pub const DELIVERY_LEAD: std::time::Duration =
        std::time::Duration::from_millis(DELIVERY_LEAD_MS);
}

/// A setting that is missing or cannot be used.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    /// A required variable is not set (or empty).
    #[error("missing setting {name}: {hint}")]
    Missing {
        /// The environment variable.
        name: &'static str,
        /// What it should hold.
        hint: &'static str,
    },
    /// A variable is set to something that cannot be used.
    #[error("invalid setting {name}={value:?}: {reason}")]
    Invalid {
        /// The environment variable.
        name: &'static str,
        /// The value found.
        value: String,
        /// Why it cannot be used.
        reason: String,
    },
}

/// Everything a Sundial process can be configured with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `DATABASE_URL`.
    pub database_url: Option<String>,
    /// `SUNDIAL_QUEUE_URL`; `None` means the in-process queue (dev only).
    pub queue_url: Option<String>,
    /// `SUNDIAL_ADMIN_TOKEN`.
    pub admin_token: Option<String>,
    /// `SUNDIAL_SIGNING_SECRETS`, first signs, all verify.
    pub signing_secrets: Vec<String>,
    /// `SUNDIAL_ALLOW_TARGETS`: CIDRs or hosts exempt from the private-address guard.
    pub allow_targets: Vec<String>,
    /// `SUNDIAL_CONCURRENCY`.
    pub concurrency: usize,
    /// `SUNDIAL_PER_HOST_CONCURRENCY`.
    pub per_host_concurrency: usize,
    /// `SUNDIAL_LOOKAHEAD_SECS`.
    pub lookahead: Duration,
    /// `SUNDIAL_PAGE_SIZE`.
    pub page_size: i64,
    /// `SUNDIAL_SEND_CONCURRENCY`.
    pub send_concurrency: usize,
    /// `SUNDIAL_SCAN_BUDGET_SECS`.
    pub scan_budget: Duration,
    /// `SUNDIAL_LEASE_SECS`.
    pub lease: Duration,
    /// `SUNDIAL_DB_POOL_SIZE`.
    pub db_pool_size: u32,
    /// `SUNDIAL_DEADLINE_MARGIN_MS`.
    pub deadline_margin: Duration,
    /// `SUNDIAL_RUN_RETENTION_DAYS`.
    pub run_retention_days: u32,
    /// `SUNDIAL_DELIVERY_LEAD_MS`.
    pub delivery_lead: Duration,
    /// `SUNDIAL_MIGRATE_ON_START`: apply pending migrations when a binary
    /// starts (`true`/`false`, default false; `sundial dev` always does).
    pub migrate_on_start: bool,
    /// `SUNDIAL_EXTRA_CA_FILE`: extra trusted roots, read and parsed at start.
    pub extra_ca: Option<ExtraCa>,
    /// `SUNDIAL_MISSED_GRACE_SECS`.
    pub missed_grace: Duration,
    /// `SUNDIAL_SCANNER_STALE_SECS`.
    pub scanner_stale: Duration,
    /// `SUNDIAL_DLQ_URL`: the dispatch queue's dead-letter queue, whose
    /// depth `GET /v1/status` reports (optional).
    pub dlq_url: Option<String>,
    /// Flow-control defaults (`SUNDIAL_BREAKER_*`, `SUNDIAL_RETRY_BUDGET`,
    /// `SUNDIAL_THROTTLE_BACKOFF_MS`, `SUNDIAL_FLOW_SYNC_MS`).
    pub flow: crate::flow::FlowSettings,
    /// Notifications (`SUNDIAL_NOTIFY_*`, see [`crate::notify::NotifySettings`]).
    pub notify: crate::notify::NotifySettings,
}

/// Certificates of `SUNDIAL_EXTRA_CA_FILE`: roots trusted *in addition to*
/// the platform's, for local TLS targets in tests and for private CAs.
/// Verification is never switched off; this only widens what it accepts.
#[derive(Debug, Clone, PartialEq)]
pub struct ExtraCa {
    /// The file they were read from.
    pub path: PathBuf,
    /// The certificates, DER encoded, in file order (at least one).
    pub certs: Vec<CertificateDer<'static>>,
}

impl ExtraCa {
    /// Read a PEM file of one or more `CERTIFICATE` sections (other sections,
    /// such as keys, are ignored). The error names `SUNDIAL_EXTRA_CA_FILE`.
    pub fn from_pem_file(path: &Path) -> Result<Self, ConfigError> {
        const NAME: &str = "SUNDIAL_EXTRA_CA_FILE";
        let invalid = |reason: String| ConfigError::Invalid {
            name: NAME,
            value: path.display().to_string(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|e| invalid(format!("cannot read the file: {e}")))?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(format!("not a valid PEM file: {e}")))?;
        if certs.is_empty() {
            return Err(invalid("no PEM CERTIFICATE section in the file".into()));
        }
        Ok(Self {
            path: path.to_path_buf(),
            certs,
        })
    }
}

impl Settings {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_map(&std::env::vars().collect())
    }

    /// Reads settings from a map (the environment, or a test's).
    pub fn from_map(env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let extra_ca = text(env, "SUNDIAL_EXTRA_CA_FILE")
            .map(|path| ExtraCa::from_pem_file(Path::new(&path)))
            .transpose()?;
        let per_host_concurrency = number(
            env,
            "SUNDIAL_PER_HOST_CONCURRENCY",
            defaults::PER_HOST_CONCURRENCY,
            1,
            10_000,
        )?;
        let max_lead = crate::firetime::MAX_DELIVERY_LEAD.as_millis() as u64;
        Ok(Settings {
            notify: crate::notify::NotifySettings::from_map(env)?,
            flow: flow_settings(env, per_host_concurrency)?,
            migrate_on_start: flag(env, "SUNDIAL_MIGRATE_ON_START", false)?,
            extra_ca,
            database_url: text(env, "DATABASE_URL"),
            queue_url: text(env, "SUNDIAL_QUEUE_URL"),
            admin_token: text(env, "SUNDIAL_ADMIN_TOKEN"),
            signing_secrets: list(env, "SUNDIAL_SIGNING_SECRETS"),
            allow_targets: list(env, "SUNDIAL_ALLOW_TARGETS"),
            concurrency: number(env, "SUNDIAL_CONCURRENCY", defaults::CONCURRENCY, 1, 10_000)?,
            per_host_concurrency,
            lookahead: secs(
                env,
                "SUNDIAL_LOOKAHEAD_SECS",
                defaults::LOOKAHEAD_SECS,
                0,
                900,
            )?,
            page_size: number(env, "SUNDIAL_PAGE_SIZE", defaults::PAGE_SIZE, 1, 10_000)?,
            send_concurrency: number(
                env,
                "SUNDIAL_SEND_CONCURRENCY",
                defaults::SEND_CONCURRENCY,
                1,
                64,
            )?,
            scan_budget: secs(
                env,
                "SUNDIAL_SCAN_BUDGET_SECS",
                defaults::SCAN_BUDGET_SECS,
                1,
                890,
            )?,
            lease: secs(env, "SUNDIAL_LEASE_SECS", defaults::LEASE_SECS, 5, 86_400)?,
            db_pool_size: number(env, "SUNDIAL_DB_POOL_SIZE", defaults::DB_POOL_SIZE, 1, 500)?,
            deadline_margin: millis(
                env,
                "SUNDIAL_DEADLINE_MARGIN_MS",
                defaults::DEADLINE_MARGIN_MS,
                0,
                60_000,
            )?,
            delivery_lead: millis(
                env,
                "SUNDIAL_DELIVERY_LEAD_MS",
                defaults::DELIVERY_LEAD_MS,
                0,
                max_lead,
            )?,
            run_retention_days: number(
                env,
                "SUNDIAL_RUN_RETENTION_DAYS",
                defaults::RUN_RETENTION_DAYS,
                1,
                3650,
            )?,
            missed_grace: secs(
                env,
                "SUNDIAL_MISSED_GRACE_SECS",
                defaults::MISSED_GRACE_SECS,
                1,
                86_400,
            )?,
            scanner_stale: secs(
                env,
                "SUNDIAL_SCANNER_STALE_SECS",
                defaults::SCANNER_STALE_SECS,
                1,
                86_400,
            )?,
            dlq_url: text(env, "SUNDIAL_DLQ_URL"),
        })
    }

    /// The database URL, or an error naming `DATABASE_URL`.
    pub fn require_database_url(&self) -> Result<&str, ConfigError> {
        self.database_url.as_deref().ok_or(ConfigError::Missing {
            name: "DATABASE_URL",
            hint: "a Postgres URL such as postgres://user:pass@host:5432/sundial",
        })
    }

    /// The dispatch queue URL, or an error naming `SUNDIAL_QUEUE_URL`.
    pub fn require_queue_url(&self) -> Result<&str, ConfigError> {
        self.queue_url.as_deref().ok_or(ConfigError::Missing {
            name: "SUNDIAL_QUEUE_URL",
            hint: "the URL of the SQS dispatch queue",
        })
    }

    /// The admin bearer token, or an error naming `SUNDIAL_ADMIN_TOKEN`.
    pub fn require_admin_token(&self) -> Result<&str, ConfigError> {
        match self.admin_token.as_deref() {
            Some(t) if t.len() >= 16 => Ok(t),
            Some(t) => Err(ConfigError::Invalid {
                name: "SUNDIAL_ADMIN_TOKEN",
                value: "*".repeat(t.len()),
                reason: "use at least 16 characters".into(),
            }),
            None => Err(ConfigError::Missing {
                name: "SUNDIAL_ADMIN_TOKEN",
                hint: "the bearer token required by the admin API (16+ characters)",
            }),
        }
    }
}

/// A setting as text: trimmed, `None` when unset or blank.
fn text(env: &HashMap<String, String>, name: &str) -> Option<String> {
    env.get(name)
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// A comma-separated setting: the trimmed, non-empty items.
fn list(env: &HashMap<String, String>, name: &str) -> Vec<String> {
    text(env, name)
        .map(|v| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// A yes/no setting (`true`/`1`/`yes`, `false`/`0`/`no`).
fn flag(
    env: &HashMap<String, String>,
    name: &'static str,
    default: bool,
) -> Result<bool, ConfigError> {
    match text(env, name).as_deref() {
        None => Ok(default),
        Some("true" | "1" | "yes") => Ok(true),
        Some("false" | "0" | "no") => Ok(false),
        Some(other) => Err(ConfigError::Invalid {
            name,
            value: other.to_string(),
            reason: "use true or false".into(),
        }),
    }
}

/// A duration given in whole seconds, within bounds.
fn secs(
    env: &HashMap<String, String>,
    name: &'static str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<Duration, ConfigError> {
    number(env, name, default, min, max).map(Duration::from_secs)
}

/// A duration given in whole milliseconds, within bounds.
fn millis(
    env: &HashMap<String, String>,
    name: &'static str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<Duration, ConfigError> {
    number(env, name, default, min, max).map(Duration::from_millis)
}

/// The defaults of flow control (`SUNDIAL_BREAKER_*`, `SUNDIAL_RETRY_BUDGET`,
/// `SUNDIAL_THROTTLE_BACKOFF_MS`, `SUNDIAL_FLOW_SYNC_MS`,
/// `SUNDIAL_FLOW_SLOW_START`).
fn flow_settings(
    env: &HashMap<String, String>,
    per_flow_cap: usize,
) -> Result<crate::flow::FlowSettings, ConfigError> {
    let d = crate::flow::FlowSettings::default();
    let as_ms = |t: Duration| t.as_millis() as u64;
    Ok(crate::flow::FlowSettings {
        per_flow_cap,
        initial_limit: slow_start(env, d.initial_limit)?,
        breaker_failures: number(
            env,
            "SUNDIAL_BREAKER_FAILURES",
            d.breaker_failures,
            1,
            10_000,
        )?,
        breaker_window: secs(
            env,
            "SUNDIAL_BREAKER_WINDOW_SECS",
            d.breaker_window.as_secs(),
            1,
            86_400,
        )?,
        breaker_cooldown: secs(
            env,
            "SUNDIAL_BREAKER_COOLDOWN_SECS",
            d.breaker_cooldown.as_secs(),
            1,
            86_400,
        )?,
        retry_budget: number(env, "SUNDIAL_RETRY_BUDGET", d.retry_budget, 0.0, 10.0)?,
        throttle_backoff: millis(
            env,
            "SUNDIAL_THROTTLE_BACKOFF_MS",
            as_ms(d.throttle_backoff),
            0,
            900_000,
        )?,
        sync_every: millis(env, "SUNDIAL_FLOW_SYNC_MS", as_ms(d.sync_every), 20, 60_000)?,
    })
}

/// `SUNDIAL_FLOW_SLOW_START`: a window of 1 to 100,000, or `off` (a new
/// flow starts at its cap).
fn slow_start(env: &HashMap<String, String>, default: usize) -> Result<usize, ConfigError> {
    const NAME: &str = "SUNDIAL_FLOW_SLOW_START";
    match env.get(NAME).map(|v| v.trim()) {
        Some(v) if v.eq_ignore_ascii_case("off") => Ok(usize::MAX),
        _ => number(env, NAME, default, 1, 100_000),
    }
}

pub(crate) fn number<T>(
    env: &HashMap<String, String>,
    name: &'static str,
    default: T,
    min: T,
    max: T,
) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let Some(raw) = env.get(name).map(|v| v.trim()).filter(|v| !v.is_empty()) else {
        return Ok(default);
    };
    let invalid = |reason: String| ConfigError::Invalid {
        name,
        value: raw.to_string(),
        reason,
    };
    let value: T = raw.parse().map_err(|_| {
        let kind = if std::any::type_name::<T>().starts_with('f') {
            "not a number"
        } else {
            "not a whole number"
        };
        invalid(kind.into())
    })?;
    if value < min || value > max {
        return Err(invalid(format!("must be between {min} and {max}")));
    }
    Ok(value)
}

#[cfg(test)]
mod tests;
