//! The client module: Entra ID sign-in, Microsoft Graph and Partner Center REST. Shares no types with `emulator`.
//!
//! - `http`: the one HTTP client and retry policy (Retry-After, backoff, replication-aware retries).
//! - `errors`: `ApiError` and the one translation into a message, a next step and an exit code.
//! - `auth`: device code, browser (PKCE) and client-credentials sign-in.
//! - `graph`: the Graph calls that create the web app, its service principal and its secrets.
//! - `api`: Partner Center REST.
//! - `verify`: proving a new secret works, through Entra's propagation delay.
//! - `billing`: Graph's partner billing export (usage and costs), App-only.

// ApiError carries every field a user or a support ticket needs (codes, three IDs); it is built only
// on the failure path, so its size does not matter and boxing it would only obscure the API.
#![allow(clippy::result_large_err)]

pub mod api;
pub mod auth;
pub mod billing;
pub mod errors;
pub mod graph;
pub mod http;
pub mod verify;

pub use api::PartnerCenter;
pub use auth::{
    DeviceCode, PollEvent, SignInClient, TokenResponse, browser_sign_in, client_credentials,
    device_code_poll, device_code_start, graph_sign_in_scopes,
};
pub use errors::{ApiError, ErrorKind, Service};
pub use graph::{
    Application, DirectoryObject, Graph, LifetimePolicy, Membership, Organization,
    PasswordCredential,
};
pub use http::{HttpClient, RetryPolicy, WaitReason};
pub use verify::{APP_MANAGEMENT_URL, VerifyError, VerifyEvent, VerifyOptions, verify_secret};

/// The Global Administrator directory role template (microsoft-apis.md §3, role check).
pub const GLOBAL_ADMIN_ROLE_TEMPLATE: &str = "62e90394-69f5-4237-9190-012177145e10";
/// The group whose members are Admin agents, and which the web app's service principal joins.
pub const ADMIN_AGENTS_GROUP: &str = "AdminAgents";
