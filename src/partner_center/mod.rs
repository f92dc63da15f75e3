//! The client module: Entra ID sign-in, Microsoft Graph and Partner Center REST. Shares no types with `emulator`.

// ApiError carries every field a user or a support ticket needs (codes, three IDs); it is built only
// on the failure path, so its size does not matter and boxing it would only obscure the API.
#![allow(clippy::result_large_err)]

pub mod errors;
pub mod http;

pub use errors::{ApiError, ErrorKind, Service};
pub use http::{HttpClient, RetryPolicy, WaitNotice, WaitReason};
pub mod auth;
pub use auth::{
    DeviceCode, PollEvent, SignInClient, TokenResponse, browser_sign_in, client_credentials,
    device_code_poll, device_code_start, graph_sign_in_scopes, refresh,
};
pub mod graph;
pub use graph::{
    Application, DirectoryObject, Graph, LifetimePolicy, Me, Membership, NewPassword, Organization,
    PasswordCredential, ServicePrincipal, VerifiedDomain,
};
pub mod api;
pub use api::{OrganizationProfile, PartnerCenter};
pub mod verify;
pub use verify::{VerifyError, VerifyEvent, VerifyOptions, verify_secret};
