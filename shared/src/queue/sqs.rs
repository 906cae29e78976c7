//! SQS adapter (stub; filled in next).
