//! Where onboarded profiles live: secrets in the OS keychain (or the explicit file store), metadata in JSON.
//!
//! # Layout
//!
//! - **Metadata** (IDs, key ID, hint, expiry, pending rotation; never a secret) is one JSON file per
//!   profile: `<data_dir>/profiles/<profile>.json`, mode 0600 in a 0700 directory, written atomically
//!   (temp file + fsync + rename). `list` and `show` read it without unlocking anything.
//! - **Secrets** live only in a [`SecretBackend`]:
//!   - `keychain` (default): the OS keychain through keyring-core 1.1. One item per profile and slot:
//!     service `csp-onboard`, user/account `<profile>` for the current secret and
//!     `<profile>#pending` for a new secret saved right after `addPassword`, before it is verified
//!     (so a crash never loses it). `#` cannot occur in a profile name, so the two never collide.
//!     - Linux (Secret Service: gnome-keyring, KWallet, KeePassXC): the item goes in the default
//!       (login) collection with attributes `service=csp-onboard` and `username=<profile>` and the
//!       label `csp-onboard client secret (<profile>)` (`… pending client secret …` for the pending
//!       slot), which is what Seahorse ("Passwords and Keys") shows. Check it with
//!       `secret-tool lookup service csp-onboard username <profile>` (prints the secret) or
//!       `secret-tool search service csp-onboard username <profile>` (prints label and attributes;
//!       add `--unlock` if the collection is locked). The pending item is
//!       `username '<profile>#pending'`.
//!     - macOS: a generic password in the login keychain, service `csp-onboard`, account `<profile>`
//!       (`security find-generic-password -s csp-onboard -a <profile>`).
//!     - Windows: a generic credential in Credential Manager with target `<profile>.csp-onboard`.
//!   - `file` (`--store file`, or the emulator cloud when the keychain is unavailable):
//!     `<data_dir>/secrets/<profile>.secret` and `<profile>#pending.secret`, mode 0600 in a 0700
//!     directory, written atomically. Used only when asked for; never a silent fallback for a real cloud.
//!
//! Keychain calls block (D-Bus round trips, OS prompts), so [`Secrets`] runs them on tokio's blocking
//! pool and the async runtime never stalls.

mod file;
mod fsutil;
mod keychain;
mod meta;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::cloud::Cloud;
use crate::exit::{Exit, UserError};
use crate::secret::Secret;

pub use file::FileBackend;
pub use keychain::{KeychainBackend, SERVICE, keychain_account};
pub use meta::{
    BoundEndpoints, MetaStore, PendingRotation, Profile, RetiringKey, validate_profile_name,
};

/// Environment variable that overrides the data directory (tests, portable installs).
pub const ENV_DATA_DIR: &str = "CSP_ONBOARD_DATA_DIR";

/// The directory holding profile metadata (and the file store's secrets):
/// `$CSP_ONBOARD_DATA_DIR`, else the platform data dir + `csp-onboard`
/// (Linux: `$XDG_DATA_HOME/csp-onboard` or `~/.local/share/csp-onboard`;
/// macOS: `~/Library/Application Support/csp-onboard`; Windows: `%APPDATA%\csp-onboard`).
/// Created with mode 0700 when missing. An existing directory's mode is left alone: it may be
/// one the user chose on purpose; the subdirectories we own are forced to 0700.
pub fn data_dir() -> anyhow::Result<PathBuf> {
    let dir = match std::env::var_os(ENV_DATA_DIR).filter(|v| !v.is_empty()) {
        Some(v) => std::path::absolute(PathBuf::from(v))
            .with_context(|| format!("cannot resolve {ENV_DATA_DIR}"))?,
        None => dirs::data_dir()
            .context(
                "cannot find a data directory for this user; set CSP_ONBOARD_DATA_DIR to a directory",
            )?
            .join("csp-onboard"),
    };
    fsutil::create_private_dir(&dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    fsutil::refuse_shared_dir(&dir)?;
    Ok(dir)
}

/// THE writer of every file this program keeps: missing parent directories are created 0700,
/// then the file is replaced atomically through a 0600 temp file with a random name opened with
/// `O_EXCL` (so a planted symlink is never followed), synced, and renamed over `path`.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fsutil::create_private_dir(dir)?;
    }
    fsutil::write_atomic(path, bytes)
}

/// Create a directory of the data directory (0700), tightening one an older version made wider.
pub fn ensure_private_dir(dir: &Path) -> std::io::Result<()> {
    fsutil::ensure_owner_only_dir(dir)
}

/// Where secrets go (`--store`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    Keychain,
    File,
}

impl StoreKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StoreKind::Keychain => "keychain",
            StoreKind::File => "file",
        }
    }
}

impl std::fmt::Display for StoreKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for StoreKind {
    type Err = UserError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "keychain" => Ok(StoreKind::Keychain),
            "file" => Ok(StoreKind::File),
            other => Err(UserError::usage(format!("unknown store {other:?}"))
                .hint("use --store keychain (the OS keychain) or --store file (a 0600 file)")),
        }
    }
}

/// Which of a profile's two secrets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// The verified secret in use.
    Current,
    /// A new secret saved right after `addPassword`, before verification, so a crash never loses it.
    Pending,
}

impl Slot {
    pub fn as_str(self) -> &'static str {
        match self {
            Slot::Current => "current",
            Slot::Pending => "pending",
        }
    }
}

/// Why the secret store could not be used. Messages carry names and reasons, never a secret value.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No D-Bus session bus (headless Linux, SSH, CI).
    #[error("no D-Bus session bus: {0}")]
    NoSessionBus(String),
    /// A session bus exists but nothing provides the Secret Service on it.
    #[error("no Secret Service provider on the session bus: {0}")]
    NoProvider(String),
    /// The keychain / collection is locked and could not be unlocked (prompt dismissed or impossible).
    #[error("the keychain is locked: {0}")]
    Locked(String),
    /// The Secret Service has no default (login) collection to write to.
    #[error("the Secret Service has no default collection: {0}")]
    NoCollection(String),
    /// The platform store refuses the operation (e.g. a value over its size limit).
    #[error("the keychain does not support this: {0}")]
    Unsupported(String),
    /// File store I/O (path and OS error).
    #[error("{0}")]
    Io(String),
    /// Anything else the platform store reported.
    #[error("keychain error: {0}")]
    Other(String),
}

impl StoreError {
    /// The reason in a few words, without the platform's detail (for notices).
    pub fn short(&self) -> &'static str {
        match self {
            StoreError::NoSessionBus(_) => "no D-Bus session bus",
            StoreError::NoProvider(_) => "no Secret Service on the session bus",
            StoreError::Locked(_) => "the keychain is locked",
            StoreError::NoCollection(_) => "no default keychain collection",
            StoreError::Unsupported(_) => "the keychain refused the operation",
            StoreError::Io(_) => "an I/O error",
            StoreError::Other(_) => "a keychain error",
        }
    }

    /// The message for the person at the terminal: what went wrong, the next step, exit code 6.
    pub fn to_user_error(&self) -> UserError {
        let file_alt = "or pass --store file to keep the secret in a 0600 file instead";
        let (message, fix) = self.message_and_fix();
        let hint = match (self, fix) {
            (StoreError::Io(_), Some(fix)) => fix,
            (_, Some(fix)) => format!("{fix}, {file_alt}"),
            (_, None) => file_alt.trim_start_matches("or ").to_string(),
        };
        UserError::new(Exit::Keychain, message).hint(hint)
    }

    /// The same for a profile whose secret is already in the keychain: the secret is there, so
    /// the way out is to make the keychain readable, not another store (which that profile
    /// refuses, and which would not hold its secret).
    pub fn to_user_error_for_stored(&self, profile: &str) -> UserError {
        let (message, fix) = self.message_and_fix();
        UserError::new(
            Exit::Keychain,
            format!("profile '{profile}' keeps its secret in the keychain, which cannot be read now: {message}"),
        )
        .hint(
            fix.unwrap_or_else(|| "make the keychain usable again".to_string())
                + "; the secret stays in the keychain and nothing was changed",
        )
    }

    /// What went wrong, and how to make the keychain itself work (no other store offered).
    fn message_and_fix(&self) -> (String, Option<String>) {
        let unlock = "unlock the login keyring (in a desktop session: Seahorse / \"Passwords and Keys\"; \
                      headless: `printf '%s' \"$PASSWORD\" | gnome-keyring-daemon --unlock`), then run again";
        match self {
            StoreError::NoSessionBus(r) => (
                format!("the keychain is unavailable: no D-Bus session bus ({r})"),
                Some(
                    "start a desktop session, or run under `dbus-run-session` with gnome-keyring \
                     unlocked (`printf '%s' \"$PASSWORD\" | gnome-keyring-daemon --unlock`)"
                        .to_string(),
                ),
            ),
            StoreError::NoProvider(r) => (
                format!("the keychain is unavailable: no Secret Service on the session bus ({r})"),
                Some(
                    "install and start gnome-keyring (or KeePassXC with Secret Service enabled)"
                        .to_string(),
                ),
            ),
            StoreError::Locked(r) => (
                format!("the keychain is locked ({r})"),
                Some(unlock.to_string()),
            ),
            StoreError::NoCollection(r) => (
                format!("the keychain has no default (login) collection ({r})"),
                Some(
                    "create one: in a desktop session open Seahorse / \"Passwords and Keys\"; headless: \
                     `printf '%s' \"$PASSWORD\" | gnome-keyring-daemon --unlock` creates and unlocks \"login\""
                        .to_string(),
                ),
            ),
            StoreError::Unsupported(r) => (format!("the keychain refused the operation ({r})"), None),
            StoreError::Io(r) => (
                format!("the secret store failed: {r}"),
                Some(
                    "check the permissions and free space of the data directory (CSP_ONBOARD_DATA_DIR)"
                        .to_string(),
                ),
            ),
            StoreError::Other(r) => (
                format!("the keychain failed ({r})"),
                Some(
                    "check that the keychain works (e.g. `secret-tool search --all service csp-onboard`)"
                        .to_string(),
                ),
            ),
        }
    }
}

impl From<StoreError> for UserError {
    fn from(e: StoreError) -> Self {
        e.to_user_error()
    }
}

/// One place secrets are kept. Implementations block; use [`Secrets`] from async code.
pub trait SecretBackend: Send + Sync {
    fn kind(&self) -> StoreKind;
    /// `Ok(None)` when the profile has no secret in that slot.
    fn get(&self, profile: &str, slot: Slot) -> Result<Option<Secret>, StoreError>;
    /// Creates or replaces the slot's secret; a reader sees the old or the new value, never a mix.
    fn set(&self, profile: &str, slot: Slot, secret: &Secret) -> Result<(), StoreError>;
    /// `Ok(false)` when there was nothing to delete.
    fn delete(&self, profile: &str, slot: Slot) -> Result<bool, StoreError>;
    /// Where the current secret of `profile` lives, for humans (messages, `show`).
    fn describe(&self, profile: &str) -> String;
}

/// Async face of a [`SecretBackend`]: every call runs on tokio's blocking pool.
#[derive(Clone)]
pub struct Secrets {
    inner: Arc<dyn SecretBackend>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("kind", &self.inner.kind())
            .finish_non_exhaustive()
    }
}

impl Secrets {
    /// Wrap any backend (tests pass a [`KeychainBackend`] over `keyring_core::mock::Store`).
    pub fn new(backend: Arc<dyn SecretBackend>) -> Self {
        Secrets { inner: backend }
    }

    /// The blocking backend, for synchronous callers.
    pub fn backend(&self) -> &Arc<dyn SecretBackend> {
        &self.inner
    }

    pub fn kind(&self) -> StoreKind {
        self.inner.kind()
    }

    pub fn describe(&self, profile: &str) -> String {
        self.inner.describe(profile)
    }

    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn SecretBackend) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(inner.as_ref()))
            .await
            .map_err(|e| StoreError::Other(format!("the keychain call did not finish: {e}")))?
    }

    pub async fn get(&self, profile: &str, slot: Slot) -> Result<Option<Secret>, StoreError> {
        let profile = profile.to_string();
        self.run(move |b| b.get(&profile, slot)).await
    }

    pub async fn set(&self, profile: &str, slot: Slot, secret: &Secret) -> Result<(), StoreError> {
        let profile = profile.to_string();
        let secret = secret.clone();
        self.run(move |b| b.set(&profile, slot, &secret)).await
    }

    pub async fn delete(&self, profile: &str, slot: Slot) -> Result<bool, StoreError> {
        let profile = profile.to_string();
        self.run(move |b| b.delete(&profile, slot)).await
    }
}

/// Open the secret store the user asked for.
///
/// `Keychain`: connects to the OS keychain and probes it (default collection present and unlocked on
/// Linux; a lookup of a missing item elsewhere) so "unavailable" or "locked" is reported before any
/// secret is created. If it is unusable and `cloud` is the emulator, the file store is used instead
/// and a notice for the user is returned; for every other cloud the error is returned (exit 6 via
/// [`StoreError::to_user_error`]). No silent fallback.
///
/// Blocking (D-Bus, possibly an unlock prompt): call it from `spawn_blocking` or before the
/// runtime is busy; see [`open_secrets_async`].
pub fn open_secrets(
    kind: StoreKind,
    cloud: Cloud,
) -> Result<(Secrets, Option<String>), StoreError> {
    open_secrets_or_fall_back(kind, cloud == Cloud::Emulator)
}

fn open_secrets_or_fall_back(
    kind: StoreKind,
    fall_back: bool,
) -> Result<(Secrets, Option<String>), StoreError> {
    match kind {
        StoreKind::File => Ok((Secrets::new(Arc::new(open_file_backend()?)), None)),
        StoreKind::Keychain => match KeychainBackend::open_platform() {
            Ok(k) => Ok((Secrets::new(Arc::new(k)), None)),
            Err(e) if fall_back => {
                let file = open_file_backend()?;
                let notice = format!(
                    "keychain unavailable ({}); the emulator's fake secrets go to the file store at {}",
                    e.short(),
                    file.dir().display()
                );
                Ok((Secrets::new(Arc::new(file)), Some(notice)))
            }
            Err(e) => Err(e),
        },
    }
}

/// [`open_secrets`] on tokio's blocking pool. `holds_secret`: a stored profile keeps its secret
/// in `kind`, so the emulator's fallback would only hide it (and then move the profile).
pub async fn open_secrets_async(
    kind: StoreKind,
    cloud: Cloud,
    holds_secret: bool,
) -> Result<(Secrets, Option<String>), StoreError> {
    let fall_back = cloud == Cloud::Emulator && !holds_secret;
    tokio::task::spawn_blocking(move || open_secrets_or_fall_back(kind, fall_back))
        .await
        .map_err(|e| StoreError::Other(format!("opening the keychain did not finish: {e}")))?
}

fn open_file_backend() -> Result<FileBackend, StoreError> {
    let dir = data_dir().map_err(|e| StoreError::Io(format!("{e:#}")))?;
    FileBackend::open(&dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_kind_parses_and_serializes_lowercase() {
        assert_eq!(
            "keychain".parse::<StoreKind>().unwrap(),
            StoreKind::Keychain
        );
        assert_eq!("FILE".parse::<StoreKind>().unwrap(), StoreKind::File);
        let err = "vault".parse::<StoreKind>().unwrap_err();
        assert_eq!(err.exit, Exit::Usage);
        assert_eq!(serde_json::to_string(&StoreKind::File).unwrap(), "\"file\"");
        assert_eq!(StoreKind::Keychain.to_string(), "keychain");
    }

    #[test]
    fn every_store_error_is_exit_6_with_a_next_step() {
        let all = [
            StoreError::NoSessionBus("x".into()),
            StoreError::NoProvider("x".into()),
            StoreError::Locked("x".into()),
            StoreError::NoCollection("x".into()),
            StoreError::Unsupported("x".into()),
            StoreError::Io("x".into()),
            StoreError::Other("x".into()),
        ];
        for e in all {
            let u = e.to_user_error();
            assert_eq!(u.exit, Exit::Keychain, "{e:?}");
            let hint = u.hint.unwrap_or_default();
            assert!(!hint.is_empty(), "{e:?} has no next step");
        }
        let bus = StoreError::NoSessionBus("no socket".into()).to_user_error();
        assert!(
            bus.message.contains("no D-Bus session bus"),
            "{}",
            bus.message
        );
        let hint = bus.hint.unwrap_or_default();
        assert!(
            hint.contains("dbus-run-session") && hint.contains("--store file"),
            "{hint}"
        );
        let locked = StoreError::Locked("prompt dismissed".into()).to_user_error();
        assert!(
            locked
                .hint
                .unwrap_or_default()
                .contains("gnome-keyring-daemon --unlock")
        );
    }

    #[test]
    fn a_profile_whose_secret_is_in_the_keychain_is_never_sent_to_another_store() {
        for e in [
            StoreError::Locked("x".into()),
            StoreError::NoSessionBus("x".into()),
            StoreError::Unsupported("x".into()),
        ] {
            let u = e.to_user_error_for_stored("p");
            assert_eq!(u.exit, Exit::Keychain);
            assert!(
                u.message
                    .contains("profile 'p' keeps its secret in the keychain")
            );
            let hint = u.hint.unwrap_or_default();
            assert!(!hint.contains("--store"), "{e:?}: {hint}");
        }
    }

    #[tokio::test]
    async fn async_wrappers_round_trip_through_the_blocking_pool() {
        let dir = tempfile::tempdir().unwrap();
        let secrets = Secrets::new(Arc::new(FileBackend::open(dir.path()).unwrap()));
        assert_eq!(secrets.kind(), StoreKind::File);
        assert_eq!(secrets.get("p", Slot::Current).await.unwrap(), None);
        secrets
            .set("p", Slot::Current, &Secret::new("s3cr3t"))
            .await
            .unwrap();
        let got = secrets.get("p", Slot::Current).await.unwrap().unwrap();
        assert_eq!(got.expose(), "s3cr3t");
        assert!(secrets.delete("p", Slot::Current).await.unwrap());
        assert!(!secrets.delete("p", Slot::Current).await.unwrap());
        assert!(!format!("{secrets:?}").contains("s3cr3t"));
    }
}
