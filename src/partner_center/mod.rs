//! The client module: Entra ID sign-in, Microsoft Graph and Partner Center REST. Shares no types with `emulator`.

pub mod errors;
pub mod http;

pub use errors::{ApiError, ErrorKind, Service};
pub use http::{HttpClient, RetryPolicy, WaitNotice, WaitReason};
