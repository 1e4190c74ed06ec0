//! Shared helpers of the integration and end-to-end tests: API Gateway events built from the
//! fixtures that `sam local generate-event` produced, and clients for the local stack.

pub mod contract;
pub mod events;
pub mod stack;
