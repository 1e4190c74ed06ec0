//! Store implementations backed by AWS services.

#[cfg(feature = "dynamodb")]
pub mod dynamodb;
