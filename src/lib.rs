//! csp-onboard as a library: the client, the emulator, the store and the commands behind the binary.

pub mod cloud;
pub mod emulator;
pub mod exit;
pub mod partner_center;
pub mod secret;
pub mod store;
pub mod cli;
pub mod commands;
pub mod report;
pub mod rotation;
pub mod signin;
pub mod ui;
