//! The composition root: the one path every binary starts through.
//!
//! The three Lambdas and `sundial scan | process | dev` all build their
//! dependencies here, once per process: settings → Postgres pool (and
//! migrations when `SUNDIAL_MIGRATE_ON_START` asks) → dispatch queue client
//! → target guard → (for firing) signer, HTTP client and processor. A
//! function's `main` then only wires an event source to these parts.
//!
//! Lambdas use [`App::start`], which fails the cold start at once with a
//! message naming the setting. Long-running drivers use
//! [`App::start_patiently`]: a configuration error still ends the process,
//! but a database that is not reachable yet is waited for (with capped,
//! jittered backoff) until it is, or until a signal.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::watch;

use crate::config::{ConfigError, Settings};
use crate::fire::{GuardError, Signer, TargetGuard};
use crate::notify::Notifier;
use crate::process::{Processor, SetupError};
use crate::queue::memory::MemoryQueue;
use crate::queue::sqs::{client_from_env, SqsQueue};
use crate::queue::DispatchQueue;
use crate::scan::ScanOptions;
use crate::store::{self, StoreError};

/// Which dispatch queue a process needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueNeed {
    /// SQS at `SUNDIAL_QUEUE_URL` (required).
    Sqs,
    /// SQS when `SUNDIAL_QUEUE_URL` is set, else the in-process queue
    /// (`sundial dev`).
    SqsOrMemory,
}

/// The dispatch queue a process uses.
#[derive(Clone)]
pub enum Queue {
    /// Amazon SQS (or the emulator).
    Sqs(SqsQueue),
    /// The in-process queue of `sundial dev`.
    Memory(Arc<MemoryQueue>),
}

impl Queue {
    /// The queue as the send port the scanner, retries and the admin API use.
    pub fn dispatch(&self) -> Arc<dyn DispatchQueue> {
        match self {
            Queue::Sqs(q) => Arc::new(q.clone()),
            Queue::Memory(q) => q.clone(),
        }
    }
}

/// Why a process cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A setting is missing or invalid (names the variable).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The allow-list could not be turned into a target guard.
    #[error("invalid setting SUNDIAL_ALLOW_TARGETS: {0}")]
    Guard(#[from] GuardError),
    /// The signer or HTTP client could not be built.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// Postgres is unreachable, or migrations failed.
    #[error("cannot connect to DATABASE_URL or apply migrations: {0}")]
    Database(#[source] StoreError),
}

/// Everything a Sundial process is built from.
#[derive(Clone)]
pub struct App {
    /// The settings it started with.
    pub settings: Settings,
    /// The process's one pool.
    pub pool: PgPool,
    /// The dispatch queue.
    pub queue: Queue,
    /// The one target guard (admin registration and firing share it).
    pub guard: Arc<TargetGuard>,
    /// The SNS client, when `SUNDIAL_NOTIFY_TOPIC_ARN` is set.
    sns: Option<aws_sdk_sns::Client>,
    /// The one notifier, built with the first HTTP client the process makes.
    notifier: Arc<std::sync::OnceLock<Arc<Notifier>>>,
}

impl App {
    /// Builds the parts, failing at once on any error (Lambda cold start).
    pub async fn start(settings: Settings, need: QueueNeed) -> Result<App, StartError> {
        let guard = Self::check(&settings, need)?;
        let pool = store::connect_from_settings(&settings)
            .await
            .map_err(|err| match err {
                StoreError::Config(c) => StartError::Config(c),
                other => StartError::Database(other),
            })?;
        Self::assemble(settings, need, pool, guard).await
    }

    /// Like [`App::start`], but waits for the database while it is
    /// unreachable, logging each attempt. `Ok(None)`: shutdown came first.
    pub async fn start_patiently(
        settings: Settings,
        need: QueueNeed,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<Option<App>, StartError> {
        let guard = Self::check(&settings, need)?;
        let mut failures = 0u32;
        loop {
            match store::connect_from_settings(&settings).await {
                Ok(pool) => return Self::assemble(settings, need, pool, guard).await.map(Some),
                Err(StoreError::Config(c)) => return Err(StartError::Config(c)),
                Err(err) => {
                    let wait = crate::worker::backoff(
                        failures,
                        Duration::from_millis(500),
                        Duration::from_secs(15),
                    );
                    failures = failures.saturating_add(1);
                    tracing::warn!(error = %err, retry_in_ms = wait.as_millis() as u64, "database not reachable; waiting");
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        _ = shutdown.wait_for(|stop| *stop) => return Ok(None),
                    }
                }
            }
        }
    }

    /// Checks what can be checked without the network.
    fn check(settings: &Settings, need: QueueNeed) -> Result<Arc<TargetGuard>, StartError> {
        settings.require_database_url()?;
        if need == QueueNeed::Sqs {
            settings.require_queue_url()?;
        }
        Ok(Arc::new(TargetGuard::new(&settings.allow_targets)?))
    }

    async fn assemble(
        settings: Settings,
        need: QueueNeed,
        pool: PgPool,
        guard: Arc<TargetGuard>,
    ) -> Result<App, StartError> {
        let url = match need {
            QueueNeed::Sqs => Some(settings.require_queue_url()?.to_string()),
            QueueNeed::SqsOrMemory => settings.queue_url.clone(),
        };
        let queue = match url {
            Some(url) => Queue::Sqs(
                SqsQueue::new(client_from_env().await, url, settings.send_concurrency)
                    .with_delivery_lead(settings.delivery_lead),
            ),
            None => Queue::Memory(Arc::new(MemoryQueue::default())),
        };
        let sns = match settings.notify.topic_arn {
            Some(_) => Some(crate::notify::sns_client_from_env().await),
            None => None,
        };
        Ok(App {
            settings,
            pool,
            queue,
            guard,
            sns,
            notifier: Arc::default(),
        })
    }

    /// The processor (signer, HTTP client, limits), retrying through the
    /// dispatch queue.
    pub fn processor(&self) -> Result<Processor, StartError> {
        let processor = Processor::build(
            self.pool.clone(),
            &self.settings,
            self.guard.clone(),
            self.queue.dispatch(),
        )?;
        // The notifier shares the firer's client and signer.
        let firer = processor.firer();
        let notifier = self.notifier_with(firer.client().clone(), firer.signer().clone());
        Ok(processor.with_notifier(notifier))
    }

    /// The process's notifier: the one [`Self::processor`] made, else one
    /// over a client of its own (the scanner fires nothing).
    pub fn notifier(&self) -> Result<Arc<Notifier>, StartError> {
        if let Some(notifier) = self.notifier.get() {
            return Ok(notifier.clone());
        }
        let setup = |setting, reason: String| SetupError { setting, reason };
        let signer = Signer::new(self.settings.signing_secrets.clone())
            .map_err(|e| setup("SUNDIAL_SIGNING_SECRETS", e.to_string()))?;
        let opts = crate::fire::ClientOptions::from_settings(&self.settings);
        let client = crate::fire::build_http_client(self.guard.clone(), &opts)
            .map_err(|e| setup("HTTP client", e.to_string()))?;
        Ok(self.notifier_with(client, signer))
    }

    fn notifier_with(&self, client: reqwest::Client, signer: Signer) -> Arc<Notifier> {
        self.notifier
            .get_or_init(|| {
                Arc::new(Notifier::new(
                    self.pool.clone(),
                    client,
                    signer,
                    self.sns.clone(),
                    self.settings.notify.clone(),
                ))
            })
            .clone()
    }

    /// Scan options from the settings, with `owner` in `lease_owner`; the
    /// tick delivers notifications still due.
    pub fn scan_options(&self, owner: impl Into<String>) -> ScanOptions {
        let mut opts = ScanOptions::from_settings(&self.settings, owner);
        match self.notifier() {
            Ok(notifier) => opts.notifier = Some(notifier),
            Err(err) => tracing::warn!(error = %err, "scanner cannot deliver notifications"),
        }
        opts
    }

    /// The SQS queue, when the process uses SQS.
    pub fn sqs(&self) -> Option<&SqsQueue> {
        match &self.queue {
            Queue::Sqs(q) => Some(q),
            Queue::Memory(_) => None,
        }
    }
}
