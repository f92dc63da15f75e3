//! The onboarding core: the plan (each step's call and the role it needs, checked against the
//! account before the first write), the session it runs in, its execution and key rotation.
//! No prompts, no printing, no clap: people are told things through an [`Observer`].
//!
//! - `session`: one sign-in and Graph client, and the first round of reads (account, roles, CSP
//!   check, policy).
//! - `plan`: the ordered steps for a way in, what each needs (microsoft-apis.md §3.0), the check.
//! - `execute`: runs a plan: the web app, its service principal, AdminAgents, then the key.
//! - `keys`: adding a key without ever losing a working secret (rotation and crash recovery).

pub mod execute;
pub mod keys;
pub mod plan;
pub mod session;

pub use keys::{Engine, Outcome, Retired, Retirement};
pub use plan::{Account, Lifetime, Plan, PolicyState, Roles, Step, Way};
pub use session::{Session, SignIn};

/// How the core reports what it does, and the one question it may ask mid-run. The terminal
/// implements it (`src/wizard`); a batch passes a quiet one.
pub trait Observer: Send + Sync {
    /// A finished step.
    fn done(&self, msg: &str);
    fn info(&self, msg: &str);
    fn warn(&self, msg: &str);
    /// A wait that shows its progress until dropped.
    fn progress(&self, msg: &str) -> Box<dyn Progress + Send + Sync + '_>;
    /// Partner Center refuses an app whose secret authenticates: the admin may register it in
    /// App management now. True: verify again.
    fn check_registration_again(&self, app_id: &str) -> anyhow::Result<bool>;
    /// Graph refused a key of `refused_days` and the policy's limit is unknown: a shorter
    /// lifetime in days to try, or `None` (then the run stops, naming `--secret-days`).
    fn shorter_lifetime(&self, refused_days: i64) -> anyhow::Result<Option<i64>>;
}

/// A running wait (a spinner on a terminal); finished when dropped.
pub trait Progress {
    fn set(&self, msg: String);
}

/// Partner Center › Account settings › App management, where an Admin agent adds a web app and
/// its keys with Partner Center's own rights.
pub const APP_MANAGEMENT: &str = "Partner Center › Account settings › App management";
