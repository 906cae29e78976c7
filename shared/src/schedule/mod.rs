//! Schedule expressions (cron, rate, at, macros) and their evaluation in a time zone.
