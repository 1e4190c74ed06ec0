//! Shared helpers of the integration and end-to-end tests: API Gateway events built from the
//! fixtures that `sam local generate-event` produced, clients for the local stack, and its
//! mailbox (the local SES).

pub mod accounts;
pub mod contract;
pub mod events;
pub mod mailbox;
pub mod stack;
