//! The admin Lambda: serves `sundial::admin::router` behind a function URL
//! (or API Gateway HTTP API). Config, pool, queue client and guard are built
//! once per cold start; the router is the same one `sundial dev` serves.

use std::sync::Arc;

use anyhow::Context as _;
use sundial::admin::{self, AdminState};
use sundial::config::Settings;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    // CloudWatch adds the time; ANSI colours would show as escape codes.
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(false)
        .without_time()
        .with_current_span(false)
        .init();

    let state = build_state().await.map_err(|err| {
        // Fail the cold start with a message naming the setting.
        tracing::error!(error = format!("{err:#}"), "admin function cannot start");
        err
    })?;
    lambda_http::run(admin::router(state)).await
}

async fn build_state() -> anyhow::Result<AdminState> {
    let settings = Settings::from_env()?;
    let database_url = settings.require_database_url()?;
    let token = settings.require_admin_token()?;
    let queue_url = settings.require_queue_url()?.to_string();
    let pool = sundial::store::connect(database_url, settings.db_pool_size)
        .await
        .context("connecting to DATABASE_URL")?;
    let aws = aws_config::load_from_env().await;
    let queue = Arc::new(placeholder::SqsSend {
        client: aws_sdk_sqs::Client::new(&aws),
        queue_url,
    });
    let targets = Arc::new(placeholder::LiteralTargets::new(&settings.allow_targets));
    Ok(AdminState::new(pool, queue, targets, token))
}

// ---------------------------------------------------------------------------
// PLACEHOLDER (to be replaced on merge): `sundial::queue::sqs::SqsQueue` and
// `sundial::fire::guard::TargetGuard` are written in other branches. Until
// they land, this function uses the two small adapters below. Replace with:
//     let queue = Arc::new(SqsQueue::new(client, queue_url));
//     let targets = Arc::new(TargetGuard::new(&settings.allow_targets));
// ---------------------------------------------------------------------------
mod placeholder {
    use std::net::IpAddr;

    use async_trait::async_trait;
    use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
    use sundial::admin::TargetCheck;
    use sundial::queue::{DispatchQueue, Outgoing, SendReport, MAX_DELAY};

    /// Sends dispatch messages with `SendMessageBatch`, 10 per call.
    pub struct SqsSend {
        pub client: aws_sdk_sqs::Client,
        pub queue_url: String,
    }

    #[async_trait]
    impl DispatchQueue for SqsSend {
        async fn send(&self, messages: &[Outgoing]) -> SendReport {
            let mut report = SendReport::default();
            for (chunk_no, chunk) in messages.chunks(10).enumerate() {
                let base = chunk_no * 10;
                let entries: Result<Vec<_>, _> = chunk
                    .iter()
                    .enumerate()
                    .map(|(i, m)| {
                        SendMessageBatchRequestEntry::builder()
                            .id((base + i).to_string())
                            .message_body(m.message.to_json())
                            .delay_seconds(m.delay.min(MAX_DELAY).as_secs() as i32)
                            .build()
                    })
                    .collect();
                report.calls += 1;
                let outcome = match entries {
                    Ok(entries) => self
                        .client
                        .send_message_batch()
                        .queue_url(&self.queue_url)
                        .set_entries(Some(entries))
                        .send()
                        .await
                        .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(e).to_string()),
                    Err(e) => Err(e.to_string()),
                };
                match outcome {
                    Ok(out) => {
                        for failed in out.failed() {
                            if let Ok(i) = failed.id().parse::<usize>() {
                                report.failed.push(i);
                            }
                            report
                                .first_error
                                .get_or_insert_with(|| failed.message().unwrap_or("").to_string());
                        }
                    }
                    Err(reason) => {
                        report.failed.extend(base..base + chunk.len());
                        report.first_error.get_or_insert(reason);
                    }
                }
            }
            report
        }
    }

    /// Refuses URLs whose host is a literal loopback, private, link-local or
    /// unspecified address, or `localhost`, unless allow-listed verbatim
    /// (a `/32` or `/128` suffix is ignored). Names are not resolved: the
    /// real guard does that.
    pub struct LiteralTargets {
        allowed: Vec<String>,
    }

    impl LiteralTargets {
        pub fn new(allow: &[String]) -> Self {
            let allowed = allow
                .iter()
                .map(|a| {
                    a.trim_end_matches("/32")
                        .trim_end_matches("/128")
                        .to_ascii_lowercase()
                })
                .collect();
            LiteralTargets { allowed }
        }
    }

    #[async_trait]
    impl TargetCheck for LiteralTargets {
        async fn check(&self, raw: &str) -> Result<(), String> {
            let url = url::Url::parse(raw).map_err(|e| format!("not a valid URL: {e}"))?;
            let host = url.host_str().unwrap_or("").to_ascii_lowercase();
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            if self.allowed.iter().any(|a| a == bare) {
                return Ok(());
            }
            let forbidden = match bare.parse::<IpAddr>() {
                Ok(IpAddr::V4(ip)) => {
                    ip.is_loopback() || ip.is_private() || ip.is_link_local() || ip.is_unspecified()
                }
                Ok(IpAddr::V6(ip)) => {
                    ip.is_loopback()
                        || ip.is_unspecified()
                        || (ip.segments()[0] & 0xfe00) == 0xfc00
                        || (ip.segments()[0] & 0xffc0) == 0xfe80
                }
                Err(_) => bare == "localhost" || bare.ends_with(".localhost"),
            };
            if forbidden {
                return Err(format!(
                    "target `{bare}` is a loopback, private or link-local address \
                     (allow it with SUNDIAL_ALLOW_TARGETS)"
                ));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use sundial::admin::TargetCheck;

    use super::placeholder::LiteralTargets;

    #[tokio::test]
    async fn literal_private_targets_are_refused_unless_allowed() {
        let guard = LiteralTargets::new(&["127.0.0.1/32".to_string()]);
        for refused in [
            "http://10.0.0.1/x",
            "http://169.254.169.254/latest",
            "http://[::1]:8080/",
            "http://localhost/",
            "http://0.0.0.0/",
            "http://192.168.1.1/",
        ] {
            assert!(guard.check(refused).await.is_err(), "{refused}");
        }
        for allowed in ["http://127.0.0.1:9000/hook", "https://example.com/"] {
            assert!(guard.check(allowed).await.is_ok(), "{allowed}");
        }
    }
}
