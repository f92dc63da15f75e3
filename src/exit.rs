//! The exit-code contract of product.md, and the one user-facing error type that carries a code and a next step.

use std::fmt;

/// Process exit codes. Stable across versions: scripts and monitors depend on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Success = 0,
    Failure = 1,
    Usage = 2,
    SignIn = 3,
    Permission = 4,
    Policy = 5,
    Keychain = 6,
    Verify = 7,
    NotFound = 8,
    Unreachable = 9,
    Expiring = 10,
    Expired = 11,
    Interrupted = 130,
}

impl Exit {
    pub fn code(self) -> i32 {
        self as i32
    }

    /// The stable machine name used in `--json` error documents.
    pub fn name(self) -> &'static str {
        match self {
            Exit::Success => "success",
            Exit::Failure => "failure",
            Exit::Usage => "usage",
            Exit::SignIn => "sign_in",
            Exit::Permission => "permission_denied",
            Exit::Policy => "tenant_policy",
            Exit::Keychain => "keychain_unavailable",
            Exit::Verify => "not_verified",
            Exit::NotFound => "not_found",
            Exit::Unreachable => "unreachable",
            Exit::Expiring => "expiring",
            Exit::Expired => "expired_or_rejected",
            Exit::Interrupted => "interrupted",
        }
    }
}

/// An error meant for the person at the terminal: what went wrong, the next step, and the exit code.
/// Other typed errors (API, store) are translated into this in one place (`report`).
#[derive(Debug)]
pub struct UserError {
    pub exit: Exit,
    pub message: String,
    pub hint: Option<String>,
}

impl UserError {
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        UserError {
            exit,
            message: message.into(),
            hint: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn usage(message: impl Into<String>) -> Self {
        UserError::new(Exit::Usage, message)
    }

    /// A value that a prompt would ask for, missing in non-interactive mode.
    pub fn missing(what: &str, flag: &str) -> Self {
        UserError::usage(format!("{what} is required in non-interactive mode"))
            .hint(format!("pass {flag}"))
    }
}

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for UserError {}
