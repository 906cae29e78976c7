//! The learned rate of a flow nobody set a rate for. Concurrency limits
//! (see [`super::aimd`]) cannot hold a fast target to a rate: at 2 ms a
//! request, ten in flight is 5,000 a second. So when a flow answers 429,
//! Sundial learns what the target admits and paces the flow at that rate,
//! the way it paces a flow with an operator's rate (the scanner's slots,
//! re-slotted late messages, retries and held messages all use it):
//!
//! * a 429 after calm starts an *episode*: the learned rate becomes
//!   [`SHARE`] of the requests the target admitted (answered, not 429) in
//!   the busier of the current and the previous wall-clock second, over
//!   all processors (each adds its own on its sync) — if it admitted at
//!   least [`MIN_ADMITTED`]: a 429 among a handful of requests says more
//!   about one endpoint than about the target's rate, and the shared
//!   backoff alone answers it;
//! * for [`EPISODE`] after that, later syncs may only raise it (the other
//!   processors' admissions arrive with their syncs); a 429 after the
//!   episode starts the next one;
//! * after [`GROW_AFTER`] without a 429, each second in which the flow
//!   used at least [`DEMAND`] of its rate adds [`GROWTH`] of it (at least
//!   one request per second), so a target that can take more gets it;
//! * [`FORGET_AFTER`] without a 429 drops it: the flow is unlimited again.
//!
//! The arithmetic runs in the processors' sync statement
//! (`store::sync_flows`), under the flow's row lock, so any number of
//! processors share one learned rate.

use std::time::Duration;

/// The learned rate, as a share of what the target admitted.
pub const SHARE: f64 = 0.9;
/// How long after its first 429 an episode takes the others' admissions in.
pub const EPISODE: Duration = Duration::from_secs(1);
/// Calm before the learned rate starts to grow.
pub const GROW_AFTER: Duration = Duration::from_secs(5);
/// A second counts for growth when the flow used this share of its rate.
pub const DEMAND: f64 = 0.8;
/// Growth per calm, busy second, as a share of the rate (at least 1/s).
pub const GROWTH: f64 = 0.05;
/// Admissions (in the busier second) below which a 429 teaches no rate.
pub const MIN_ADMITTED: i64 = 5;
/// Calm after which the learned rate is dropped.
pub const FORGET_AFTER: Duration = Duration::from_secs(60);
