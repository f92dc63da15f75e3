//! csp-onboard as a library: the client, the emulator, the store and the commands behind the binary.

pub mod cli;
pub mod cloud;
pub mod commands;
pub mod emulator;
pub mod exit;
pub mod input;
pub mod onboarding;
pub mod partner_center;
pub mod report;
pub mod secret;
pub mod signin;
pub mod store;
pub mod ui;
pub mod usage;
pub mod wizard;
