//! One module per command, each holding its propose, apply and on-applied halves. Today: the
//! apply half of writes.

pub mod write;
