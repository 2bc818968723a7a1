//! The commands: one file each, thin, dependencies passed in.

pub mod args;
pub mod login;
pub mod serve;
pub mod token;
