//! The page shell (head, navigation, logout) and the formatting every
//! page shares: instants in UTC and in a task's zone, ages, durations,
//! a task's state as a badge. Everything goes through maud, which escapes
//! all text; nothing here builds HTML by hand.

use chrono::{DateTime, Utc};
use maud::{html, Markup, DOCTYPE};

use super::assets;
use super::auth::Session;
use crate::schedule::parse_zone;
use crate::task::Task;

/// Which part of the console a page belongs to (highlighted in the
/// navigation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Overview,
    Tasks,
    Flows,
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="referrer" content="same-origin";
            title { (title) " · Sundial" }
            link rel="stylesheet" href=(assets::stylesheet_path());
        }
    }
}

/// A page behind the login: navigation, the logout form, then `body`.
pub fn page(title: &str, section: Section, session: &Session, body: Markup) -> Markup {
    let link = |href: &str, label: &str, this: Section| {
        html! {
            a href=(href) aria-current=[(section == this).then_some("page")] { (label) }
        }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header.top {
                    a.brand href="/ui" { "Sundial" }
                    nav {
                        (link("/ui", "Overview", Section::Overview))
                        (link("/ui/tasks", "Tasks", Section::Tasks))
                        (link("/ui/flows", "Flows", Section::Flows))
                    }
                    form.logout method="post" action="/ui/logout" {
                        (csrf_field(session))
                        button.link type="submit" { "Log out" }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// A page outside the login (login, errors, IAM mode).
pub fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body.bare { (body) }
        }
    }
}

/// The hidden CSRF field every state-changing form carries.
pub fn csrf_field(session: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf); }
}

/// A notice after a form.
pub fn notice(text: Option<&str>) -> Markup {
    html! { @if let Some(text) = text { p.notice role="status" { (text) } } }
}

/// `2026-12-01 09:00:00 UTC`.
pub fn utc(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// The instant in `zone` (`2026-12-01 10:00:00 CET`); UTC when the zone
/// cannot be read.
pub fn in_zone(t: DateTime<Utc>, zone: &str) -> String {
    match parse_zone(zone) {
        Ok(tz) => t
            .with_timezone(&tz)
            .format("%Y-%m-%d %H:%M:%S %Z")
            .to_string(),
        Err(_) => utc(t),
    }
}

/// `3 min ago`, `in 2 h`, `now`.
pub fn relative(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (t - now).num_seconds();
    let span = duration_words(secs.unsigned_abs());
    match secs {
        -1..=1 => "now".to_string(),
        s if s < 0 => format!("{span} ago"),
        _ => format!("in {span}"),
    }
}

/// `42 s`, `5 min`, `3 h`, `2 d`.
pub fn duration_words(secs: u64) -> String {
    match secs {
        0..=119 => format!("{secs} s"),
        120..=7199 => format!("{} min", secs / 60),
        7200..=172_799 => format!("{} h", secs / 3600),
        _ => format!("{} d", secs / 86_400),
    }
}

/// Milliseconds, or a dash when there is no figure.
pub fn ms(v: Option<f64>) -> String {
    match v {
        Some(v) if v >= 10_000.0 => format!("{:.1} s", v / 1000.0),
        Some(v) => format!("{v:.0} ms"),
        None => "–".to_string(),
    }
}

/// What state a task is in, as operators say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    /// Enabled, last run fine (or none yet).
    Enabled,
    /// Enabled, and the last occurrence failed.
    Failing,
    /// Paused by someone (or by auto-pause).
    Paused,
    /// Disabled because its schedule or zone cannot be evaluated.
    Invalid,
    /// Disabled by Sundial or SQL otherwise (one-shot done, window over).
    Disabled,
}

impl TaskState {
    pub fn of(task: &Task) -> TaskState {
        match (task.enabled, task.consecutive_failures > 0) {
            (true, true) => TaskState::Failing,
            (true, false) => TaskState::Enabled,
            (false, _) if task.schedule_error.is_some() => TaskState::Invalid,
            (false, _) if task.alerting.paused_at.is_some() => TaskState::Paused,
            (false, _) => TaskState::Disabled,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            TaskState::Enabled => "enabled",
            TaskState::Failing => "failing",
            TaskState::Paused => "paused",
            TaskState::Invalid => "invalid",
            TaskState::Disabled => "disabled",
        }
    }
}

/// A task's state as a badge.
pub fn state_badge(task: &Task) -> Markup {
    let state = TaskState::of(task);
    html! { span class={ "badge " (state.label()) } { (state.label()) } }
}

/// A run's status as a badge.
pub fn status_badge(status: &str) -> Markup {
    let class = match status {
        "succeeded" => "ok",
        "failed" | "timed_out" => "bad",
        _ => "muted",
    };
    html! { span class={ "badge " (class) } { (status) } }
}

/// The next run of a task in its zone and in UTC.
pub fn next_run(task: &Task, now: DateTime<Utc>) -> Markup {
    html! {
        @match task.next_run_at {
            Some(next) if task.enabled => {
                span.when { (in_zone(next, &task.timezone)) }
                br;
                small { (utc(next)) " · " (relative(next, now)) }
            }
            _ => span.muted { "–" },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_read_in_their_zone() {
        let t = DateTime::parse_from_rfc3339("2026-12-01T09:00:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(utc(t), "2026-12-01 09:00:00 UTC");
        assert_eq!(in_zone(t, "Europe/Paris"), "2026-12-01 10:00:00 CET");
        assert_eq!(in_zone(t, "Not/AZone"), "2026-12-01 09:00:00 UTC");
        assert_eq!(relative(t, t + chrono::Duration::minutes(5)), "5 min ago");
        assert_eq!(relative(t + chrono::Duration::hours(3), t), "in 3 h");
    }
}
