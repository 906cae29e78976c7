//! In-process queue (stub; filled in next).
